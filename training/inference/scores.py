"""Scores of restored images: PSNR and SSIM in source units, per image and as the paper's tables.

The model's output is de-normalised, clipped to the group's normalisation range [norm_low, norm_high] (the
range training maps to 0..1), and compared with the HQ image by scikit-image's ``peak_signal_noise_ratio``
and ``structural_similarity`` (default 7 x 7 uniform window; ``channel_axis`` for colour) with
``data_range`` from the dataset definition. The LQ input itself, unclipped, is scored the same way as the
baseline row. Tables report mean +- std over images (``np.std``, ddof 0, as the public code's tables do).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor

from rat.shared.datasets import Group
from rat.training.normalisation import to_source


def image_metrics(pred: np.ndarray, target: np.ndarray, data_range: float) -> tuple[float, float]:
    """(PSNR dB, SSIM) of ``pred`` against ``target``, both (H, W) or (H, W, C) in the same units."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    channel_axis = -1 if pred.ndim == 3 else None
    psnr = peak_signal_noise_ratio(target, pred, data_range=data_range)
    ssim = structural_similarity(target, pred, data_range=data_range, channel_axis=channel_axis)
    return float(psnr), float(ssim)


#: The metrics of a :class:`Score`, in order.
METRICS = ("psnr", "ssim", "lq_psnr", "lq_ssim")


@dataclass(frozen=True)
class Score:
    """Metrics of one test image: restored and LQ-input PSNR (dB) and SSIM against the HQ image."""

    id: str
    psnr: float
    ssim: float
    lq_psnr: float
    lq_ssim: float
    unit: str = ""  # the split unit it belongs to (a patient); "" when the image is its own unit


def score_image(image_id: str, lq: Tensor, hq: Tensor, restored: Tensor, group: Group,
                unit: str = "") -> Score:
    """Score normalised (C, H, W) tensors in source units (see the module doc)."""
    target = to_source(hq, group, clip=False)
    psnr, ssim = image_metrics(to_source(restored, group), target, group.data_range)
    lq_psnr, lq_ssim = image_metrics(to_source(lq, group, clip=False), target, group.data_range)
    return Score(image_id, psnr, ssim, lq_psnr, lq_ssim, unit)


def per_unit(scores: Sequence[Score]) -> list[Score]:
    """One score per unit (e.g. patient): the mean of its images' scores, in order of first appearance; the
    unit is the independent sample when a dataset splits by patient."""
    units: dict[str, list[Score]] = {}
    for s in scores:
        units.setdefault(s.unit or s.id, []).append(s)
    return [Score(u, *(float(np.mean([getattr(s, k) for s in group])) for k in METRICS), unit=u)
            for u, group in units.items()]



def summarize_scores(scores: Sequence[Score]) -> dict[str, dict[str, float]]:
    """{"restored": {psnr, psnr_std, ssim, ssim_std}, "lq": {...}}: mean and std (ddof 0) over images."""
    if not scores:
        raise ValueError("no images were scored")
    out = {}
    for name, prefix in (("lq", "lq_"), ("restored", "")):
        psnr = np.array([getattr(s, f"{prefix}psnr") for s in scores], dtype=np.float64)
        ssim = np.array([getattr(s, f"{prefix}ssim") for s in scores], dtype=np.float64)
        out[name] = {"psnr": float(psnr.mean()), "psnr_std": float(psnr.std()),
                     "ssim": float(ssim.mean()), "ssim_std": float(ssim.std())}
    return out


def format_table(scores: Sequence[Score], title: str = "RAT", what: str = "images") -> str:
    """The paper-style table: one row for the LQ input, one for the restored images (mean +- std over
    ``what``: images, or patients for :func:`per_unit` scores)."""
    s = summarize_scores(scores)
    lines = [f"{'':<12}{'PSNR (dB)':>20}{'SSIM':>20}   ({len(scores)} {what})"]
    for label, key in (("LQ input", "lq"), (title, "restored")):
        r = s[key]
        lines.append(f"{label:<12}{r['psnr']:>11.4f} +- {r['psnr_std']:<6.4f}"
                     f"{r['ssim']:>11.4f} +- {r['ssim_std']:<6.4f}")
    return "\n".join(lines)


def write_scores_csv(scores: Sequence[Score], path: str | Path) -> Path:
    """Per-image rows (id, psnr, ssim, lq_psnr, lq_ssim, unit), then "mean" and "std" rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = summarize_scores(scores)
    names = ["id", "psnr", "ssim", "lq_psnr", "lq_ssim", "unit"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(x) for x in scores)
        for stat, suffix in (("mean", ""), ("std", "_std")):
            writer.writerow({"id": stat, "psnr": s["restored"][f"psnr{suffix}"],
                             "ssim": s["restored"][f"ssim{suffix}"], "lq_psnr": s["lq"][f"psnr{suffix}"],
                             "lq_ssim": s["lq"][f"ssim{suffix}"]})
    return path
