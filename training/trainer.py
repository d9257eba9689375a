"""Training RAT, top to bottom: config, setup, model, optimiser, learning rate, loop, eval, checkpoints.

    cfg = TrainConfig(masks="store.zarr", dataset="aapm", root="/data/aapm", out="runs/aapm")
    summary = train(cfg)                  # or: torchrun --nproc_per_node 4 $(which rat-train) ...

Optimisation as in the paper and the authors' public code: Adam (betas 0.5, 0.999), lr 2e-4
cosine-annealed to 1e-6 over ``iters`` (200,000) steps, batch 8, focal region loss (gamma 1e-3,
delta 1). Patches come from :class:`rat.training.data.PatchDataset`, which is deterministic in
(seed, sample index): step s of a run always sees samples s * batch * world .. (s + 1) * batch *
world - 1 (rank r takes every world-th from r), so a resumed run continues exactly where it stopped.

A run directory holds ``last.pt`` (every ``save_every`` steps and at the end), ``best.pt`` (best
validation PSNR), ``config.json``, ``metrics.jsonl`` (or ``metrics.csv``), ``curves.png`` and,
when TensorBoard is installed, ``tb/``. A checkpoint is a dict of tensors and plain values (loads
with ``torch.load(weights_only=True)``): model, optimiser, scheduler, step, samples seen, RNG
states, the full config, the model's arguments and the label store's provenance.

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (NCCL on
CUDA, gloo on CPU); rank 0 writes logs and checkpoints, validation is shared out over the ranks.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

CHECKPOINT_FORMAT = "rat-train/1"
LAST, BEST = "last.pt", "best.pt"


class TrainError(RuntimeError):
    """A one-line problem with a training run's set-up (bad option, run directory, checkpoint)."""


# ----------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Every setting of a run; the defaults here are the only ones (the CLI passes what the user set)."""

    # data
    masks: str = ""  # label store (with optional image cache): path, .zip or fsspec URL
    dataset: str = ""  # builtin dataset name or path to a definition .toml
    root: str = ""  # data root the dataset's paths are relative to
    out: str = "runs/rat"  # run directory
    index: str | None = None  # per-image index (default: where `rat-precompute manifest` writes it)
    group: str | None = None  # required when the dataset has several groups
    patch_size: int | None = None  # default: the group's patch_size
    val_split: str = "test"  # the split validated on whole images
    val_limit: int | None = None  # validate on the first N images of val_split (by id); None: all
    # model
    model: str = "rat"  # rat (the paper's) or rat-small (CPU demos)
    width: int | None = None  # override the model's width (channels of the first level)
    attention: str = "rmsa"  # rmsa | wmsa | msa (Table 4 ablations)
    backend: str = "auto"  # region attention kernel: auto | dense | sparse | flex (same results)
    init: str | None = None  # start from these weights (a run's checkpoint or the authors' state dict)
    # loss
    loss: str = "fr"  # fr (focal region) | l1
    gamma: float = 1e-3
    delta: float = 1.0
    # optimisation
    iters: int = 200_000
    batch_size: int = 8  # per process
    lr: float = 2e-4
    min_lr: float = 1e-6
    beta1: float = 0.5
    beta2: float = 0.999
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    seed: int = 0
    # system
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 4  # DataLoader worker processes per rank (spawned)
    # logging, validation, checkpoints
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 1000
    tile: int = 512  # validation: tile edge for whole-image inference
    overlap: int = 32  # validation: overlap of neighbouring tiles
    metrics_format: str = "jsonl"  # jsonl | csv
    progress: bool = True
    resume: bool = False  # continue from <out>/last.pt (start fresh when there is none)
    stop_at: int | None = None  # save and stop after this step (time-limited jobs); continue with resume


#: Settings that may differ when a run is resumed (they do not change what is computed).
RUNTIME_KEYS = frozenset({"masks", "root", "index", "out", "device", "workers", "log_every", "eval_every",
                          "save_every", "val_limit", "tile", "overlap", "progress", "resume", "backend",
                          "metrics_format", "stop_at"})
