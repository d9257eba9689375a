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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rat.shared.datasets import DatasetDef, Group
from rat.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, rng_state, save_checkpoint
from rat.training.config import TrainConfig, TrainError, make_config

LAST, BEST = "last.pt", "best.pt"


@dataclass
class Progress:
    """Where a run stands: steps done, samples consumed (all ranks), best validation PSNR, last validation."""

    step: int = 0
    samples: int = 0
    best: float = -math.inf
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

    @classmethod
    def open(cls, settings: Mapping[str, Any]) -> Run:
        """The run the user's ``settings`` describe: a fresh run in an empty folder, or with ``resume`` the
        run in ``out`` continued from its ``last.pt`` with its own settings (see
        :func:`rat.training.config.make_config`)."""
        out = Path(settings.get("out") or TrainConfig.out)
        last = out / LAST
        if last.is_file() and not settings.get("resume"):
            raise TrainError(f"{out}: already holds a run ({LAST}); pass `resume` to continue it, or choose "
                             "another `out`")
        if not (settings.get("resume") and last.is_file()):
            return cls(make_config(settings))
        saved = load_checkpoint(last)
        if saved.get("bare") or "config" not in saved:
            raise TrainError(f"{last}: not a checkpoint of this trainer")
        cfg = make_config(settings, saved["config"], source=str(last))
        progress = Progress(saved["step"], saved["samples"], saved["best_psnr"], saved["val"] or None,
                            (saved.get("selection") or {}).get("step"))
        return cls(cfg, saved, progress)

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
                "rng": rng_state(), "best_psnr": p.best, "val": p.val or {},
                "selection": {"split": cfg.val_split, "metric": "psnr", "step": p.best_step},
                "data": {"definition": data.dataset.text, "definition_sha256": data.dataset.sha256,
                         "dataset": data.dataset.name, "group": data.group.name, "root": str(data.root),
                         "train": len(data.train), "val": len(data.val)}}

    def save(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``name`` (LAST or BEST) in the run folder, atomically."""
        return save_checkpoint(self.out / name, state)


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
