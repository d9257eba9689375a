"""Superpixels as a region source: no weights, same label-map contract as SAM.

For the offline demo and region-source ablations. scikit-image's SLIC (default) or Felzenszwalb.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rat.shared.errors import ParamError
from rat.shared.regions.labels import compact

#: scikit-image superpixel methods.
SUPERPIXEL_METHODS = ("slic", "felzenszwalb")


class SuperpixelGenerator:
    """(H, W, 3) uint8 -> (H, W) label map 1..L (every pixel covered)."""

    name = "superpixels"
    summary = "scikit-image's SLIC or Felzenszwalb superpixels, no weights"
    option_prefix = "sp"
    parameter_choices = {"method": SUPERPIXEL_METHODS}

    def __init__(self, method: str = "slic", n_segments: int = 64, compactness: float = 10.0,
                 sigma: float = 1.0, scale: float = 100.0, min_size: int = 50) -> None:
        if method not in SUPERPIXEL_METHODS:
            known = ", ".join(SUPERPIXEL_METHODS)
            raise ParamError("method", f"unknown superpixel method {method!r} ({known})")
        for key, value, low in (("n_segments", n_segments, 1), ("compactness", compactness, 0),
                                ("sigma", sigma, 0), ("scale", scale, 0), ("min_size", min_size, 0)):
            exclusive = key in ("compactness", "scale")
            if value < low or (exclusive and value == low):
                bound = "greater than" if exclusive else "at least"
                raise ParamError(key, f"{value!r}: must be {bound} {low}")
        self.params: dict[str, Any] = {"method": method, "n_segments": n_segments,
                                       "compactness": compactness, "sigma": sigma}
        if method == "felzenszwalb":
            self.params = {"method": method, "scale": scale, "sigma": sigma, "min_size": min_size}

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from skimage.segmentation import felzenszwalb, slic

        p = self.params
        if p["method"] == "slic":
            seg = slic(rgb, n_segments=p["n_segments"], compactness=p["compactness"],
                       sigma=p["sigma"], start_label=1, channel_axis=-1)
        else:
            seg = felzenszwalb(rgb, scale=p["scale"], sigma=p["sigma"], min_size=p["min_size"],
                               channel_axis=-1) + 1
        return compact(seg.astype(np.int64))
