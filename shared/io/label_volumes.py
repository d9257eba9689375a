"""Label maps as NIfTI volumes that lie on their scans in ITK-SNAP and 3D Slicer, and the DICOM series they
are written for.

- Series (:func:`folder_series`): DICOM files belong to one series when they lie in one folder and share a
  SeriesInstanceUID (files without one: their folder). Read from the headers only.
- Volumes (:func:`series_stack`): the files of a series are the slices of one volume when they have
  positions (ImagePositionPatient, ImageOrientationPatient) at two or more places; the volume has the series'
  geometry as ITK reads it (:func:`rat.shared.io.geometry.series_affine`: slices sorted along the normal, not
  by file name or InstanceNumber, origin at the first, spacing from the positions, directions from the
  orientation). A series with several orientations, gantry tilt, a gap or uneven spacing is refused with one
  line naming it (:class:`~rat.shared.io.base.ImageReadError`). Files that all lie at one place, or have no
  position, are separate images.
- Writing (:func:`write_label_nifti`): labels of DICOM, PNG and TIFF sources are written in the (column,
  row) order ITK reads those in (:func:`rat.shared.io.to_itk_order`), so viewers take the file as a
  segmentation of the scan, and a 2-D label map of one is a one-slice volume ``(H, W, 1)`` whose affine
  places it where its image lies (for DICOM the slice position included); labels of NIfTI sources keep the
  source's voxel order and shape. Values are uint16 (ITK-SNAP's label type; uint32 past 65,535), NIfTI
  intent "label".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rat.shared.io.base import ImageReadError, PathLike
from rat.shared.io.dicom import _dcmread, not_an_image, sort_series
from rat.shared.io.dicom_geometry import SPACING_ABSOLUTE, image_position, series_affine
from rat.shared.io.formats import DICOM, by_suffix, detect
from rat.shared.io.geometry import to_itk_order
from rat.shared.io.volumes import write_nifti


@dataclass(frozen=True)
class Series:
    """DICOM files of one series: those in ``folder`` with SeriesInstanceUID ``uid`` ("" when they have
    none), sorted by name, with their headers (pixels not read)."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    headers: tuple


@dataclass(frozen=True)
class SeriesStack:
    """The files of one series as one volume: ``files`` in slice order (along the normal), and the shape
    ``(H, W, N)`` and RAS affine of the array stacked from them in that order."""

    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file, by its name or its preamble (:mod:`rat.shared.io.formats`)."""
    return by_suffix(path) is DICOM or (path.is_file() and detect(path) is DICOM)


def folder_series(folder: Path, exclude: Collection[Path] = ()) -> list[Series]:
    """The DICOM series of the files directly in ``folder`` (not recursive), by SeriesInstanceUID; files
    that cannot be read as DICOM, and those in ``exclude`` (e.g. a dataset's HQ files beside its LQ files),
    belong to none."""
    members: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    for f in sorted(p for p in folder.iterdir()
                    if not p.name.startswith(".") and p not in exclude and is_dicom_file(p)):
        try:
            ds = _dcmread(f, header_only=True)
        except (ImageReadError, OSError):
            continue
        if not_an_image(ds) is None:      # a DICOMDIR or a report is no slice of the series
            members[str(ds.get("SeriesInstanceUID", "") or "")].append((f, ds))
    return [Series(folder, uid, tuple(f for f, _ in m), tuple(ds for _, ds in m))
            for uid, m in sorted(members.items())]


def series_of(path: Path) -> Series | None:
    """The series the DICOM file ``path`` belongs to (the files of its folder with its SeriesInstanceUID),
    or None when it cannot be read as DICOM."""
    path = Path(path)
    return next((s for s in folder_series(path.parent) if path in s.files), None)


def same_size(series: Series, shape: tuple[int, ...]) -> tuple[Series, list[str]]:
    """The files of ``series`` whose slices have ``shape[:2]`` (Rows, Columns), and the names of the others
    (a slice of another size is no part of one volume with them)."""
    keep = [(f, ds) for f, ds in zip(series.files, series.headers, strict=True)
            if (int(ds.Rows), int(ds.Columns)) == tuple(shape[:2])]
    others = [f.name for f in series.files if f not in {k for k, _ in keep}]
    return Series(series.folder, series.uid, tuple(f for f, _ in keep), tuple(ds for _, ds in keep)), others


def series_stack(series: Series, name: PathLike) -> SeriesStack | None:
    """The files of ``series`` as one volume (see the module doc), or None when they are separate images:
    one file, no file with a position, or all at one position. Raises ImageReadError naming ``name`` (the
    series) when they cannot be one volume."""
    points = [p for p in (image_position(ds) for ds in series.headers) if p is not None]
    if len(points) < 2 or max(np.linalg.norm(p - points[0]) for p in points) <= SPACING_ABSOLUTE:
        return None
    files, headers, _ = sort_series(name, list(series.files), list(series.headers))
    affine = series_affine(name, files, headers)
    return SeriesStack(tuple(files), (int(headers[0].Rows), int(headers[0].Columns), len(files)), affine)


def safe_stem(text: str) -> str:
    """``text`` as part of a file name: runs of characters other than letters, digits, ``.+-`` become "_"."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text.strip()).strip("_")


def itk_order(source: PathLike) -> bool:
    """Whether ITK reads ``source`` with rows and columns swapped relative to our arrays: DICOM (files and
    series folders), PNG and TIFF; not NIfTI (``itk_transposed`` in :mod:`rat.shared.io.formats`)."""
    fmt = by_suffix(source)
    return fmt is None or fmt.itk_transposed


def write_label_nifti(path: PathLike, labels: np.ndarray, affine: np.ndarray, source: PathLike) -> None:
    """Write a label map ``(H, W)`` or label volume ``(H, W, N)`` of the scan ``source`` as NIfTI with
    ``affine`` (that of the ``(H, W, N)`` array; for 2-D, of ``(H, W, 1)``), in the voxel order and shape
    ITK reads ``source`` in (see the module doc). Raises ImageReadError (one line naming the file)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise ImageReadError(path, f"label maps are integer arrays, got {labels.dtype}")
    if itk_order(source):
        labels, affine = to_itk_order(labels[:, :, None] if labels.ndim == 2 else labels, affine)
    write_nifti(path, labels, affine)
