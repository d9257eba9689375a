"""Figures: one image as LQ | restored | HQ | regions, and the training curves of a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from rat.shared.datasets import Group
from rat.training.inference.scores import Score
from rat.training.normalisation import to_source


def display(x: Tensor | np.ndarray, group: Group) -> np.ndarray:
    """Normalised (C, H, W) -> (H, W) or (H, W, 3) in 0..1 for viewing: the group's fixed SAM window
    (e.g. a CT soft-tissue window) when it has one, else its normalisation range."""
    src = to_source(x, group, clip=False)
    w = group.sam_window
    low, high = (w.low, w.high) if w.kind == "fixed" else (group.norm_low, group.norm_high)
    return np.clip((src - low) / (high - low), 0.0, 1.0)


def save_figure(path: str | Path, lq: Tensor, restored: Tensor, hq: Tensor, labels: np.ndarray,
                group: Group, score: Score | None = None, title: str = "") -> Path:
    """PNG of one image: LQ | restored | HQ | regions (the label map over the LQ image).

    lq, restored, hq: normalised (C, H, W); labels (H, W).
    """
    from matplotlib.figure import Figure
    from skimage.color import label2rgb

    panels = [display(lq, group), display(restored, group), display(hq, group)]
    base = panels[0] if panels[0].ndim == 2 else panels[0].mean(axis=-1)
    regions = label2rgb(np.asarray(labels), image=base, bg_label=0, alpha=0.45, kind="overlay")
    names = ["LQ input", "restored", "HQ", f"regions ({len(np.unique(labels))})"]
    if score is not None:
        names[0] += f"\n{score.lq_psnr:.2f} dB / {score.lq_ssim:.4f}"
        names[1] += f"\n{score.psnr:.2f} dB / {score.ssim:.4f}"
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    for ax, img, name in zip(fig.subplots(1, 4), [*panels, regions], names, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_curves(records: list[Mapping[str, Any]], path: str | Path, best: int | None = None) -> Path:
    """PNG of the training loss, and the validation PSNR and SSIM (with the LQ input's), against the step;
    a dashed line marks ``best``, the step of best.pt as the run chose it (:mod:`rat.training.selection`)."""
    from matplotlib.figure import Figure

    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    split = val[-1].get("split", "val") if val else "val"
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax_loss, ax_psnr, ax_ssim = fig.subplots(1, 3)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log" if train else "linear", title="loss")
    for ax, key, unit in ((ax_psnr, "psnr", "PSNR (dB)"), (ax_ssim, "ssim", "SSIM")):
        if val:
            ax.plot([r["step"] for r in val], [r[key] for r in val], "o-", label="restored")
            ax.axhline(val[-1][f"lq_{key}"], color="grey", ls="--", label="LQ input")
        ax.set(xlabel="step", ylabel=unit, title=f"{split} split")
    for ax in (ax_loss, ax_psnr, ax_ssim):
        if best is not None:
            ax.axvline(best, color="tab:red", ls=":", label=f"best.pt (step {best})")
        ax.grid(True, alpha=0.3)
    if val:
        ax_psnr.legend()
    fig.savefig(path, dpi=100)
    return Path(path)
