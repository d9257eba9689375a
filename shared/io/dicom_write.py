"""DICOM writing: a template's pixel data replaced, and restored slices as one derived series.

Values are in modality units (what :func:`rat.shared.io.read_image` returns, e.g. CT in HU) and
are stored in the source's representation: the source's RescaleSlope/RescaleIntercept undone,
MONOCHROME1 re-inverted, rounded and clipped to the stored range (BitsStored,
PixelRepresentation), written uncompressed (Explicit VR Little Endian) in the source's
BitsAllocated (8 or 16). Multi-frame, big-endian, palette and Modality-LUT-Sequence sources are
refused.

A derived series (:func:`write_derived_series`) is one new series in the source's study: every
file keeps the source's patient, study, FrameOfReferenceUID and geometry (ImagePositionPatient,
ImageOrientationPatient, PixelSpacing, SliceThickness, SliceLocation, InstanceNumber) and gets

- SeriesInstanceUID: new, shared by all files; SOPInstanceUID (= MediaStorageSOPInstanceUID) new
  per file. Both come from :func:`pydicom.uid.generate_uid` with entropy from the source series
  UID, the descriptions, the series number and the stored pixels (the SOP UID also from the
  source SOP UID): a rerun gives the same UIDs, another model or other pixels give new ones.
- ImageType DERIVED\\SECONDARY followed by the source's remaining values; SeriesDescription
  ``description``, DerivationDescription ``derivation``, a DerivationCodeSequence (DCM 110001
  "Image Processing"), a SourceImageSequence naming the source SOP instance (purpose DCM 121322
  "Source image for image processing operation"), SeriesNumber source + 1000 unless given.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rat.shared.errors import ParamError
from rat.shared.io.base import ImageReadError, PathLike, reading
from rat.shared.io.dicom import DICOM_SUFFIXES, _dcmread, _modality_span, _stored_range

if TYPE_CHECKING:
    from pydicom import Dataset

SERIES_NUMBER_OFFSET = 1000
"""A derived series is numbered source SeriesNumber + this unless ``series_number`` is given."""

_DERIVATION_CODE = ("110001", "DCM", "Image Processing")
_PURPOSE_CODE = ("121322", "DCM", "Source image for image processing operation")
_PRINTABLE = re.compile(r"[ -~]*")  # ASCII without control characters: the default repertoire


# ----------------------------------------------------------------------------- one file


def write_from_template(tmp: Path, out: Path, arr: np.ndarray, like: Path) -> None:
    """``write_image``'s DICOM path: ``like`` with its pixels replaced by ``arr``, saved as ``tmp``.

    ``arr`` is ``(H, W)`` (gray templates) or ``(H, W, 3)`` (RGB templates), in modality units;
    its shape may differ from the template's. The new SOPInstanceUID comes from the template UID,
    ``out``'s name and the stored pixels.
    """
    from pydicom.uid import generate_uid

    ds = _template(like)
    stored, photometric = _encode(ds, arr, out, like)
    template_uid = str(ds.get("SOPInstanceUID", ""))
    _set_pixels(ds, stored, photometric)
    uid = generate_uid(
        entropy_srcs=[template_uid, out.name, hashlib.sha256(stored.tobytes()).hexdigest()]
    )
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(tmp, enforce_file_format=True)


def _template(like: Path):
    """The template read in full, refused with a one-line reason when it cannot be rewritten."""
    ds = _dcmread(like, header_only=False)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageReadError(like, "multi-frame DICOM templates are not supported")
    if "ModalityLUTSequence" in ds:
        raise ImageReadError(like, "templates with a Modality LUT Sequence are not supported")
    if "PixelData" not in ds:
        raise ImageReadError(like, "template has no (integer) pixel data")
    if ds.original_encoding[1] is False:  # pydicom would not byte-swap OW/OF/... elements
        raise ImageReadError(like, "big-endian templates are not supported (retired syntax)")
    bits_allocated = int(ds.get("BitsAllocated", 16))
    if bits_allocated not in (8, 16):
        raise ImageReadError(like, f"templates with BitsAllocated {bits_allocated} not supported")
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        raise ImageReadError(like, "PALETTE COLOR templates are not supported")
    return ds


def _encode(ds, arr: np.ndarray, out: Path, like: Path) -> tuple[np.ndarray, str]:
    """Modality values -> stored values in the template's container dtype, and the photometric."""
    bits_allocated = int(ds.get("BitsAllocated", 16))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        if arr.ndim != 2:
            raise ImageReadError(out, f"gray template {like.name} needs an (H, W) array")
        values = arr.astype(np.float64)
        if photometric == "MONOCHROME1":  # undo the reader's inversion
            lo, hi = _modality_span(ds)
            values = (lo + hi) - values
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        values = (values - intercept) / slope
        photometric = (
            photometric if photometric in ("MONOCHROME1", "MONOCHROME2") else "MONOCHROME2"
        )
    else:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageReadError(out, f"colour template {like.name} needs an (H, W, 3) array")
        values, photometric = arr.astype(np.float64), "RGB"
    lo, hi = _stored_range(ds)
    container = np.dtype(f"{'i' if lo < 0 else 'u'}{bits_allocated // 8}")
    return np.clip(np.rint(values), lo, hi).astype(container), photometric


