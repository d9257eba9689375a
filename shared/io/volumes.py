"""Volumes: NIfTI (nibabel, ``.nii``/``.nii.gz``) and taking a 2-D slice out of any volume.

NIfTI scaling is applied and voxel axes are kept as stored; spacing comes from the header zooms
(converted to mm). Volumes of every format are ``(H, W, N)``; :func:`take_slice` cuts one along
any spatial axis, reading only that slice when the format can (NIfTI, DICOM) and it is on N.
:func:`write_nifti` writes an array with its affine (see :mod:`rat.shared.io.geometry`).

Internal to :mod:`rat.shared.io`, which dispatches here by format.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rat.shared.errors import one_line
from rat.shared.io.base import ImageReadError, PathLike, Source, reading


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

#: NIfTI file names end in these (the first is the one written where a name is made).
NIFTI_SUFFIXES = (".nii.gz", ".nii")
_MM_PER_UNIT = {"meter": 1000.0, "micron": 1e-3}  # NIfTI spatial units other than mm
_DEFAULT_CODE = 1  # qform/sform code "scanner" (as dcm2niix writes) when no template says


def nifti_affine(img) -> np.ndarray:
    """A loaded nibabel image's affine (sform, else qform, else from the zooms) in mm."""
    affine = np.array(img.affine, dtype=np.float64)
    affine[:3] *= _MM_PER_UNIT.get(img.header.get_xyzt_units()[0], 1.0)
    return affine


def nifti_geometry(path: Path) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """(affine, shape, whether a volume) of what the readers return for a NIfTI file: its own affine
    (:func:`nifti_affine`)."""
    import nibabel as nib

    src = open_nifti(path)
    return nifti_affine(nib.load(path)), src.shape, src.volume


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
    scale = _MM_PER_UNIT.get(header.get_xyzt_units()[0], 1.0)
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


