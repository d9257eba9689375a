"""OME-Zarr (NGFF 0.5) metadata of the label maps, so that ome-zarr-py and napari open them as label layers.

Each label map is an NGFF "image-label": a zarr group whose attributes hold ``{"ome": {"version": "0.5",
"multiscales": [...], "image-label": {...}}}`` and whose array ``0`` holds the (y, x) labels, one resolution
level. Its ``properties`` list every region (label value and area in pixels); viewers choose the colours.
The zarr group ``labels`` lists the label images (``{"ome": {"version": "0.5", "labels": [...]}}``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

NGFF_VERSION = "0.5"


def label_image_attrs(name: str, counts: np.ndarray, spacing: tuple[float, float] | None = None
                      ) -> dict[str, Any]:
    """The "ome" attributes of one label image. counts: pixels per label value (np.bincount of the map);
    spacing: (row, col) pixel size in mm, when known."""
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scale = [1.0, 1.0]
    if spacing is not None:
        axes = [{**a, "unit": "millimeter"} for a in axes]
        scale = [float(spacing[0]), float(spacing[1])]
    regions = [int(v) for v in np.flatnonzero(counts) if v > 0]
    return {
        "version": NGFF_VERSION,
        "multiscales": [{"name": name, "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}],
        "image-label": {
            "properties": [{"label-value": v, "area (pixels)": int(counts[v])} for v in regions],
        },
    }


def labels_listing_attrs(names: list[str]) -> dict[str, Any]:
    """The "ome" attributes of the zarr group ``labels``, which lists the label images."""
    return {"version": NGFF_VERSION, "labels": sorted(names)}