def _set_pixels(ds, stored: np.ndarray, photometric: str) -> None:
    """Replace the pixel data, uncompressed Explicit VR Little Endian (SOP UID left as it is)."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            del ds[keyword]
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    ds.set_pixel_data(stored, photometric, bits_stored, generate_instance_uid=False)


# ----------------------------------------------------------------------------- derived series


class _Slice(NamedTuple):
    source: Path
    ds: Dataset  # the source's data set, its pixel data dropped
    stored: np.ndarray  # the restored values encoded, (H, W[, 3])
    photometric: str


def write_derived_series(
    out_dir: PathLike,
    sources: Sequence[PathLike],
    arrays: Sequence[np.ndarray],
    *,
    description: str,
    derivation: str | None = None,
    series_number: int | None = None,
) -> list[Path]:
    """Write restored slices of one source series as one new derived series in ``out_dir``.

    ``sources[i]`` is a source DICOM file (one file is a one-file series) and ``arrays[i]`` its
    restored image in modality units, of the shape ``read_image(sources[i])`` returns: ``(H, W)``
    (``(H, W, 3)`` for RGB). For a series folder, :func:`rat.shared.io.dicom_slice_files` lists
    the files in the order of ``read_volume``'s last axis. ``description`` (SeriesDescription, at
    most 64 printable ASCII characters) and ``derivation`` (DerivationDescription, at most 1024;
    default ``description``) should name the model and its checkpoint hash. Each output file is
    named after its source (suffix ``.dcm``). A new ``out_dir`` is written under a temporary
    name and renamed when complete; in an existing one each file is written to a temporary name
    and moved into place. ``out_dir`` should hold this series only and must not be the source
    folder.

    Returns the written paths, in the order of ``sources``. Raises ImageReadError (one line
    naming the file) for bad input and ParamError for a bad description or series number.
    """
    from pydicom.uid import generate_uid

    derivation = description if derivation is None else derivation
    _check_text("description", description, 64)
    _check_text("derivation", derivation, 1024)
    if series_number is not None and not 0 <= series_number < 2**31:
        raise ParamError("series_number", f"{series_number} is not in 0..2**31-1 (IS)")
    out = Path(out_dir)
    if len(sources) != len(arrays) or not sources:
        raise ImageReadError(out, f"{len(sources)} source files for {len(arrays)} arrays")
    slices = [_prepare(Path(s), np.asarray(a), out) for s, a in zip(sources, arrays, strict=True)]
    _check_one_series(out, slices)
    if series_number is None:
        series_number = int(slices[0].ds.get("SeriesNumber", 0) or 0) + SERIES_NUMBER_OFFSET
    series_uid = generate_uid(
        entropy_srcs=[
            str(slices[0].ds.SeriesInstanceUID), description, derivation, str(series_number),
            *(hashlib.sha256(s.stored.tobytes()).hexdigest() for s in slices),
        ]
    )
    # a new folder appears whole (staged, then renamed); in an existing one each file is replaced
    staging = out if out.exists() else out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with reading(out):
        try:
            staging.mkdir(parents=True, exist_ok=True)
            for piece in slices:
                uid = generate_uid(entropy_srcs=[series_uid, str(piece.ds.SOPInstanceUID)])
                _derive(piece.ds, series_uid, uid, series_number, description, derivation)
                _set_pixels(piece.ds, piece.stored, piece.photometric)
                target = staging / _output_name(piece.source)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                try:
                    piece.ds.save_as(tmp, enforce_file_format=True)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            if staging != out:
                os.replace(staging, out)
        finally:
            if staging != out:
                shutil.rmtree(staging, ignore_errors=True)
    return [out / _output_name(piece.source) for piece in slices]


def _check_text(param: str, text: str, limit: int) -> None:
    if not text.strip() or len(text) > limit or not _PRINTABLE.fullmatch(text):
        raise ParamError(param, f"needs 1..{limit} printable ASCII characters, got {text!r}")
    if param == "description" and "\\" in text:
        raise ParamError(param, "a backslash would split SeriesDescription into several values")


def _prepare(src: Path, arr: np.ndarray, out: Path) -> _Slice:
    """Read one source, check its restored array, and encode it (pixel data dropped meanwhile)."""
    with reading(src, "dicom"):
        ds = _template(src)
        colour = int(ds.get("SamplesPerPixel", 1) or 1) > 1
        expected = (int(ds.Rows), int(ds.Columns)) + ((3,) if colour else ())
        if arr.shape != expected:
            raise ImageReadError(src, f"restored array of shape {arr.shape} != slice {expected}")
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ImageReadError(src, "restored array holds NaN, infinite or non-numeric values")
        if "SOPInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
            raise ImageReadError(src, "source has no SOPInstanceUID or SeriesInstanceUID")
        stored, photometric = _encode(ds, arr, out, src)
        del ds.PixelData
        return _Slice(src, ds, stored, photometric)


def _check_one_series(out: Path, slices: list[_Slice]) -> None:
    """All sources from one series, each once, none in (or overwritten by) ``out``."""
    series = {str(piece.ds.SeriesInstanceUID) for piece in slices}
    if len(series) > 1:
        raise ImageReadError(slices[0].source, f"sources come from {len(series)} different series")
    seen: dict[str, Path] = {}
    for src, ds, _, _ in slices:
        for key in (str(ds.SOPInstanceUID), _output_name(src)):
            if key in seen:
                raise ImageReadError(src, f"same SOP instance or output name as {seen[key]}")
            seen[key] = src
        if out.resolve() == src.parent.resolve():
            raise ImageReadError(out, "is the source folder: write the derived series elsewhere")


def _output_name(src: Path) -> str:
    stem = src.name[: -len(src.suffix)] if src.suffix.lower() in DICOM_SUFFIXES else src.name
    return f"{stem}.dcm"


def _derive(ds, series_uid: str, uid: str, number: int, description: str, derivation: str) -> None:
    """Turn a source data set (pixels not yet replaced) into a member of the derived series."""
    from pydicom.dataset import Dataset, FileMetaDataset

    source_class, source_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    image_type = list(ds.get("ImageType") or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, uid
    ds.SeriesNumber = number
    ds.SeriesDescription, ds.DerivationDescription = description, derivation
    ds.DerivationCodeSequence = [_code(*_DERIVATION_CODE)]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_class
    reference.ReferencedSOPInstanceUID = source_uid
    reference.PurposeOfReferenceCodeSequence = [_code(*_PURPOSE_CODE)]
    ds.SourceImageSequence = [reference]
    meta = FileMetaDataset()  # fresh: pydicom fills in its own implementation UID and version
    meta.MediaStorageSOPClassUID = source_class
    meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta = meta


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
