"""A picture of a label map: the LQ image (as SAM saw it) beside a coloured overlay of its regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 + (H, W) labels -> (H, W, 3) uint8 with regions tinted and outlined; 0 stays."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    tinted = label2rgb(labels.astype(np.int64), image=rgb, alpha=alpha, bg_label=0, image_alpha=1.0)
    out = np.clip(tinted * 255.0, 0, 255).astype(np.uint8)
    out[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    return out


def save_side_by_side(rgb: np.ndarray, labels: np.ndarray, path: str | Path, gap: int = 8) -> Path:
    """Write `rgb | overlay(rgb, labels)` as one PNG."""
    from PIL import Image

    h, w = labels.shape
    canvas = np.full((h, 2 * w + gap, 3), 255, dtype=np.uint8)
    canvas[:, :w] = rgb
    canvas[:, w + gap:] = overlay(rgb, labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