#: Settings of one session only, never taken over from the run being resumed.
SESSION_KEYS = frozenset({"resume", "stop_at"})
CHOICES = {"attention": ("rmsa", "wmsa", "msa"), "loss": ("fr", "l1"), "precision": ("auto", "bf16", "fp32"),
           "device": ("auto", "cpu", "cuda"), "metrics_format": ("jsonl", "csv"),
           "backend": ("auto", "dense", "sparse", "flex")}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values that would otherwise fail deep inside the run; returns cfg."""
    for key in ("masks", "dataset", "root"):
        if not getattr(cfg, key):
            raise TrainError(f"--{key} is required")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise TrainError(f"--{key.replace('_', '-')}: {getattr(cfg, key)!r} is not one of {allowed}")
    for key in ("iters", "batch_size", "log_every", "eval_every", "save_every", "tile"):
        if getattr(cfg, key) < 1:
            raise TrainError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(cfg, key)}")
    if not 0 <= cfg.overlap < cfg.tile:
        raise TrainError(f"--overlap: must be in 0..tile-1, got {cfg.overlap}")
    if cfg.workers < 0 or cfg.grad_clip < 0:
        raise TrainError("--workers and --grad-clip must be >= 0")
    return cfg


def make_config(overrides: Mapping[str, Any]) -> TrainConfig:
    """The config of a run from the settings the user gave.

    A fresh run: the defaults updated by ``overrides``. With ``resume`` and a checkpoint in the run
    directory: the checkpoint's config (less :data:`SESSION_KEYS`), updated by the overrides that may
    change on resume (:data:`RUNTIME_KEYS`); overriding any other setting with another value is refused.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TrainError(f"unknown setting {unknown[0]!r}")
    cfg = TrainConfig(**overrides)
    last = Path(cfg.out) / LAST
    if not cfg.resume or not last.is_file():
        return validate(cfg)
    saved = load_checkpoint(last)
    if saved.get("bare"):
        raise TrainError(f"{last}: not a checkpoint of this trainer")
    base = {k: v for k, v in saved["config"].items() if k in known and k not in SESSION_KEYS}
    clash = [f"--{k.replace('_', '-')} {v!r} (run has {base.get(k)!r})" for k, v in overrides.items()
             if k not in RUNTIME_KEYS and base.get(k) != v]
    if clash:
        raise TrainError(f"{last}: cannot resume with other settings: {', '.join(clash)}; "
                         "start a new --out instead")
    return validate(TrainConfig(**{**base, **{k: v for k, v in overrides.items() if k in RUNTIME_KEYS}}))


# ----------------------------------------------------------------------------- learning rate


def lr_at(step: int, lr: float, min_lr: float, iters: int) -> float:
    """Cosine annealing from ``lr`` at step 0 to ``min_lr`` at step ``iters`` (CosineAnnealingLR's closed
    form, stepped once per iteration as in the authors' code)."""
    if step >= iters:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * step / iters))


# ----------------------------------------------------------------------------- distributed set-up


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank and world size (1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Runtime:
    """Pick the device; under torchrun (WORLD_SIZE > 1) join the process group (NCCL/gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise TrainError("--device cuda: CUDA is not available on this machine")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # validation of big test sets runs between collectives: allow it time
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Runtime(rank, world, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- checkpoints


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
    """Load a checkpoint with ``weights_only=True`` onto the CPU.

    A checkpoint of this trainer comes back as saved. A bare state dict (the authors' public code
    saves ``model.module.state_dict()``; BasicSR-style ``{"params": ...}`` wrappers too) comes back as
    ``{"model": state_dict, "bare": True}``, with any DDP ``module.`` prefix removed.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors of every kind
        reason = " ".join(str(err).split())[:200]
        raise TrainError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {reason})") from None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return dict(obj)
    if isinstance(obj, Mapping) and not _tensor_dict(obj):
        obj = next((obj[k] for k in _WRAPPER_KEYS if _tensor_dict(obj.get(k))), obj)
    if not _tensor_dict(obj):
        raise TrainError(f"{path}: neither a rat-train checkpoint nor a model state dict")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return {"model": state, "bare": True}


