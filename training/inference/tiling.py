"""Whole-image inference: one pass, or overlapping tiles blended so that seams do not show.

Images too large for one pass (TMA is about 3249 x 3249) are cut into overlapping tiles; each tile is
restored with the crop of the full label map under it, and the tiles are blended with weights that ramp
linearly over the overlap. An image no larger than one tile is restored in one pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rat.training.choices import OVERLAP, TILE
from rat.training.model.registry import takes_labels


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
            out = model(x.to(device)) if lab is None else model(x.to(device), lab.to(device))
            return out.float().cpu()

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


def model_labels(model: nn.Module, labels: np.ndarray | Tensor) -> Tensor | None:
    """Labels as an int64 tensor for the model; None for models that take none (RAT's ablations, every
    region-free model)."""
    if not takes_labels(model):
        return None
    return torch.as_tensor(np.asarray(labels, dtype=np.int64))
