"""Overlapping masks -> one non-overlapping label map.

The rule is the authors' procedure: sort masks by area, largest first, and paint them in that order, so a
pixel covered by several masks ends up in the smallest of them (ties: the later mask in the generator's
order wins, as a stable sort gives); pixels no mask covers are 0. Regions are then numbered 1..L
consecutively in paint order. Instead of painting one mask after another, each mask gets its paint rank and a
pixel takes the highest rank that covers it: `max` is associative, so masks can be folded in batches as they
are decoded and never all held at full resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Masks decoded and folded at once (bounds memory: batch x H x W bytes).
FOLD_BATCH = 16


def label_dtype(n_regions: int) -> np.dtype:
    """uint16, or uint32 when there are more than 65,535 regions."""
    return np.dtype(np.uint16 if n_regions <= np.iinfo(np.uint16).max else np.uint32)


def paint_ranks(areas: Sequence[int] | np.ndarray) -> np.ndarray:
    """(K,) areas -> (K,) paint rank 1..K: largest area painted first, ties keep the given order."""
    areas = np.asarray(areas, dtype=np.int64)
    order = np.argsort(-areas, kind="stable")
    ranks = np.empty(len(areas), dtype=np.int64)
    ranks[order] = np.arange(1, len(areas) + 1)
    return ranks


def compact(painted: np.ndarray) -> np.ndarray:
    """Renumber a non-negative rank map to 1..L in rank order, keeping 0 for uncovered pixels."""
    top = int(painted.max()) if painted.size else 0
    present = np.bincount(painted.ravel(), minlength=top + 1) > 0
    present[0] = False
    n = int(present.sum())
    lut = np.zeros(top + 1, dtype=label_dtype(n))
    lut[present] = np.arange(1, n + 1)
    return lut[painted]


def fold_masks(ranks: np.ndarray, masks: Iterable[np.ndarray], shape: tuple[int, int],
               batch: int = FOLD_BATCH) -> np.ndarray:
    """Highest paint rank per pixel over masks arriving one by one (each (H, W) bool, same order as ranks)."""
    painted = np.zeros(shape, dtype=np.int64 if len(ranks) > np.iinfo(np.int32).max else np.int32)
    pending: list[np.ndarray] = []
    start = 0

    def flush() -> None:
        nonlocal start
        stack = np.stack(pending)                                   # (b, H, W) bool
        r = ranks[start:start + len(pending)].astype(painted.dtype)
        np.maximum(painted, np.where(stack, r[:, None, None], 0).max(axis=0), out=painted)
        start += len(pending)
        pending.clear()

    for k, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(shape):
            raise ValueError(f"mask {k} has shape {mask.shape}, expected {tuple(shape)}")
        pending.append(mask)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if start != len(ranks):
        raise ValueError(f"{len(ranks)} areas given but {start} masks")
    return painted


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """SAM's uncompressed RLE (column-major run lengths, starting with a run of 0s) -> (H, W) bool.

    Vectorised: one `np.repeat` of alternating 0/1 over the run lengths (segment_anything's own
    decoder loops over the runs in Python, which dominates on masks with many runs).
    """
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    flat = np.repeat((np.arange(counts.size) % 2).astype(bool), counts)
    if flat.size != h * w:
        raise ValueError(f"RLE run lengths sum to {flat.size}, expected {h} x {w}")
    return flat.reshape(w, h).T


def resolve_rle_masks(records: Sequence[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """SAM generator records with uncompressed-RLE `segmentation` -> (H, W) label map.

    Masks are decoded one at a time and folded in batches, so peak memory is the label map plus a batch.
    """
    if not records:
        return np.zeros(shape, dtype=np.uint16)
    ranks = paint_ranks([r["area"] for r in records])
    masks = (rle_to_mask(r["segmentation"]) for r in records)
    return compact(fold_masks(ranks, masks, shape))
