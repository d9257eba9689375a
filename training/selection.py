"""Which checkpoint is best: one validation metric and its direction, the one home of that rule.

    selection = Selection("ssim")                      # rat-train --select ssim
    if selection.improves(val, best): ...              # the trainer: keep best.pt
    selection.record(step, value, split)               # what checkpoints, model folders and cards say

The trainer asks :meth:`Selection.improves` after each validation and saves ``best.pt`` only on a strict
improvement, so of equal values the first step wins. Every report (the done line, the curves' mark, the
model card, the table) reads the recorded answer (:meth:`Selection.record`, kept in each checkpoint as
``selection``) and never works the rule out again. Torch-free: the command line's help imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Selectable validation metrics: whether higher is better, and how a value reads.
METRICS: dict[str, tuple[bool, str, str]] = {
    "psnr": (True, "PSNR", "{:.4f} dB"),
    "ssim": (True, "SSIM", "{:.4f}"),
}


@dataclass(frozen=True)
class Selection:
    """Choose ``best.pt`` by validation ``metric`` (a key of :data:`METRICS`)."""

    metric: str = "psnr"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown selection metric {self.metric!r}; choose one of {', '.join(METRICS)}")

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][0]

    @property
    def label(self) -> str:
        return METRICS[self.metric][1]

    def value(self, summary: Mapping[str, Any]) -> float:
        """The selected metric of a validation summary."""
        return float(summary[self.metric])

    def improves(self, summary: Mapping[str, Any], best: float | None) -> bool:
        """Whether a validation summary beats the best value so far (None: nothing chosen yet; strictly:
        of equal values the earlier step stays)."""
        value = self.value(summary)
        if best is None:
            return math.isfinite(value)
        return value > best if self.higher_is_better else value < best

    def describe(self, value: float | None) -> str:
        """``"PSNR 41.2345 dB"``; ``"PSNR -"`` when nothing was selected."""
        chosen = value is not None and math.isfinite(value)
        return f"{self.label} {METRICS[self.metric][2].format(value) if chosen else '-'}"

    def record(self, step: int | None, value: float | None, split: str) -> dict[str, Any]:
        """What a checkpoint says about its selection: the split, the metric, the chosen step and value
        (None, None: nothing chosen yet)."""
        return {"split": split, "metric": self.metric, "step": step, "value": value}


def recorded(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The selection a checkpoint (or an exported model) records, also from files written before selections
    named their metric and value (PSNR, ``best_psnr``)."""
    selection = dict(checkpoint.get("selection") or {})
    selection.setdefault("split", (checkpoint.get("config") or {}).get("val_split", "val"))
    selection.setdefault("metric", "psnr")
    selection.setdefault("step", None)
    if "value" not in selection:
        best = checkpoint.get("best_psnr")
        selection["value"] = best if isinstance(best, float) and math.isfinite(best) else None
    return selection
