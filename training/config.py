"""The settings of a training run: one dataclass, its checks, and the settings of a resumed run.

Every default lives in :class:`TrainConfig` and nowhere else; each field carries its help text, from which
`rat-train` builds one option per field (passing on only what the user set). Torch-free: `rat-train --help`
imports this module. The run folder that holds a run's settings is :mod:`rat.training.run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rat.shared.devices import DEVICES
from rat.shared.errors import ParamError, RatError
from rat.training.choices import (
    ATTENTIONS,
    BACKENDS,
    COMPILE,
    FR_NORMS,
    LOSSES,
    MEMORY_POLICIES,
    METRICS_FORMATS,
    OVERLAP,
    PRECISIONS,
    TILE,
    VAL_SPLITS,
)
from rat.training.model.registry import accepted, make_model, model_class, model_names
from rat.training.selection import METRICS as SELECTIONS


class TrainError(RatError, RuntimeError):
    """A one-line problem with a training run's set-up (run directory, checkpoint, data)."""


class DeviceFault(TrainError):
    """The GPU failed during training (a CUDA error: the process cannot use the device any more)."""

    exit_status = 4


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a run; the defaults here are the only ones (the CLI passes what the user set)."""

    # data
    masks: str = _setting("", "Label store made by `rat-precompute masks` (directory, .zip or fsspec URL); "
                              "it names the dataset, its index and groups.")
    dataset: str | None = _setting(None, "Dataset name or definition .toml (default: the store's; needed for "
                                         "schema-1 stores).")
    root: str | None = _setting(None, "Data root (default: $RAT_DATA_ROOT/<dataset>, the definition's root, "
                                      "or the store's if it exists here).")
    out: str = _setting("runs/rat", "Run directory: checkpoints, metrics, curves.")
    index: str | None = _setting(None, "Per-image index file to use instead of the store's (default: the "
                                       "store's index, else <root>/.rat/<name>.csv, built when missing).")
    cache: str | None = _setting(None, "Local image cache folder (default: $RAT_CACHE_DIR, else "
                                       "~/.cache/rat); filled on first use.")
    no_cache: bool = _setting(False, "Decode the source files for every patch instead of using the image "
                                     "cache (slow for large images).")
    group: str | None = _setting(None, "Image group to train on (required when the dataset has several).")
    patch_size: int | None = _setting(None, "Training patch edge in pixels (default: the group's).")
    val_split: str = _setting("val", "Split validated on whole images; it chooses best.pt. `test` reproduces "
                                     "the authors' practice (biased upwards: a warning says so).")
    select: str = _setting("psnr", "Validation metric that chooses best.pt (higher is better): psnr or ssim.")
    val_limit: int | None = _setting(None, "Validate on the first N images of the split (by id); default all")
    # model
    model: str = _setting("rat", "Model: rat (the paper's), rat-small (CPU demos), a baseline (`rat-train "
                                 "models` lists them) or a plug-in's.")
    model_params: dict = field(default_factory=dict, metadata={
        "help": "Parameters of the model (its own names), e.g. embed_dim=60 or depths=[2,2]; values are read "
                "as JSON where they parse."})
    width: int | None = _setting(None, "Override the model's width (channels of its first level).")
    attention: str = _setting("rmsa", "Attention of the latent layers: rmsa (region), or the wmsa/msa "
                                      "ablations.")
    backend: str = _setting("auto", "Region attention kernel (all give the same result): auto, dense, "
                                    "sparse, flex.")
    init: str | None = _setting(None, "Start from these weights: a rat-train checkpoint, a model folder of "
                                      "`rat-train export`, or a bare state dict (the authors' code).")
    memory: str = _setting("selective", "What a step stores for backward: selective (recompute the cheap "
                                        "blocks, keep attention), full (recompute all) or none.")
    # loss
    loss: str = _setting("fr", "Loss: fr (focal region) or l1.")
    gamma: float = _setting(1e-3, "Focal region loss gamma (weight of the worst regions).")
    delta: float = _setting(1.0, "Focal region loss delta (exponent of the region error).")
    fr_norm: str = _setting("image", "Focal region loss: region weights divided by the largest of each image "
                                     "(the paper) or of the batch (the authors' public code).")
    # optimisation
    iters: int = _setting(200_000, "Training steps (the cosine schedule spans them).")
    batch_size: int = _setting(8, "Patches per step and process.")
    lr: float = _setting(2e-4, "Initial learning rate (Adam).")
    min_lr: float = _setting(1e-6, "Final learning rate of the cosine schedule.")
    beta1: float = _setting(0.5, "Adam beta1.")
    beta2: float = _setting(0.999, "Adam beta2.")
    grad_clip: float = _setting(0.0, "Clip the gradient norm to this value (0: off).")
    precision: str = _setting("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32.")
    compile: str = _setting("auto", "Compile the network's blocks with torch.compile (the same results, "
                                    "faster; the first steps compile): auto (on CUDA), on or off.")
    seed: int = _setting(0, "Seed of the model initialisation and of the patch stream.")
    # system
    device: str = _setting("auto", "auto, cpu or cuda.")
    workers: int | None = _setting(None, "DataLoader worker processes per process (default: up to 4, no more "
                                         "than the process's share of the cores).")
    dist_timeout: float = _setting(120.0, "Under torchrun: minutes a rank waits for the others in a "
                                          "collective before it fails (a rank that hangs, a machine lost; "
                                          "when a rank dies, torchrun stops the others at once).")
    # logging, validation, checkpoints
    log_every: int = _setting(50, "Log the mean training loss every N steps.")
    eval_every: int = _setting(1000, "Validate on whole images every N steps (and keep the best checkpoint).")
    save_every: int = _setting(1000, "Write <out>/last.pt every N steps.")
    tile: int = _setting(TILE, "Tile edge for whole-image inference.")
    overlap: int = _setting(OVERLAP, "Overlap of neighbouring tiles.")
    metrics_format: str = _setting("jsonl", "Metrics file: jsonl or csv.")
    progress: bool = _setting(True, "Show a progress bar.")
    resume: bool = _setting(False, "Continue the run in --out from its last.pt, exactly where it stopped "
                                   "(fresh in a folder without checkpoints; refused where other checkpoints "
                                   "but no last.pt are).")
    overwrite: bool = _setting(False, "Start a new run in --out although it holds one: its checkpoints are "
                                      "deleted and its metrics rewritten.")
    stop_at: int | None = _setting(None, "Save and stop after this step (time-limited jobs); continue later "
                                         "with --resume.")


#: Allowed values of the settings that have a fixed set.
CHOICES: dict[str, tuple[str, ...]] = {
    "attention": ATTENTIONS, "backend": BACKENDS, "memory": MEMORY_POLICIES,
    "loss": LOSSES, "fr_norm": FR_NORMS,
    "precision": PRECISIONS, "compile": COMPILE, "device": DEVICES, "metrics_format": METRICS_FORMATS,
    "val_split": VAL_SPLITS, "select": tuple(SELECTIONS),
}
#: Settings that may differ when a run is resumed (they do not change what is computed).
RUNTIME_KEYS = frozenset({"masks", "root", "index", "out", "device", "workers", "dist_timeout", "log_every",
                          "eval_every",
                          "save_every", "val_limit", "tile", "overlap", "progress", "resume", "backend",
                          "metrics_format", "stop_at", "cache", "no_cache", "memory", "compile", "overwrite"})
#: Settings of one session only, never taken over from the run being resumed.
SESSION_KEYS = frozenset({"resume", "stop_at", "overwrite"})
_AT_LEAST_ONE = ("iters", "batch_size", "log_every", "eval_every", "save_every", "tile")


def help_text(name: str) -> str:
    """The help of setting ``name`` (the one source of the CLI's help)."""
    return next(f for f in fields(TrainConfig) if f.name == name).metadata["help"]


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values that would otherwise fail deep inside the run (ParamError naming the setting)."""
    if not cfg.masks:
        raise ParamError("masks", "is required (the label store)")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ParamError(key, f"{getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    if cfg.model not in model_names():
        raise ParamError("model", f"{cfg.model!r} is not one of {', '.join(model_names())}")
    make_model(cfg.model, model_overrides(cfg))  # its parameters checked before any data is read
    for key in _AT_LEAST_ONE:
        if getattr(cfg, key) < 1:
            raise ParamError(key, f"must be >= 1, got {getattr(cfg, key)}")
    if not 0 <= cfg.overlap < cfg.tile:
        raise ParamError("overlap", f"must be in 0..tile-1, got {cfg.overlap}")
    if cfg.dist_timeout <= 0:
        raise ParamError("dist_timeout", f"must be > 0 minutes, got {cfg.dist_timeout}")
    for key in ("workers", "grad_clip"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 0:
            raise ParamError(key, f"must be >= 0, got {getattr(cfg, key)}")
    return cfg


#: Trainer settings a model gets when its class takes them (RAT's), and their defaults.
MODEL_SETTINGS = {"attention": "rmsa", "width": None}


def model_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The parameters the run builds its model with: the trainer settings its class takes (RAT: attention,
    width) and ``model_params``. ParamError for a setting changed from its default that the model lacks."""
    takes = accepted(model_class(cfg.model))
    out: dict[str, Any] = {}
    for key, default in MODEL_SETTINGS.items():
        value = getattr(cfg, key)
        if key in takes:
            if value is not None:
                out[key] = value
        elif value != default:
            raise ParamError(key, f"model {cfg.model!r} has no {key} setting (its parameters: --model-param)")
    return {**out, **cfg.model_params}


def default_workers(world_size: int = 1) -> int:
    """DataLoader workers per process when ``workers`` is not set: at most 4, and no more than this process's
    share of the cores (PyTorch warns about more)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores // max(1, world_size)))


def make_config(overrides: Mapping[str, Any], saved: Mapping[str, Any] | None = None,
                source: str = "the run") -> TrainConfig:
    """The config of a run from the settings the user gave, checked (once).

    A fresh run (``saved`` None): the defaults updated by ``overrides``. A resumed run: ``saved``, the config
    in its checkpoint (less :data:`SESSION_KEYS`), updated by the overrides that may change on resume
    (:data:`RUNTIME_KEYS`); overriding any other setting with another value is refused (naming ``source``).
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParamError(unknown[0], "unknown setting")
    if saved is None:
        return validate(TrainConfig(**overrides))
    base = {k: v for k, v in saved.items() if k in known and k not in SESSION_KEYS}
    clash = [f"`{k}` {v!r} (run has {base.get(k)!r})" for k, v in overrides.items()
             if k not in RUNTIME_KEYS and base.get(k) != v]
    if clash:
        raise TrainError(f"{source}: cannot resume with other settings: {', '.join(clash)}; start a new run "
                         "(another `out`) instead")
    return validate(TrainConfig(**{**base, **{k: v for k, v in overrides.items() if k in RUNTIME_KEYS}}))
