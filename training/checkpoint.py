"""Checkpoints: what a run saves and how weights are loaded back, including the authors' state dicts.

A checkpoint is a dict of tensors and plain values that loads with ``torch.load(weights_only=True)``: model,
optimiser, scheduler, step, samples seen, RNG states, the full config, the model's arguments and the label
store's provenance. Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rat.shared.datasets import DatasetDef, definition_from_text, load_dataset
from rat.shared.errors import load_failure, one_line, unsafe_pickle
from rat.training.config import TrainConfig, TrainError, model_overrides
from rat.training.model.registry import build_network, make_model, model_names

CHECKPOINT_FORMAT = "rat-train/1"


def rng_state() -> dict[str, Any]:
    """torch, CUDA, numpy and python RNG states as tensors and plain lists (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(state), py_gauss]}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    return path


_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net")


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file with ``weights_only=True`` onto the CPU.

    A checkpoint of this trainer comes back as saved (a model folder of `rat-train export` is loaded by
    :func:`rat.training.model_folder.load_model_source`). A bare state dict (the authors' public
    code saves ``model.module.state_dict()``; BasicSR-style ``{"params": ...}`` wrappers too) comes back as
    ``{"model": state_dict, "bare": True}``, with any DDP ``module.`` prefix removed.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors of every kind
        unsafe = unsafe_pickle(err)
        if unsafe:
            raise TrainError(f"{path}: {unsafe}") from None
        raise TrainError(f"{path}: not a loadable checkpoint ({load_failure(err)})") from None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return dict(obj)
    if isinstance(obj, Mapping) and not _tensor_dict(obj):
        obj = next((obj[k] for k in _WRAPPER_KEYS if _tensor_dict(obj.get(k))), obj)
    if not _tensor_dict(obj):
        raise TrainError(f"{path}: neither a rat-train checkpoint nor a model state dict")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return {"model": state, "bare": True}


def model_args(cfg: TrainConfig, channels: int) -> dict[str, Any]:
    """What rebuilds the model of a run: its registered name, channels, parameters (``overrides``) and the
    model's provenance (package, version, class)."""
    overrides = model_overrides(cfg)
    return {"name": cfg.model, "img_channel": channels, "overrides": overrides,
            "provenance": make_model(cfg.model, overrides).provenance()}


def installed_model(args: Mapping[str, Any], source: str | Path = "the checkpoint") -> str:
    """The registered name of a checkpoint's model (``model_args``); TrainError naming ``source`` (the file),
    the model, its class and package when no installed package registers it."""
    name = args["name"]
    if name not in model_names():
        prov = args.get("provenance") or {}
        origin = " ".join(str(prov[k]) for k in ("package", "version") if prov.get(k)) or "an unknown package"
        raise TrainError(f"{source}: its model {name!r} ({prov.get('class', '?')} from {origin}) is not "
                         "installed here: install that package (`rat-train models` lists those that are)")
    return name


def model_from_checkpoint(ck: Mapping[str, Any], *, name: str = "rat", attention: str | None = None,
                          backend: str = "auto", source: str | Path = "the checkpoint") -> nn.Module:
    """Rebuild and load the model of a checkpoint (strict). A run's checkpoint names its own model; a
    bare state dict is loaded into ``name`` with the channels and width read from its first conv."""
    state = ck["model"]
    if ck.get("bare"):
        if "intro.weight" not in state:
            raise TrainError("state dict has no 'intro.weight': not a RAT model")
        width, channels = state["intro.weight"].shape[:2]
        args = {"name": name, "img_channel": int(channels),
                "overrides": {"width": int(width), "attention": attention or "rmsa"}}
    else:
        args = ck["model_args"]
        if attention is not None and attention != args["overrides"].get("attention"):
            raise TrainError(f"checkpoint was trained with attention {args['overrides'].get('attention')}, "
                             f"not {attention}")
    model = build_network(installed_model(args, source), args["img_channel"], args["overrides"],
                          runtime={"backend": backend})
    return load_weights(model, state, f"model {args['name']!r} ({args['img_channel']} channels)")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> nn.Module:
    """Strict ``load_state_dict`` whose failure is one line naming ``source`` and the first mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()  # the first line only says "Error(s) in loading state_dict"
        detail = one_line(" ".join(lines[1:2] or lines))
        raise TrainError(f"{source}: weights do not fit the model: {detail}") from None
    return model


def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and values, in name order): the same for a
    training checkpoint and the model folder exported from it."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def checkpoint_dataset(ck: Mapping[str, Any]) -> DatasetDef | None:
    """The dataset definition a run was trained on (its text travels in the checkpoint), else None."""
    data = ck.get("data") or {}
    if data.get("definition"):
        recorded = data.get("definition_sha256")
        if recorded and hashlib.sha256(data["definition"].encode("utf-8")).hexdigest() != recorded:
            raise TrainError(f"the dataset definition in the checkpoint ({data.get('dataset')}) does not "
                             "match its recorded SHA-256 (its text was edited)")
        return definition_from_text(data["definition"], f"checkpoint (definition {data.get('dataset')})")
    config = ck.get("config") or {}
    return load_dataset(config["dataset"]) if config.get("dataset") else None