def write_nifti(
    path: PathLike,
    array: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    like: PathLike | None = None,
) -> None:
    """Write an ``(H, W)`` or ``(H, W, N)`` array as NIfTI-1 (``.nii`` or ``.nii.gz``).

    Voxel ``(i, j, k)`` is ``array[i, j, k]``: the axes are those ``read_volume`` returns, so
    ``read_volume`` of the file gives the array back (``read_image`` for 2-D). ``affine`` is the
    4x4 RAS affine in mm of :func:`rat.shared.io.image_affine` / ``volume_affine`` (for a 2-D
    array, of the array as ``(H, W, 1)``); None takes ``like``'s (then the shapes must match).

    Data type: integer and bool arrays are label maps, written as uint16 (ITK-SNAP's label type)
    when every value fits 0..65535, else uint32 (int16/int32 when negative), with intent "label".
    Float arrays keep the on-disk type of ``like`` with its scl_slope/scl_inter when every
    value, rounded, fits it (a float ``like`` type is kept as it is); otherwise float32.

    Header: ``like``'s spatial and time units (xyzt_units; the affine is stored in that unit)
    and qform/sform codes (when either is set); without ``like``, mm and seconds and both codes
    1 (scanner). The sform holds the affine exactly; the qform its rigid part (NIfTI cannot
    store shears there). Written to a temporary name, then moved into place. Raises
    ImageReadError (one line naming the file).
    """
    out = Path(path)
    if not out.name.lower().endswith(NIFTI_SUFFIXES):
        raise ImageReadError(out, f"a NIfTI file name ends in {' or '.join(reversed(NIFTI_SUFFIXES))}")
    ref = None if like is None else _nifti_template(Path(like))
    with reading(out):
        img = _nifti_image(out, np.asarray(array), affine, ref, like)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{os.getpid()}.tmp.{out.name}")    # the suffix tells nibabel the format
        try:
            img.to_filename(tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


def write_nifti_like(tmp: Path, out: Path, array: np.ndarray, like: Path | None) -> None:
    """:func:`rat.shared.io.write_image`'s NIfTI writer: an ``(H, W)`` image with the affine, units and
    on-disk type of the NIfTI file ``like`` (see :func:`write_nifti`), saved as ``tmp``."""
    if like is None:
        raise ImageReadError(out, "writing a NIfTI image needs like=<NIfTI file> (or write_nifti with an "
                                  "affine)")
    _nifti_image(out, array, None, _nifti_template(Path(like)), like).to_filename(tmp)


def _nifti_image(out: Path, arr: np.ndarray, affine: np.ndarray | None, ref, like: PathLike | None):
    """The nibabel image :func:`write_nifti` writes (see there); ImageReadError naming ``out``."""
    import nibabel as nib

    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ImageReadError(out, f"array of shape {arr.shape} is not a non-empty (H, W[, N])")
    if affine is None:
        if ref is None:
            raise ImageReadError(out, "write_nifti needs an affine or like=<NIfTI file>")
        if ref.shape[: arr.ndim] != arr.shape or any(d != 1 for d in ref.shape[arr.ndim :]):
            raise ImageReadError(out, f"array {arr.shape} does not match {like} {ref.shape}")
        affine = nifti_affine(ref)
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ImageReadError(out, f"affine of shape {matrix.shape} is not a finite 4x4")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ImageReadError(out, "affine is singular (its 3x3 part has no inverse)")
    data, slope, inter, label = _nifti_data(out, arr, ref)
    units, codes = ("mm", "sec"), (_DEFAULT_CODE, _DEFAULT_CODE)
    if ref is not None:
        units = ref.header.get_xyzt_units()
        ref_codes = (int(ref.header["qform_code"]), int(ref.header["sform_code"]))
        codes = ref_codes if any(ref_codes) else codes
    matrix[:3] /= _MM_PER_UNIT.get(units[0], 1.0)
    img = nib.Nifti1Image(data, None)
    img.set_qform(matrix, code=codes[0])
    img.set_sform(matrix, code=codes[1])
    img.header.set_xyzt_units(*units)
    if label:
        img.header.set_intent("label")
    img.header.set_slope_inter(slope, inter)  # after construction, which resets scaling
    return img


def _nifti_template(like: Path):
    import nibabel as nib

    if not like.name.lower().endswith(NIFTI_SUFFIXES):
        raise ImageReadError(like, f"like= must be a NIfTI file ({' or '.join(reversed(NIFTI_SUFFIXES))})")
    with reading(like, "nifti"):
        return nib.load(like)


def _nifti_data(out: Path, arr: np.ndarray, ref) -> tuple[np.ndarray, float, float, bool]:
    """The array in its on-disk type, the slope and intercept, and whether it is a label map."""
    if arr.dtype.kind in "biu":
        lo, hi = int(arr.min()), int(arr.max())
        for name in ("uint16", "uint32") if lo >= 0 else ("int16", "int32"):
            info = np.iinfo(name)
            if info.min <= lo and hi <= info.max:
                return arr.astype(name), 1.0, 0.0, True
        raise ImageReadError(out, f"label values {lo}..{hi} do not fit uint32 or int32")
    if arr.dtype.kind != "f":
        raise ImageReadError(out, f"cannot write a {arr.dtype} array as NIfTI")
    disk = None if ref is None else ref.get_data_dtype()
    if disk is not None and disk.kind == "f" and disk.itemsize >= 4:
        return arr.astype(disk), 1.0, 0.0, False
    if disk is not None and disk.kind in "iu":
        slope, inter = float(ref.dataobj.slope), float(ref.dataobj.inter)
        with np.errstate(invalid="ignore"):
            stored = np.rint((arr.astype(np.float64) - inter) / slope)
        info = np.iinfo(disk)
        if np.isfinite(stored).all() and info.min <= stored.min() and stored.max() <= info.max:
            return stored.astype(disk), slope, inter, False
    return arr.astype(np.float32), 1.0, 0.0, False
