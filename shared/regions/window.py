"""The 8-bit RGB rendering SAM sees (the trainer never sees it).

Window kinds (from the dataset definition): `fixed` maps [low, high] in source units (CT: HU) to 0..255;
`percentile` maps the image's own [low, high] percentiles (PET) to 0..255; `none` takes values as they are
(8-bit pathology), clipped to 0..255. Gray images are repeated to three channels.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class WindowLike(Protocol):
    kind: str
    low: float
    high: float


def window_bounds(image: np.ndarray, window: WindowLike) -> tuple[float, float]:
    """(low, high) in source units for this image."""
    if window.kind == "fixed":
        return float(window.low), float(window.high)
    if window.kind == "percentile":
        lo, hi = np.percentile(image, [window.low, window.high])
        return float(lo), float(hi)
    if window.kind == "none":
        return 0.0, 255.0
    raise ValueError(f"unknown SAM window kind {window.kind!r} (fixed, percentile, none)")


def render_for_sam(image: np.ndarray, window: WindowLike) -> np.ndarray:
    """(H, W) or (H, W, C) float image -> (H, W, 3) uint8 RGB for SAM."""
    lo, hi = window_bounds(image, window)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip(np.rint((image.astype(np.float32) - lo) * scale), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = out[..., None]
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 4:
        out = out[..., :3]
    if out.ndim != 3 or out.shape[-1] != 3:
        raise ValueError(f"cannot render an image of shape {image.shape} as RGB")
    return np.ascontiguousarray(out)


def sam_windows(ds: Any) -> dict[str, dict[str, Any]]:
    """The SAM window of every group of a dataset definition, as stores and checkpoints record them."""
    return {name: {"kind": g.sam_window.kind, "low": g.sam_window.low, "high": g.sam_window.high}
            for name, g in sorted(ds.groups.items())}
