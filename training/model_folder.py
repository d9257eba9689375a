"""A trained model as a folder to share: ``model.safetensors``, ``config.json``, a ``README.md`` model card.

``model.safetensors`` holds the model's weights only; ``config.json`` everything needed to use them (model
arguments, attention, channels, normalisation and data range, the dataset definition and group, the region
generator's provenance and SAM window, the training recipe, the final metrics); the model card says the
same for people. Every command that loads a model (`restore`, `eval`, `rat-train --init`) accepts the folder
in place of a checkpoint, and loading it never unpickles anything (safetensors and JSON only).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rat.shared import DISTRIBUTION
from rat.training.checkpoint import checkpoint_dataset, installed_model, load_checkpoint, weights_sha256
from rat.training.config import TrainError
from rat.training.model.registry import make_model
from rat.training.selection import Selection, recorded

MODEL_FORMAT = "rat-model/1"
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
#: Training settings that make the recipe (the rest are run-time settings).
RECIPE = ("model", "model_params", "width", "attention", "loss", "gamma", "delta", "iters", "batch_size",
          "lr", "min_lr", "beta1", "beta2", "grad_clip", "precision", "seed", "patch_size", "val_split")


def export_model(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the model folder of a rat-train checkpoint (see the module doc); returns the folder.

    The folder is written under a temporary name and renamed when complete.
    """
    ck = load_checkpoint(checkpoint)
    if ck.get("bare") or "model_args" not in ck:
        raise TrainError(f"{checkpoint}: export needs a rat-train checkpoint (a bare state dict does not say "
                         "what data it was trained on)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise TrainError(f"{out}: exists; pass `overwrite` to replace it")
    ds = checkpoint_dataset(ck)
    name = (ck.get("data") or {}).get("group") or ck["config"].get("group")
    group = ds.groups[name] if name else next(iter(ds.groups.values()))
    prov = ck.get("provenance") or {}
    state = {k: v.contiguous() for k, v in ck["model"].items()}
    args = ck["model_args"]
    config = {
        "format": MODEL_FORMAT,
        "weights_sha256": weights_sha256(state),
        "model_args": args,
        "attention": args["overrides"].get("attention", "rmsa"),
        "uses_labels": bool(make_model(installed_model(args, checkpoint), args["overrides"]).uses_labels),
        "channels": group.channels,
        "modality": group.modality,
        "normalisation": {"norm_low": group.norm_low, "norm_high": group.norm_high,
                          "data_range": group.data_range},
        "dataset": ds.name, "group": group.name,
        "generator": prov.get("generator"), "sam_window": (prov.get("windows") or {}).get(group.name),
        "store_fingerprint": prov.get("fingerprint"),
        "training": {**{k: ck["config"].get(k) for k in RECIPE}, "steps": ck.get("step"),
                     "world_size": ck.get("world_size")},
        "metrics": {"last_validation": ck.get("val") or {}},
        "selection": recorded(ck),
        "data": {k: v for k, v in (ck.get("data") or {}).items() if k != "definition"},
        "definition": ds.text,
        "provenance": {k: v for k, v in prov.items() if k != "definition"},
        "config": ck["config"],
        "step": ck.get("step"),
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": MODEL_FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / CARD).write_text(model_card(config, Path(checkpoint).name), encoding="utf-8")
        # safetensors writes its file readable by the owner only: give every file the mode a new file gets
        # under the umask (the folder's, made by mkdir, less execute), so colleagues can read a shared model
        mode = tmp.stat().st_mode & 0o666
        for name in (WEIGHTS, CONFIG, CARD):
            os.chmod(tmp / name, mode)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_model_source(path: str | Path) -> dict[str, Any]:
    """The weights and settings of a model folder, a rat-train checkpoint or a bare state dict, in the form
    of a checkpoint (:func:`rat.training.checkpoint.load_checkpoint`; folders never unpickle anything)."""
    return load_model_folder(path) if Path(path).is_dir() else load_checkpoint(path)


def load_model_folder(folder: str | Path) -> dict[str, Any]:
    """A model folder in the form of a checkpoint (model, model_args, config, provenance, data, ...);
    TrainError naming the folder when it is not one."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        state = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as err:
        raise TrainError(f"{folder}: not a model folder of `rat-train export` ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]})") from None
    if config.get("format") != MODEL_FORMAT:
        raise TrainError(f"{folder}: {CONFIG} is not a {MODEL_FORMAT} model description")
    return {"format": MODEL_FORMAT, "exported": True, "model": state, "model_args": config["model_args"],
            "config": config["config"], "provenance": config["provenance"], "step": config["step"],
            "val": config["metrics"]["last_validation"],
            "data": {**config["data"], "definition": config["definition"]},
            "selection": recorded({**config, "best_psnr": config["metrics"].get("best_psnr")})}


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _architecture(model_args: Mapping[str, Any]) -> tuple[str, str, Any]:
    """(title, a sentence naming the network and its package, its parameters) for the model card."""
    model = model_args.get("provenance") or {}
    params = model.get("params") or model_args.get("overrides")
    if model and model.get("package") not in (DISTRIBUTION, "rat"):
        what = (f"A `{model['name']}` network (architecture `{model.get('class')}` of the package "
                f"`{model.get('package')}` {model.get('version')}, trained from random weights with rat)")
        return model["name"], what, params
    return "RAT", "A Region Attention Transformer (RAT, MICCAI 2024, arXiv 2407.09268)", params


def model_card(config: Mapping[str, Any], source: str) -> str:
    """The README.md of a model folder: what it restores, its data, metrics, how to run it, its limits."""
    t, m, n = config["training"], config["metrics"], config["normalisation"]
    gen = config.get("generator") or {}
    val = m.get("last_validation") or {}
    chosen = recorded({**config, "best_psnr": m.get("best_psnr")})
    selected = chosen["split"]
    biased = ("" if selected != "test" else " The checkpoint was selected on the test split (the authors' "
              "practice): scores on the test split are biased upwards; report a model selected on `val`.")
    data = config.get("data") or {}
    sam = (f" ({gen.get('name')} {gen.get('model_type')}, checkpoint SHA-256 "
           f"`{gen.get('checkpoint_sha256')}`)" if "checkpoint_sha256" in gen else "")
    title, what, params = _architecture(config["model_args"])
    lines = [
        f"# {title}: {config['dataset']} / {config['group']}",
        "",
        f"{what} that restores low-quality "
        f"{config['modality']} images ({config['channels']} channel(s)) of the kind in dataset "
        f"`{config['dataset']}`, group `{config['group']}`, exported from `{source}` after {config['step']} "
        "training steps.",
        "",
        "## Inputs and regions",
        "",
        f"- Intensities in source units, normalised by the linear map {n['norm_low']} -> 0, "
        f"{n['norm_high']} -> 1; outputs clipped to that range. Metrics: data range {n['data_range']}.",
        f"- Network parameters: `{json.dumps(params, default=str)}`; it "
        + ("takes the region label maps." if config.get("uses_labels", True) else "takes no label maps (the "
           "regions below weighted its training loss only)."),
        f"- Attention: `{config['attention']}`. Region label maps from the `{gen.get('name')}` "
        f"generator{sam}, input window `{config.get('sam_window')}`; `rat-train restore` computes them the "
        "same way.",
        "",
        "## Training data",
        "",
        f"- Dataset definition `{config['dataset']}` (SHA-256 `{data.get('definition_sha256')}`), group "
        f"`{config['group']}`: {data.get('train', '?')} training images, {data.get('val', '?')} validation "
        "images.",
        f"- Label store fingerprint `{config.get('store_fingerprint')}`.",
        f"- Recipe: {t.get('model')} model, {t.get('loss')} loss (gamma {t.get('gamma')}, delta "
        f"{t.get('delta')}), Adam lr {t.get('lr')} -> {t.get('min_lr')} over {t.get('iters')} steps, batch "
        f"{t.get('batch_size')} x {t.get('world_size')} process(es), patch "
        f"{t.get('patch_size') or 'the group default'}, seed {t.get('seed')}.",
        "",
        f"## Metrics ({selected} split, whole images)",
        "",
        "| | PSNR (dB) | SSIM |",
        "|---|---|---|",
        f"| LQ input | {_fmt(val.get('lq_psnr'))} | {_fmt(val.get('lq_ssim'))} |",
        f"| this model | {_fmt(val.get('psnr'))} | {_fmt(val.get('ssim'))} |",
        "",
        f"best.pt was chosen by the {selected} split's {Selection(chosen['metric']).label}: "
        f"{Selection(chosen['metric']).describe(chosen['value'])} at step {chosen['step']}, over "
        f"{val.get('images', '?')} image(s).",
        "",
        "## Use",
        "",
        "Needs the `rat-restore` distribution (`pip install rat-restore`; import package `rat`), which "
        "installs the `rat-train` command:",
        "",
        "```bash",
        "rat-train restore --checkpoint THIS_FOLDER --out restored/ scan.dcm series_folder/ volume.nii.gz",
        "rat-train restore --checkpoint THIS_FOLDER --out restored/ --masks STORE   # a dataset split",
        "```",
        "",
        f"Weights: `{WEIGHTS}` (SHA-256 of the weights `{config['weights_sha256']}`); settings: `{CONFIG}`.",
        "",
        "## Limits",
        "",
        "For research use only: not a medical device, not for diagnosis or treatment. The model was trained "
        "and validated on the data above only; on scans of other scanners, protocols, doses or stains it may "
        "fail silently. Compare its outputs with the inputs before relying on them." + biased,
        "",
    ]
    return "\n".join(lines)
