"""Whole-image evaluation and restoration: tiled inference, PSNR/SSIM tables, restored files.

Images too large for one pass (TMA is about 3249 x 3249) are cut into overlapping tiles; each
tile is restored with the crop of the full label map under it, and the tiles are blended with
weights that ramp linearly over the overlap, so seams do not show. An image no larger than one
tile is restored in one pass.

Metrics are computed in source units (e.g. 0..255 for 8-bit pathology, HU for CT): the model's
output is de-normalised, clipped to the group's normalisation range [norm_low, norm_high] (the
range training maps to 0..1), and compared with the HQ image by scikit-image's
``peak_signal_noise_ratio`` and ``structural_similarity`` (default 7 x 7 uniform window;
``channel_axis`` for colour) with ``data_range`` from the dataset definition. The LQ input
itself, unclipped, is scored the same way as the baseline row. Tables report mean +- std over
images (``np.std``, ddof 0, as the public code's tables do).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor, nn

from rat.shared.manifest import Entry, Group

TILE = 512
OVERLAP = 32


# ----------------------------------------------------------------------------- tiled inference


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering 0..size, neighbours sharing >= ``overlap``.

    The last tile ends at ``size`` exactly. A size no larger than ``tile`` gives one tile at 0.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be in 0..tile-1 (tile {tile})")
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def blend_ramp(length: int, overlap: int) -> Tensor:
    """1-D blending weights (length,): rise linearly over ``overlap`` pixels at both ends, else 1.

    All weights are positive, so every pixel covered by any tile gets a well-defined average.
    """
    d = torch.arange(length, dtype=torch.float32)
    edge = torch.minimum(d, length - 1 - d) + 1  # distance to the nearer end, 1-based
    return (edge / (overlap + 1)).clamp(max=1.0) if overlap > 0 else torch.ones(length)


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, labels: Tensor | None, tile: int = TILE,
            overlap: int = OVERLAP, batch: int = 4, autocast: torch.dtype | None = None) -> Tensor:
    """Restore one whole image: image (C, H, W) normalised, labels (H, W) -> (C, H, W) float32.

    Runs on the device of ``model``'s parameters; inputs are moved there and the result comes
    back on the CPU. One pass when H and W are at most ``tile``; otherwise ``tile`` x ``tile``
    tiles (``batch`` at a time) with at least ``overlap`` pixels shared by neighbours, blended by
    :func:`blend_ramp` weights. ``autocast``: e.g. ``torch.bfloat16`` on CUDA.
    """
    device = next(model.parameters()).device
    c, h, w = image.shape
    use_amp = autocast is not None

    def run(x: Tensor, lab: Tensor | None) -> Tensor:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=use_amp):
            return model(x.to(device), None if lab is None else lab.to(device)).float().cpu()

    if h <= tile and w <= tile:
        return run(image[None], None if labels is None else labels[None])[0]
    th, tw = min(tile, h), min(tile, w)
    weight = blend_ramp(th, overlap)[:, None] * blend_ramp(tw, overlap)[None, :]  # (th, tw)
    acc = torch.zeros(c, h, w)
    norm = torch.zeros(h, w)
    boxes = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
    for first in range(0, len(boxes), batch):
        chunk = boxes[first : first + batch]
        x = torch.stack([image[:, y : y + th, x : x + tw] for y, x in chunk])  # (n, C, th, tw)
        lab = None if labels is None else torch.stack([labels[y : y + th, x : x + tw] for y, x in chunk])
        out = run(x, lab)
        for (y, x0), o in zip(chunk, out, strict=True):
            acc[:, y : y + th, x0 : x0 + tw] += o * weight
            norm[y : y + th, x0 : x0 + tw] += weight
    return acc / norm


# ----------------------------------------------------------------------------- metrics


def to_source(x: Tensor | np.ndarray, group: Group, clip: bool = True) -> np.ndarray:
    """Normalised (C, H, W) -> source units (H, W) or (H, W, C) float64, clipped to the norm range."""
    arr = np.asarray(x, dtype=np.float64)
    arr = arr * (group.norm_high - group.norm_low) + group.norm_low
    if clip:
        arr = np.clip(arr, group.norm_low, group.norm_high)
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def image_metrics(pred: np.ndarray, target: np.ndarray, data_range: float) -> tuple[float, float]:
    """(PSNR dB, SSIM) of ``pred`` against ``target``, both (H, W) or (H, W, C) in the same units."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    channel_axis = -1 if pred.ndim == 3 else None
    psnr = peak_signal_noise_ratio(target, pred, data_range=data_range)
    ssim = structural_similarity(target, pred, data_range=data_range, channel_axis=channel_axis)
    return float(psnr), float(ssim)


@dataclass(frozen=True)
class Score:
    """Metrics of one test image: restored and LQ-input PSNR (dB) and SSIM against the HQ image."""

    id: str
    psnr: float
    ssim: float
    lq_psnr: float
    lq_ssim: float


def score_image(image_id: str, lq: Tensor, hq: Tensor, restored: Tensor, group: Group) -> Score:
    """Score normalised (C, H, W) tensors in source units (see the module doc)."""
    target = to_source(hq, group, clip=False)
    psnr, ssim = image_metrics(to_source(restored, group), target, group.data_range)
    lq_psnr, lq_ssim = image_metrics(to_source(lq, group, clip=False), target, group.data_range)
    return Score(image_id, psnr, ssim, lq_psnr, lq_ssim)


