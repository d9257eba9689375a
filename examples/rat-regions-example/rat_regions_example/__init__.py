"""An example region generator for rat: the image cut into square tiles of `size` pixels.

The whole interface: a class with a `name` (the name it is registered under), keyword parameters with
defaults, `params`, `provenance()` and `__call__(rgb) -> labels`. rat loads this module only when the
generator is used (`rat-precompute masks --help` lists generators from the package metadata alone), so it may
import torch or a model package at the top.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TileGenerator:
    """(H, W, 3) uint8 RGB -> (H, W) label map: the tile (i, j) of `size` x `size` pixels is region
    1 + i * cols + j; pixels darker than `min_value` in every channel are 0 (no region).

    A generator with model weights also takes `checkpoint` (and `device`, `model_type`): the command line
    passes its --checkpoint (or RAT_SAM_CHECKPOINT) and --device to any generator whose signature has them,
    hashes the checkpoint once for a cluster's workers, and the store records `provenance()`.
    """

    name = "tiles"

    def __init__(self, size: int = 64, min_value: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.params: dict[str, Any] = {"size": size, "min_value": min_value}

    def provenance(self) -> dict[str, Any]:
        """What the store records: everything that changes the label maps (a version, weights' SHA-256...)."""
        return {"name": self.name, "version": "0.1", "params": dict(self.params)}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        size = self.params["size"]
        cols = -(-w // size)
        tiles = -(-h // size) * cols
        rows, columns = np.indices((h, w))
        dtype = np.uint16 if tiles < 65536 else np.uint32
        labels = (1 + (rows // size) * cols + columns // size).astype(dtype)
        labels[rgb.max(axis=-1) < self.params["min_value"]] = 0        # dark pixels: no region
        return labels
