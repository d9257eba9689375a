"""Volumes: NIfTI (nibabel, ``.nii``/``.nii.gz``) and taking a 2-D slice out of any volume.

NIfTI scaling is applied and voxel axes are kept as stored; spacing comes from the header zooms
(converted to mm). Volumes of every format are ``(H, W, N)``; :func:`take_slice` cuts one along
any spatial axis, reading only that slice when the format can (NIfTI, DICOM) and it is on N.

Internal to :mod:`rat.shared.io`, which dispatches here by format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rat.shared.errors import one_line
from rat.shared.io.base import ImageReadError, PathLike, Source


def take_slice(
    path: PathLike, src: Source, index: int, axis: int
) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Slice ``index`` of a volume source along spatial axis ``axis`` (of ``(H, W, N)``, -3..2).

    Returns the 2-D array (``(H, W[, C])`` for axis N) and the spacing of the remaining axes.
    """
    ax = _spatial_axis(path, axis)
    n = src.shape[ax]
    if not -n <= index < n:
        raise ImageReadError(path, f"index {index} out of range for {n} slices on axis {ax}")
    index %= n
    if ax == 2 and src.load_slice is not None:
        array = src.load_slice(index)
    else:
        array = np.ascontiguousarray(np.take(src.load(), index, axis=ax))
    spacing = None if src.spacing is None else tuple(np.delete(src.spacing, ax).tolist())
    return array, spacing


def _spatial_axis(path: PathLike, axis: int) -> int:
    if not -3 <= axis < 3:
        raise ImageReadError(path, f"axis {axis} is not one of the volume axes -3..2")
    return axis % 3


# ----------------------------------------------------------------------------- NIfTI


def open_nifti(path: Path) -> Source:
    import nibabel as nib

    try:
        img = nib.load(path)  # header only; data stays in the file
    except Exception as err:
        raise ImageReadError(
            path, f"corrupt or unreadable NIfTI ({one_line(err)[:160]})"
        ) from None
    shape = tuple(int(d) for d in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageReadError(path, f"{len(shape)}-D NIfTI of shape {shape} is not supported")
    header = img.header
    zooms = tuple(float(z) for z in header.get_zooms()[: len(shape)])
    unit = header.get_xyzt_units()[0]
    scale = {"meter": 1000.0, "micron": 1e-3}.get(unit, 1.0)
    spacing = tuple(z * scale for z in zooms) if all(z > 0 for z in zooms) else None

    def load() -> np.ndarray:
        return np.asarray(img.dataobj, dtype=np.float32).reshape(shape)

    def load_slice(i: int) -> np.ndarray:  # reads only slice i from an uncompressed file
        extra = (0,) * (len(img.shape) - 3)
        return np.asarray(img.dataobj[(slice(None), slice(None), i) + extra], dtype=np.float32)

    volume = len(shape) == 3
    return Source(
        format="nifti",
        shape=shape,
        volume=volume,
        source_dtype=header.get_data_dtype().name,
        spacing=spacing,
        modality=None,
        load=load,
        load_slice=load_slice if volume else None,
    )
