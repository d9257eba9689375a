"""A run folder: the settings of a run, the checkpoint it continues from, where it stands, what it saves.

    run = Run.open({"masks": "tma.zarr", "out": "runs/tma"})   # a fresh run, or with "resume": True
    run.cfg, run.progress, run.resumed                         # settings, step/samples/best, the checkpoint

:meth:`Run.open` is the one place where a run's settings are made and checked and where ``last.pt`` is read
(once). A run folder holds ``last.pt`` (every ``save_every`` steps and at the end), ``best.pt`` (best
validation PSNR), ``config.json``, the metrics log and ``curves.png``. What a checkpoint holds:
:meth:`Run.state` and :mod:`rat.training.checkpoint`.

A run survives being killed at any moment (a rank that dies under ``torchrun --max-restarts``, a job at its
wall time): files are replaced atomically (written as ``.<name>.<pid>.tmp``, then renamed), so ``--resume``
finds the last complete ``last.pt``; the temporary files of killed writers are never read, and are removed
when the run starts again (:meth:`Run.remove_leftovers`).

Nothing in a run folder is lost by starting a run there (:meth:`Run.open`): ``resume`` continues from
``last.pt``; where there is none it starts fresh only when the folder holds no checkpoint at all (a new or
empty folder, or a first attempt killed before its first checkpoint: what torchrun's restarts rely on),
and is refused where ``best.pt`` or any other checkpoint is. A new run (no ``resume``) into a folder that
holds a checkpoint is refused unless ``overwrite``, which deletes the old checkpoints first. The trainer
writes ``last.pt`` before the first ``best.pt``, so a run of its own never leaves ``best.pt`` alone.

The store, data root, index and initial weights are recorded by their resolved locations, so that the run
is found from any working directory; :func:`recorded_location` finds those of runs that recorded relative
ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rat.shared.datasets import DatasetDef, Group
from rat.shared.errors import ParamError
from rat.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, rng_state, save_checkpoint
from rat.training.config import TrainConfig, TrainError, make_config
from rat.training.selection import Selection, recorded

LAST, BEST = "last.pt", "best.pt"
#: Settings that name files or stores: recorded by their resolved locations.
LOCATIONS = ("masks", "root", "index", "init")


@dataclass
class Progress:
    """Where a run stands: steps done, samples consumed (all ranks), the selected metric's best validation
    value and its step (None: none yet; :mod:`rat.training.selection`), the last validation."""

    step: int = 0
    samples: int = 0
    best: float | None = None
    val: dict[str, Any] | None = None
    best_step: int | None = None


@dataclass
class Run:
    """A run folder and its settings; ``resumed`` is the checkpoint it continues from (None: a fresh run)."""

    cfg: TrainConfig
    resumed: dict[str, Any] | None = None
    progress: Progress = field(default_factory=Progress)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def selection(self) -> Selection:
        """What chooses ``best.pt``: ``select``'s metric (the one rule; every report reads its record)."""
        return Selection(self.cfg.select)

    @classmethod
    def open(cls, settings: Mapping[str, Any]) -> Run:
        """The run the user's ``settings`` describe: a fresh run in an empty folder, or with ``resume`` the
        run in ``out`` continued from its ``last.pt`` with its own settings (see
        :func:`rat.training.config.make_config`)."""
        out = Path(settings.get("out") or TrainConfig.out)
        settings = {**settings, **{k: resolved(settings[k]) for k in LOCATIONS if settings.get(k)}}
        last, held = out / LAST, checkpoints(out)
        if settings.get("resume") and settings.get("overwrite"):
            raise ParamError("overwrite", "starts the run in `out` afresh, `resume` continues it: pass one")
        if settings.get("resume") and not last.is_file() and held:
            raise TrainError(f"{out}: holds {', '.join(held)} but no {LAST}, so there is nothing to resume "
                             "from and a fresh start would replace them; pass `overwrite` (without `resume`) "
                             "to start afresh, or choose another `out`")
        if held and not settings.get("resume") and not settings.get("overwrite"):
            raise TrainError(f"{out}: already holds a run ({', '.join(held)}); pass `resume` to continue it, "
                             "`overwrite` to replace it, or choose another `out`")
        if not (settings.get("resume") and last.is_file()):
            return cls(make_config(settings))
        saved = load_checkpoint(last)
        if saved.get("bare") or "config" not in saved:
            raise TrainError(f"{last}: not a checkpoint of this trainer")
        cfg = make_config(settings, saved["config"], source=str(last))
        chosen = recorded(saved)
        progress = Progress(saved["step"], saved["samples"], chosen["value"], saved["val"] or None,
                            chosen["step"])
        return cls(cfg, saved, progress)

    def clear(self) -> list[Path]:
        """Delete the checkpoints of an earlier run in the folder (``overwrite``); returns them. Rank 0,
        before its first write."""
        old = [self.out / name for name in checkpoints(self.out)]
        for p in old:
            p.unlink(missing_ok=True)
        return old

    def remove_leftovers(self) -> list[Path]:
        """Delete the temporary files (``.<name>.<pid>.tmp``) that processes killed while writing left in the
        run folder; returns them. Only while no process of the run writes (rank 0, before its first write)."""
        leftovers = sorted(p for p in self.out.glob(".*.tmp") if p.is_file())
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers

    def write_config(self) -> None:
        """``config.json``: the settings of this session, for people."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n", encoding="utf-8")

    def state(self, model: nn.Module, optimizer: torch.optim.Optimizer, model_args: dict[str, Any],
              world: int, next_lr: float, data: RunData) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly, and what an export needs to describe it."""
        cfg, p = self.cfg, self.progress
        return {"format": CHECKPOINT_FORMAT, "step": p.step, "samples": p.samples, "world_size": world,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": "cosine", "lr": cfg.lr, "min_lr": cfg.min_lr, "iters": cfg.iters,
                              "next_lr": next_lr},
                "config": asdict(cfg), "model_args": model_args, "provenance": data.provenance,
                "rng": rng_state(), "val": p.val or {},
                "selection": self.selection.record(p.best_step, p.best, cfg.val_split),
                "data": {"definition": data.dataset.text, "definition_sha256": data.dataset.sha256,
                         "dataset": data.dataset.name, "group": data.group.name, "root": str(data.root),
                         "train": len(data.train), "val": len(data.val)}}

    def save(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``name`` (LAST or BEST) in the run folder, atomically."""
        return save_checkpoint(self.out / name, state)


def checkpoints(folder: Path) -> list[str]:
    """Names of the checkpoint files (``*.pt``) in a run folder, sorted."""
    return sorted(p.name for p in folder.glob("*.pt") if p.is_file()) if folder.is_dir() else []


def resolved(location: str) -> str:
    """A local path as an absolute one (a URL as it is): what a run records."""
    text = str(location)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def recorded_location(value: str, checkpoint: str | Path, out: str | None) -> str:
    """A location a run recorded (its store, data root, index), found from here: as recorded when it is a
    URL, absolute, or there from the working directory; else relative to the folder the run was started in
    (the checkpoint's folder less the recorded ``out``), else to the run folder; else as recorded."""
    text = str(value)
    if "://" in text or Path(text).is_absolute() or Path(text).exists():
        return text
    folder = Path(checkpoint).resolve()
    folder = folder if folder.is_dir() else folder.parent
    parts = Path(out).parts if out and not Path(out).is_absolute() else ()
    origin = folder.parents[len(parts) - 1] if parts and folder.parts[-len(parts):] == parts else None
    for base in (origin, folder):
        if base is not None and (base / text).exists():
            return str(base / text)
    return text


@dataclass
class RunData:
    """What a run trains and validates on, checked against the label store before the first step."""

    dataset: DatasetDef
    group: Group
    train: list[Any]
    val: list[Any]
    store: Any  # the open label store (zarr group)
    provenance: dict[str, Any]
    root: Path