def evaluate(model: nn.Module, entries: Sequence[Entry], root: str | Path, store, group: Group,
             tile: int = TILE, overlap: int = OVERLAP, autocast: torch.dtype | None = None,
             progress: bool = False) -> list[Score]:
    """Restore and score every entry (whole images, tiled): one :class:`Score` per image.

    ``store``: the open label store (labels, and the image cache when it holds the image).
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    from tqdm import tqdm

    from rat.training.data import load_full

    was_training = model.training
    model.eval()
    scores = []
    try:
        for entry in tqdm(entries, desc="eval", unit="img", disable=not progress, leave=False):
            lq, hq, labels = load_full(store, entry, root, group)
            restored = predict(model, torch.as_tensor(lq), _labels(model, labels), tile, overlap,
                               autocast=autocast)
            scores.append(score_image(entry.id, torch.as_tensor(lq), torch.as_tensor(hq), restored, group))
    finally:
        model.train(was_training)
    return scores


def _labels(model: nn.Module, labels: np.ndarray | Tensor) -> Tensor | None:
    """Labels as int64 tensor; None for the ablations that do not use them."""
    if getattr(model, "attention", "rmsa") != "rmsa":
        return None
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))


# ----------------------------------------------------------------------------- tables


def summarise(scores: Sequence[Score]) -> dict[str, dict[str, float]]:
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


def format_table(scores: Sequence[Score], title: str = "RAT") -> str:
    """The paper-style table: one row for the LQ input, one for the restored images."""
    s = summarise(scores)
    lines = [f"{'':<12}{'PSNR (dB)':>20}{'SSIM':>20}   ({len(scores)} images)"]
    for label, key in (("LQ input", "lq"), (title, "restored")):
        r = s[key]
        lines.append(f"{label:<12}{r['psnr']:>11.4f} +- {r['psnr_std']:<6.4f}"
                     f"{r['ssim']:>11.4f} +- {r['ssim_std']:<6.4f}")
    return "\n".join(lines)


def write_scores_csv(scores: Sequence[Score], path: str | Path) -> Path:
    """Per-image rows (id, psnr, ssim, lq_psnr, lq_ssim), then "mean" and "std" rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = summarise(scores)
    names = ["id", "psnr", "ssim", "lq_psnr", "lq_ssim"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(x) for x in scores)
        for stat, suffix in (("mean", ""), ("std", "_std")):
            writer.writerow({"id": stat, "psnr": s["restored"][f"psnr{suffix}"],
                             "ssim": s["restored"][f"ssim{suffix}"], "lq_psnr": s["lq"][f"psnr{suffix}"],
                             "lq_ssim": s["lq"][f"ssim{suffix}"]})
    return path


# ----------------------------------------------------------------------------- restoration


def restored_path(entry: Entry, out_dir: str | Path) -> Path:
    """Where :func:`restore` writes an entry: ``<out>/<group>/<id><LQ suffix>`` for 2-D files (JPEG
    as PNG: no lossy re-encoding); volume slices (NIfTI, DICOM series, multi-frame) as ``<id>.tif``."""
    suffix = Path(entry.lq).suffix.lower()
    if entry.slice is not None or suffix not in (".png", ".tif", ".tiff", ".dcm", ".jpg", ".jpeg"):
        suffix = ".tif"
    elif suffix in (".jpg", ".jpeg"):
        suffix = ".png"
    return Path(out_dir) / entry.group / f"{entry.id}{suffix}"


@dataclass(frozen=True)
class Written:
    """Outcome of restoring one image: the file written, or why not."""

    id: str
    path: str | None
    reason: str = ""


def restore(model: nn.Module, entries: Iterable[Entry], root: str | Path, store, group: Group,
            out_dir: str | Path, tile: int = TILE, overlap: int = OVERLAP,
            autocast: torch.dtype | None = None, progress: bool = True) -> list[Written]:
    """Restore every entry and write it in its source format and dtype (see :func:`restored_path`).

    DICOM keeps the LQ file's tags with new pixel data; PNG/TIFF keep the LQ file's bit depth.
    Values are clipped to the group's normalisation range. A failing image is reported in its
    :class:`Written` and the others go on.
    """
    from tqdm import tqdm

    from rat.shared.io import write_image
    from rat.training.data import load_full

    was_training = model.training
    model.eval()
    done = []
    try:
        for entry in tqdm(list(entries), desc="restore", unit="img", disable=not progress):
            try:
                lq, _, labels = load_full(store, entry, root, group)
                restored = predict(model, torch.as_tensor(lq), _labels(model, labels), tile, overlap,
                                   autocast=autocast)
                target = restored_path(entry, out_dir)
                if entry.slice is None:  # the LQ file is the template: format, dtype, DICOM tags
                    write_image(target, to_source(restored, group), like=Path(root) / entry.lq)
                else:  # a slice of a volume: float32 TIFF in source units
                    write_image(target, to_source(restored, group), dtype="float32")
                done.append(Written(entry.id, str(target)))
            except (ValueError, OSError, RuntimeError) as err:
                done.append(Written(entry.id, None, _one_line(err)))
    finally:
        model.train(was_training)
    return done


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__



# ----------------------------------------------------------------------------- figure


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
