"""An example region generator for rat: the image cut into square tiles of `size` pixels.

The whole interface: a class with a `name` (the name it is registered under), keyword parameters with
defaults, `params`, `provenance()` and `__call__(rgb) -> labels`. Optional parts (`rat.shared.regions`
lists them all) say more: `summary` (one line for the help), `option_prefix` (its parameters become the
options `--<prefix>-<parameter>` of `rat-precompute masks`; by default the generator's name: `--tiles-size`),
and for a generator with weights `checkpoint_path()`, `weights_label`, `model_types`. rat imports this module
to build `rat-precompute masks`'s options and help: import torch or a model package inside the methods that
use them.
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
    summary = "square tiles of `size` pixels, an example plug-in"

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
