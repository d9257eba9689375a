"""Where the voxels lie: the 4x4 affine of the arrays :func:`rat.shared.io.read_image` and
:func:`rat.shared.io.read_volume` return.

Convention (NIfTI's, nibabel's ``img.affine``): ``affine @ (i, j, k, 1)`` is the position of
voxel ``array[i, j, k]`` in RAS+ world coordinates in mm (+x towards the patient's right, +y
anterior, +z superior: the DICOM LPS position with x and y negated). A 2-D array ``(H, W)`` is
the volume ``(H, W, 1)``: its third column is the slice normal times the slice thickness.

Each format places its arrays itself where it can (``geometry`` in its entry of :mod:`rat.shared.io.formats`):

- DICOM files and series folders (:mod:`rat.shared.io.dicom_geometry`): from ImagePositionPatient,
  ImageOrientationPatient and PixelSpacing; a series as ITK (ITK-SNAP, 3D Slicer) reads it;
- NIfTI: nibabel's affine (sform, else qform), in mm when the header unit is metres or microns.

The others (PNG, TIFF), and DICOM without ImagePositionPatient/ImageOrientationPatient: the diagonal of the
reader's spacing (row, col[, slice]), 1 mm where unknown.

A slice ``read_image(path, index=k, axis=a)`` keeps the other two axes in order; its affine is
that 2-D array as a one-voxel-thick volume at its place (:func:`slice_affine`). ITK (ITK-SNAP)
indexes DICOM and PNG/TIFF images (column, row), the transpose of our arrays:
:func:`to_itk_order` swaps the first two axes of an array and its affine, world positions kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rat.shared.io.base import ImageReadError, PathLike, diagonal_affine, reading
from rat.shared.io.formats import format_of
from rat.shared.io.images import open_source
from rat.shared.io.volumes import _spatial_axis


def image_affine(path: PathLike, *, index: int | None = None, axis: int = -1) -> np.ndarray:
    """4x4 RAS affine (mm, float64) of ``read_image(path, index=index, axis=axis)``'s array.

    2-D images take no ``index``; volumes need one (a slice along spatial axis ``axis`` of
    ``(H, W, N)``), and the affine is that of the slice as an ``(H', W', 1)`` volume at its
    place. Raises ImageReadError (one line naming the file).
    """
    with reading(path):
        affine, shape, volume = _source_affine(Path(path))
        if not volume:
            if index is not None:
                raise ImageReadError(
                    path, f"index={index} given but this is a 2-D image of shape {shape}"
                )
            return affine
        if index is None:
            raise ImageReadError(
                path, f"volume of shape {shape}: pass index (and axis) to pick a slice"
            )
        ax = _spatial_axis(path, axis)
        if not -shape[ax] <= index < shape[ax]:
            raise ImageReadError(
                path, f"index {index} out of range for {shape[ax]} slices on axis {ax}"
            )
        return slice_affine(affine, index % shape[ax], ax)


def volume_affine(path: PathLike, *, axis: int = -1) -> np.ndarray:
    """4x4 RAS affine (mm, float64) of ``read_volume(path)``'s ``(H, W, N)`` array (``axis=-1``),
    or of the volume stacked from its slices along ``axis``::

        np.stack([read_image(path, index=k, axis=axis)[0] for k in range(n)], axis=-1)

    A 2-D file is the one-slice volume ``(H, W, 1)`` (``axis`` -1 or 2 only). Raises
    ImageReadError (one line naming the file).
    """
    with reading(path):
        affine, shape, volume = _source_affine(Path(path))
        ax = _spatial_axis(path, axis)
        if not volume and ax != 2:
            raise ImageReadError(path, f"2-D image of shape {shape} has no slices on axis {ax}")
        return slice_affine(affine, 0, ax)


def slice_affine(affine: np.ndarray, index: int, axis: int) -> np.ndarray:
    """Affine of slice ``index`` along ``axis`` (0, 1 or 2) of a volume with ``affine``.

    The slice keeps the volume's other two axes in order (as ``np.take`` does) and becomes a
    one-voxel-thick volume whose third axis is ``axis``: columns ``[others..., axis]``, origin
    moved ``index`` steps along ``axis``. Index 0 is the affine of the slices stacked on a new
    last axis.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    others = [d for d in range(3) if d != axis]
    out = np.eye(4)
    out[:3, :3] = matrix[:3, others + [axis]]
    out[:3, 3] = matrix[:3, 3] + index * matrix[:3, axis]
    return out


def to_itk_order(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` with its first two axes swapped, and the affine of the result.

    Our DICOM and PNG/TIFF arrays are ``(row, col, ...)``; ITK and ITK-SNAP index those files
    ``(col, row, ...)``, so a label map written as NIfTI overlays the DICOM series or PNG in
    ITK-SNAP only in this order (NIfTI sources are already in ITK's order). Every voxel keeps
    its world position.
    """
    matrix = np.array(affine, dtype=np.float64)
    matrix[:, [0, 1]] = matrix[:, [1, 0]]
    return np.swapaxes(np.asarray(array), 0, 1), matrix


# ----------------------------------------------------------------------------- per format


def _source_affine(path: Path) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """The affine of the whole array the readers return, its shape, and whether it is a volume: the format's
    own geometry (:mod:`rat.shared.io.formats`), else the diagonal of the reader's spacing."""
    fmt = format_of(path)
    if fmt.geometry is not None:
        return fmt.geometry(path)
    src = open_source(path, page=None, tiff_stack=True, header_only=True)
    return diagonal_affine(src.spacing), src.shape, src.volume