def model_args(cfg: TrainConfig, channels: int) -> dict[str, Any]:
    """What rebuilds the model of a run: builder name, channels and keyword overrides."""
    overrides: dict[str, Any] = {"attention": cfg.attention}
    if cfg.width is not None:
        overrides["width"] = cfg.width
    return {"name": cfg.model, "img_channel": channels, "overrides": overrides}


def model_from_checkpoint(ck: Mapping[str, Any], *, name: str = "rat", attention: str | None = None,
                          backend: str = "auto") -> nn.Module:
    """Rebuild and load the model of a checkpoint (strict). A run's checkpoint names its own model; a
    bare state dict is loaded into ``name`` with the channels and width read from its first conv."""
    from rat.training.model import build_model

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
    model = build_model(args["name"], args["img_channel"], backend=backend, **args["overrides"])
    return load_weights(model, state, f"model {args['name']!r} ({args['img_channel']} channels)")


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> nn.Module:
    """Strict ``load_state_dict`` whose failure is one line naming ``source`` and the first mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [" ".join(x.split()) for x in str(err).strip().splitlines()]
        detail = (" ".join(lines[1:2]) if len(lines) > 1 else lines[0])[:240]
        raise TrainError(f"{source}: weights do not fit the model: {detail}") from None
    return model


# ----------------------------------------------------------------------------- metrics log


class MetricsLog:
    """Records of a run ({"step", "kind": "train"|"val", ...}) as JSON lines or CSV, and TensorBoard."""

    COLUMNS = ("step", "kind", "loss", "lr", "it_s", "psnr", "ssim", "lq_psnr", "lq_ssim", "elapsed")

    def __init__(self, out: Path, fmt: str = "jsonl", tensorboard: bool = True) -> None:
        self.path = out / f"metrics.{fmt}"
        self.fmt = fmt
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: pip install rat[tensorboard]
                pass
            else:
                self.tb = SummaryWriter(str(out / "tb"))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8", newline="") as fh:
            if self.fmt == "jsonl":
                return [json.loads(line) for line in fh if line.strip()]
            return [{k: (v if k == "kind" else _number(v)) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(fh)]

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop records after ``step`` (a resumed run rewrites them); returns the kept ones."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.unlink(missing_ok=True)
        for r in kept:
            self._write(r)
        return kept

    def _write(self, record: Mapping[str, Any]) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            if self.fmt == "jsonl":
                fh.write(json.dumps(record) + "\n")
            else:
                writer = csv.DictWriter(fh, fieldnames=self.COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow({k: record.get(k, "") for k in self.COLUMNS})

    def append(self, record: Mapping[str, Any]) -> None:
        self._write(record)
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def plot_curves(records: list[Mapping[str, Any]], path: str | Path) -> Path:
    """PNG of the training loss and the validation PSNR against the step."""
    from matplotlib.figure import Figure

    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_psnr = fig.subplots(1, 2)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log" if train else "linear",
                title="loss")
    if val:
        ax_psnr.plot([r["step"] for r in val], [r["psnr"] for r in val], "o-", label="restored")
        ax_psnr.axhline(val[-1]["lq_psnr"], color="grey", ls="--", label="LQ input")
        ax_psnr.legend()
    ax_psnr.set(xlabel="step", ylabel="PSNR (dB)", title="validation")
    for ax in (ax_loss, ax_psnr):
        ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100)
    return Path(path)


# ----------------------------------------------------------------------------- the run


def pick_group(ds, name: str | None):
    """The dataset group to train on: ``name``, or the only one."""
    if name is None:
        if len(ds.groups) > 1:
            raise TrainError(f"dataset {ds.name} has groups {', '.join(sorted(ds.groups))}: pass --group")
        return next(iter(ds.groups.values()))
    if name not in ds.groups:
        raise TrainError(f"--group {name}: not a group of {ds.name} ({', '.join(sorted(ds.groups))})")
    return ds.groups[name]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes.

    Returns {"step", "best_psnr", "val" (last validation summary), "out", "model" (the trained module)}.

    Raises TrainError / StoreError / ValueError with one-line reasons (StoreError lists every problem
    of the store) before the first step when the set-up is wrong.
    """
    validate(cfg)
    rt = setup(cfg.device)
    try:
        return _run(cfg, rt)
    finally:
        teardown()


