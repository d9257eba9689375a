"""Where the voxels of DICOM files and series lie: their 4x4 RAS affines (see :mod:`rat.shared.io.geometry`
for the convention, and how these serve :func:`rat.shared.io.image_affine`).

- DICOM file: array axis 0 (rows) steps along the column direction cosine
  ImageOrientationPatient[3:] by PixelSpacing[0], axis 1 (columns) along the row cosine IOP[:3]
  by PixelSpacing[1], from ImagePositionPatient (the centre of the first pixel). The third column
  is normal = cross(IOP[:3], IOP[3:]) times SliceThickness, else SpacingBetweenSlices, else 1.
  Multi-frame files (frames in file order): per-frame PlanePositionSequence, else IPP plus
  GridFrameOffsetVector (RT Dose) along the normal, else IPP plus SpacingBetweenSlices steps; the
  third column is (last - first) / (N - 1), evenly spaced frames within :func:`spacing_tolerance`.
- DICOM series (a directory, or files of one series: :func:`series_affine`), as ITK (ITK-SNAP,
  3D Slicer) reads it: slices sorted by ImagePositionPatient along the slice normal (``read_volume``'s
  order, not file names or InstanceNumber), the first slice's position as origin, the step between
  positions as the third column, the directions from ImageOrientationPatient and its normal. A volume
  needs one orientation (every cosine within ORIENTATION_TOLERANCE of the first slice's), slices on
  the normal (no gantry tilt: ITK would place them there) and even spacing (each slice within
  :func:`spacing_tolerance` of its evenly spaced place); otherwise ImageReadError names the series
  and says why. Series without positions, and files without ImagePositionPatient or
  ImageOrientationPatient: the diagonal of the reader's spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rat.shared.io.base import ImageReadError, PathLike, diagonal_affine
from rat.shared.io.dicom import _dcmread, _dicom_spacing, _volume_spacing, open_dicom, sorted_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS): x and y negated."""

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between the direction cosines (ImageOrientationPatient) of two slices of one volume
(1e-4: 0.05 mm across a 500 mm field of view)."""

SPACING_RELATIVE = 1e-3
SPACING_ABSOLUTE = 0.01
"""How far (mm) a slice may lie from its evenly spaced place: SPACING_RELATIVE of the step, at least
SPACING_ABSOLUTE (positions are decimal strings in DICOM: micrometres of rounding)."""


def spacing_tolerance(step: float) -> float:
    """Largest distance (mm) of a slice from its evenly spaced place, for a slice step of ``step`` mm."""
    return max(SPACING_RELATIVE * abs(float(step)), SPACING_ABSOLUTE)


def dicom_file_geometry(path: Path) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """(affine, shape, whether a volume) of what the readers return for a DICOM file (see the module doc)."""
    src = open_dicom(path, header_only=True)
    frames = src.shape[2] if src.volume else 1
    return _dicom_affine(path, _dcmread(path, header_only=True), frames, src.spacing), src.shape, src.volume


def series_geometry(directory: Path) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """(affine, shape, True) of the volume the readers make of a DICOM-series folder (see the module doc)."""
    files, headers, _ = sorted_series(directory)
    shape = (int(headers[0].Rows), int(headers[0].Columns), len(files))
    return series_affine(directory, files, headers), shape, True


def series_affine(name: PathLike, files: list[Path], headers: list) -> np.ndarray:
    """RAS affine of the slices of one DICOM series stacked in the order given (that of
    :func:`rat.shared.io.dicom.sort_series`: ascending along the slice normal) as ``(H, W, N)``, as ITK
    reads the series (see the module doc). ``headers``: the files' data sets (pixels not needed).

    Raises ImageReadError naming ``name`` (the series) and the slice at fault when no single volume lies
    on every slice: several orientations, slices off the normal (gantry tilt), uneven spacing or gaps,
    positions on some slices only.
    """
    orientations = [_orientation(ds) for ds in headers]
    positions = [image_position(ds) for ds in headers]
    placed = [o is not None and p is not None for o, p in zip(orientations, positions, strict=True)]
    if not any(placed):
        return diagonal_affine(_volume_spacing(headers[0]))
    if not all(placed):
        k = placed.index(False)
        raise ImageReadError(name, f"{files[k].name} has no ImagePositionPatient or ImageOrientationPatient "
                                   "while other slices have: no single volume")
    orient = orientations[0]
    for f, other in zip(files, orientations, strict=True):
        turn = float(np.abs(other - orient).max())
        if turn > ORIENTATION_TOLERANCE:
            raise ImageReadError(name, f"{f.name} is oriented otherwise than {files[0].name} "
                                       f"(ImageOrientationPatient differs by {turn:.2g}): several "
                                       "orientations, no single volume")
    points = np.array(positions)
    normal = np.cross(orient[:3], orient[3:])
    along = (points - points[0]) @ normal
    off = np.linalg.norm(points - points[0] - np.outer(along, normal), axis=1)
    worst = int(np.argmax(off))
    if len(files) > 1 and off[worst] > spacing_tolerance(along[-1] / (len(files) - 1)):
        raise ImageReadError(name, f"{files[worst].name} lies {off[worst]:.3g} mm off the slice normal "
                                   f"through {files[0].name} (gantry tilt): ITK would stack the slices "
                                   "along the normal, so no volume lies on every slice")
    return _lps_affine(name, orient, _dicom_spacing(headers[0]), points, _thickness(headers[0]),
                       [f.name for f in files])


def _dicom_affine(path: Path, ds, frames: int, spacing) -> np.ndarray:
    orient, position = _orientation(ds), image_position(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames:
        orient = _orientation(per_frame[0]) if orient is None else orient
        positions = [image_position(item) for item in per_frame]
        if all(p is not None for p in positions) and orient is not None:
            return _lps_affine(path, orient, _dicom_spacing(ds), np.array(positions), _thickness(ds))
    if orient is None or position is None:
        return diagonal_affine(spacing)
    if frames == 1:
        return _lps_affine(path, orient, _dicom_spacing(ds), position[None], _thickness(ds))
    offsets = [float(v) for v in ds.get("GridFrameOffsetVector") or []]
    if len(offsets) != frames:
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        offsets = [k * step for k in range(frames)]
    normal = np.cross(orient[:3], orient[3:])
    positions = position + np.outer(np.array(offsets) - offsets[0], normal)
    return _lps_affine(path, orient, _dicom_spacing(ds), positions, _thickness(ds))


def _lps_affine(
    path: PathLike,
    orient: np.ndarray,
    spacing: tuple[float, float] | None,
    positions: np.ndarray,
    thickness: float,
    names: list[str] | None = None,
) -> np.ndarray:
    """RAS affine from IOP (6,), (row, col) spacing and the (N, 3) LPS slice positions (``names``: of the
    slices, for the error)."""
    row_dir, col_dir = orient[:3], orient[3:]
    d_row, d_col = spacing or (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = col_dir * d_row  # array axis 0: down the rows
    lps[:3, 1] = row_dir * d_col  # array axis 1: along a row
    lps[:3, 3] = positions[0]
    n = len(positions)
    if n == 1:
        lps[:3, 2] = np.cross(row_dir, col_dir) * thickness
        return LPS_TO_RAS @ lps
    step = (positions[-1] - positions[0]) / (n - 1)
    expected = positions[0] + np.outer(np.arange(n), step)
    off = np.linalg.norm(positions - expected, axis=1)
    worst = int(np.argmax(off))
    tolerance = spacing_tolerance(np.linalg.norm(step))
    if off[worst] > tolerance:
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        usual = float(np.median(steps))
        j = int(np.argmax(np.abs(steps - usual)))
        pair = f"slices {j} and {j + 1}" if names is None else f"{names[j]} and {names[j + 1]}"
        raise ImageReadError(
            path,
            f"slices are not evenly spaced ({pair} lie {steps[j]:.4g} mm apart, the median step is "
            f"{usual:.4g} mm, tolerance {tolerance:.2g} mm: a gap or uneven spacing): no single volume",
        )
    lps[:3, 2] = step
    return LPS_TO_RAS @ lps


def _orientation(ds) -> np.ndarray | None:
    """ImageOrientationPatient (6,) of a data set, frame item or shared group, or None."""
    orient = _floats(_lookup(ds, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
    if orient is None or not np.allclose(np.linalg.norm(orient.reshape(2, 3), axis=1), 1, atol=1e-3):
        return None
    return orient


def image_position(ds) -> np.ndarray | None:
    """ImagePositionPatient (3,) of a data set, frame item or shared group, or None."""
    return _floats(_lookup(ds, "ImagePositionPatient", "PlanePositionSequence"), 3)


def _lookup(ds, keyword: str, group: str):
    """``keyword`` of ``ds``, else of its ``group`` item (functional group macro), else of that
    group in its SharedFunctionalGroupsSequence; None when none holds it."""
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    for holder in (ds, _first(ds, group), _first(shared, group)):
        if holder is not None and holder.get(keyword) is not None:
            return holder.get(keyword)
    return None


def _first(ds, keyword: str):
    seq = None if ds is None else ds.get(keyword)
    return seq[0] if seq else None


def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):  # absent (None), empty or not numbers
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _thickness(ds) -> float:
    """Extent of one slice along its normal: SliceThickness, SpacingBetweenSlices, else 1 mm."""
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        value = _floats([_lookup(ds, keyword, "PixelMeasuresSequence")], 1)
        if value is not None and value[0] != 0:
            return abs(float(value[0]))
    return 1.0