def _say(rt: Runtime, text: str) -> None:
    if rt.main:
        from tqdm import tqdm

        tqdm.write(text)


def _run(cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    from tqdm import tqdm

    from rat.shared.manifest import load_dataset, load_index
    from rat.shared.store import open_store, provenance
    from rat.training.data import PatchDataset, check_store, make_loader
    from rat.training.evaluate import evaluate
    from rat.training.loss import focal_region_loss
    from rat.training.model import build_model

    out = Path(cfg.out)
    # -- checkpoint to continue from
    last = out / LAST
    resume = load_checkpoint(last) if cfg.resume and last.is_file() else None
    if last.is_file() and not cfg.resume:
        raise TrainError(f"{out}: already holds a run ({LAST}); pass --resume to continue it, "
                         "or choose another --out")

    # -- data: the group's train and validation images, checked against the store before anything runs
    ds = load_dataset(cfg.dataset)
    group = pick_group(ds, cfg.group)
    entries = [e for e in load_index(ds, cfg.root, cfg.index) if e.group == group.name]
    train_entries = [e for e in entries if e.split == "train"]
    val_entries = sorted((e for e in entries if e.split == cfg.val_split), key=lambda e: e.id)
    val_entries = val_entries[: cfg.val_limit] if cfg.val_limit is not None else val_entries
    if not train_entries:
        raise TrainError(f"{ds.name}/{group.name}: no training images in the index")
    store = open_store(cfg.masks)
    prov = provenance(store)
    if prov.get("dataset") != ds.name:
        raise TrainError(f"{cfg.masks}: label maps of dataset {prov.get('dataset')!r}, not {ds.name!r}")
    check_store(store, train_entries + val_entries)
    if resume is not None and resume["provenance"].get("fingerprint") != prov.get("fingerprint"):
        raise TrainError(f"{cfg.masks}: not the label store this run was trained on (other provenance "
                         "fingerprint); resume with the original store")

    # -- model and optimiser
    torch.manual_seed(cfg.seed)
    args = model_args(cfg, group.channels)
    model = build_model(args["name"], args["img_channel"], backend=cfg.backend, **args["overrides"])
    if cfg.init and resume is None:
        load_weights(model, load_checkpoint(cfg.init)["model"], cfg.init)
        _say(rt, f"initialised from {cfg.init}")
    model.to(rt.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    step, samples, best = 0, 0, -math.inf
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        step, samples, best = resume["step"], resume["samples"], resume["best_psnr"]
        set_rng_state(resume["rng"])
        if resume["world_size"] != rt.world:
            _say(rt, f"note: resuming on {rt.world} processes instead of {resume['world_size']}: "
                 "the same samples, shared out differently")
        _say(rt, f"resuming {out} at step {step}")
    raw = model
    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device] if rt.device.type == "cuda"
                                                    else None)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and rt.device.type == "cuda")
    amp = torch.bfloat16 if bf16 else None
    gamma = cfg.gamma if cfg.loss == "fr" else 0.0

    # -- logging
    log = None
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
        log = MetricsLog(out, cfg.metrics_format)
        history = log.truncate(step)
        if log.tb is None and step == 0:
            _say(rt, f"metrics: {log.path} (TensorBoard not installed)")

    def checkpoint(path: Path, val: dict[str, Any] | None) -> None:
        save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT, "step": step, "samples": samples, "world_size": rt.world,
            "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "cosine", "lr": cfg.lr, "min_lr": cfg.min_lr, "iters": cfg.iters,
                          "next_lr": lr_at(step, cfg.lr, cfg.min_lr, cfg.iters)},
            "config": asdict(cfg), "model_args": args, "provenance": prov, "rng": rng_state(),
            "best_psnr": best, "val": val or {}})

    def validation() -> dict[str, Any] | None:
        """Whole-image validation shared out over the ranks; every rank gets the summary."""
        from rat.training.evaluate import summarise

        if not val_entries:
            return None
        mine = evaluate(raw, val_entries[rt.rank :: rt.world], cfg.root, store, group, cfg.tile, cfg.overlap,
                        autocast=amp)
        if rt.world > 1:
            parts: list[Any] = [None] * rt.world
            dist.all_gather_object(parts, mine)
            mine = [s for part in parts for s in part]
        s = summarise(mine)
        return {"psnr": s["restored"]["psnr"], "ssim": s["restored"]["ssim"],
                "lq_psnr": s["lq"]["psnr"], "lq_ssim": s["lq"]["ssim"], "images": len(mine)}

    # -- data stream: sample n of this rank is dataset index samples + rank + world * n
    patch = PatchDataset(cfg.masks, train_entries, group, root=cfg.root, patch_size=cfg.patch_size,
                         seed=cfg.seed)
    loader = make_loader(patch, cfg.batch_size, cfg.workers, start=samples, rank=rt.rank, world_size=rt.world)
    if not all(patch.cached):
        missing = len(patch.cached) - sum(patch.cached)
        _say(rt, f"note: {missing} of {len(patch.cached)} training images have no image cache, so every "
             "patch decodes the whole source files (slow for large images); add it with "
             "`rat-precompute cache`")
    batches = iter(loader)

    # -- the loop
    bar = tqdm(total=cfg.iters, initial=step, desc="train", unit="it", disable=not (rt.main and cfg.progress),
               dynamic_ncols=True, mininterval=1.0)
    model.train()
    loss_sum, loss_n = torch.zeros((), device=rt.device), 0
    t0, t_log, step_log = time.perf_counter(), time.perf_counter(), step
    val: dict[str, Any] | None = (resume["val"] or None) if resume is not None else None
    while step < cfg.iters:
        batch = next(batches)
        lq = batch["lq"].to(rt.device, non_blocking=True)  # (B, C, P, P)
        hq = batch["hq"].to(rt.device, non_blocking=True)
        labels = batch["labels"].to(rt.device, non_blocking=True)  # (B, P, P)
        lr = lr_at(step, cfg.lr, cfg.min_lr, cfg.iters)
        for pg in optimizer.param_groups:
            pg["lr"] = lr
        with torch.autocast(rt.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = model(lq, labels if cfg.attention == "rmsa" else None)
        loss = focal_region_loss(pred.float(), hq, labels, gamma=gamma, delta=cfg.delta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        samples += cfg.batch_size * rt.world
        loss_sum += loss.detach()
        loss_n += 1
        bar.update()

        if step % cfg.log_every == 0 or step == cfg.iters:
            if rt.world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= rt.world
            mean = float(loss_sum) / loss_n
            now = time.perf_counter()
            rate = (step - step_log) / max(now - t_log, 1e-9)
            if rt.main:
                record = {"step": step, "kind": "train", "loss": mean, "lr": lr, "it_s": rate,
                          "elapsed": now - t0}
                log.append(record)
                history.append(record)
                bar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.3g}", refresh=False)
            loss_sum.zero_()
            loss_n, t_log, step_log = 0, now, step

        if step % cfg.eval_every == 0 or step == cfg.iters:
            val = validation()
            if rt.main and val is not None:
                record = {"step": step, "kind": "val", **val, "elapsed": time.perf_counter() - t0}
                log.append(record)
                history.append(record)
                _say(rt, f"step {step}: val PSNR {val['psnr']:.4f} dB, SSIM {val['ssim']:.4f} "
                     f"(LQ {val['lq_psnr']:.4f} / {val['lq_ssim']:.4f})")
            if val is not None and val["psnr"] > best:
                best = val["psnr"]
                if rt.main:
                    checkpoint(out / BEST, val)
            if rt.main:
                plot_curves(history, out / "curves.png")

        stop = cfg.stop_at is not None and step >= cfg.stop_at
        if step % cfg.save_every == 0 or step == cfg.iters or stop:
            if rt.main:
                checkpoint(out / LAST, val)
            _barrier(rt)
        if stop:
            _say(rt, f"stopped at step {step} (--stop-at); continue with --resume")
            break
    bar.close()
    if rt.main:
        plot_curves(history, out / "curves.png")
        log.close()
    return {"step": step, "best_psnr": best, "val": val, "out": str(out), "model": raw}
