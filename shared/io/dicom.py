"""DICOM (pydicom): single files, multi-frame files, series directories, and writing.

- Reading: modality LUT applied (rescale slope/intercept: CT in HU), MONOCHROME1 inverted so that
  high values are bright, palette colour becomes RGB, spacing from PixelSpacing. A multi-frame file
  is a volume of its frames in file order. Compressed transfer syntaxes need a decoder plugin
  (``pip install rat-restore[dicom]``); RLE Lossless decodes natively. Truncated files, missing pixel data
  and undecodable transfer syntaxes are refused with a one-line reason before decoding.
- Series: a directory of DICOM files (``*.dcm``, ``*.dicom``, ``*.ima``; or, when there are none,
  every file with the DICM preamble) sorted along the slice normal by ImagePositionPatient
  (fallback InstanceNumber, then file name), stacked to ``(H, W, N)``.
- Writing: pixel data of a template DICOM replaced (see :func:`rat.shared.io.write_image`); the
  encoding and derived series live in :mod:`rat.shared.io.dicom_write`.

Internal to :mod:`rat.shared.io`, which dispatches here by format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rat.shared.errors import one_line
from rat.shared.io.base import ImageReadError, PathLike, Source, reading

#: DICOM file names end in these (the first is the one written); other files are DICOM by their preamble.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def has_preamble(head: bytes) -> bool:
    """Whether the first bytes of a file are a DICOM file's (PS3.10): a 128-byte preamble, then "DICM"."""
    return head[128:132] == b"DICM"


# ----------------------------------------------------------------------------- reading


def _dcmread(path: Path, *, header_only: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=header_only)
        except InvalidDicomError:  # no preamble: try as a raw data set
            ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise ImageReadError(path, "not a DICOM file (no DICM preamble)") from None
        truncation = _truncation(ds)
    except ImageReadError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:  # pydicom raises many kinds on damaged files
        raise ImageReadError(
            path, f"corrupt or truncated DICOM ({type(err).__name__}: {one_line(err)[:120]})"
        ) from None
    if truncation:
        raise ImageReadError(path, f"corrupt or truncated DICOM ({truncation})")
    return ds


def _truncation(ds) -> str | None:
    """Why a data set read to the end of its file looks cut short, or None.

    pydicom stops quietly at the end of a file: a cut inside the last element leaves that element
    shorter than its declared length; a cut inside the file meta leaves an empty data set.
    """
    if len(ds) == 0:
        return "no data elements after the file meta"
    last = next(reversed(ds.keys()))
    raw = ds.get_item(last)
    length, value = getattr(raw, "length", None), getattr(raw, "value", None)
    if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) < length:
        name = getattr(raw, "keyword", None) or ds[last].keyword or "element"
        return f"{name} {last} holds {len(value)} of {length} bytes"
    return None


def _stored_dtype(ds) -> np.dtype:
    """numpy dtype of the stored pixels from the header (BitsAllocated, PixelRepresentation)."""
    if "FloatPixelData" in ds:
        return np.dtype("float32")
    if "DoubleFloatPixelData" in ds:
        return np.dtype("float64")
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if bits == 1:
        return np.dtype("uint8")
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"{'i' if signed else 'u'}{max(bits, 8) // 8}")


def _stored_range(ds) -> tuple[int, int]:
    """(min, max) a stored value can take given BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _dicom_spacing(ds) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None:
        try:
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            return None
    try:
        return (float(spacing[0]), float(spacing[1]))
    except (TypeError, ValueError, IndexError):
        return None


def _volume_spacing(ds, step: float | None = None) -> tuple[float, float, float] | None:
    """(row, col, slice) spacing in mm; the slice step is ``step`` when given, else the header's
    SpacingBetweenSlices, else its SliceThickness. None when any of them is unknown."""
    spacing = _dicom_spacing(ds)
    if step is None:
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    return None if spacing is None or not step else spacing + (abs(float(step)),)


def _modality_span(ds) -> tuple[float, float]:
    """Modality-LUT values of the lowest and highest storable values (for MONOCHROME1 inversion)."""
    from pydicom.pixels import apply_modality_lut

    lo, hi = _stored_range(ds)
    ends = apply_modality_lut(np.array([lo, hi], dtype=np.float64), ds)
    return float(ends[0]), float(ends[1])


def _check_decodable(path: Path, ds) -> None:
    """Fail early, with a one-line reason, when the pixel data cannot be decoded."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(path, "no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(path, "corrupt DICOM (pixel data without Rows/Columns)")
    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if tsyntax is None:
        return  # raw data set read with force=True: pydicom infers the encoding
    tsyntax = UID(tsyntax)
    if not tsyntax.is_transfer_syntax:
        raise ImageReadError(path, f"unknown transfer syntax {tsyntax}")
    if tsyntax.is_compressed:
        try:
            available = get_decoder(tsyntax).is_available
        except NotImplementedError:
            raise ImageReadError(path, f"unsupported transfer syntax {tsyntax.name}") from None
        if not available:
            reason = f"compressed transfer syntax {tsyntax.name} needs a decoder"
            raise ImageReadError(path, f"{reason}: pip install rat-restore[dicom]")
    elif "PixelData" in ds:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("BitsAllocated", 16) or 16)
        expected = (int(ds.Rows) * int(ds.Columns) * frames * bits + 7) // 8
        got = len(ds.PixelData)
        if got < expected:
            raise ImageReadError(
                path, f"corrupt or truncated DICOM (pixel data holds {got} of {expected} bytes)"
            )


def _dicom_values(path: Path, ds, stored: np.ndarray) -> np.ndarray:
    """Stored pixels -> float32 values: palette -> RGB, modality LUT, MONOCHROME1 inverted."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        return apply_color_lut(stored, ds).astype(np.float32)
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return stored.astype(np.float32)
    values = apply_modality_lut(stored, ds)
    if photometric == "MONOCHROME1":
        lo, hi = _modality_span(ds)
        values = (lo + hi) - np.asarray(values, dtype=np.float64)
    return np.asarray(values, dtype=np.float32)


def _dicom_pixels(path: Path, ds, index: int | None) -> np.ndarray:
    """Decode all frames (index None) or one frame of a read data set to float32 values."""
    from pydicom.pixels import pixel_array

    _check_decodable(path, ds)
    try:
        stored = pixel_array(ds, index=index)
    except ImageReadError:
        raise
    except Exception as err:
        tsyntax = ds.file_meta.get("TransferSyntaxUID")
        kind = getattr(tsyntax, "name", "DICOM")
        reason = one_line(err)[:160]
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            raise ImageReadError(path, f"cannot decode {kind} pixel data ({reason})") from None
        raise ImageReadError(path, f"corrupt or truncated DICOM ({reason})") from None
    return _dicom_values(path, ds, stored)


def open_dicom(path: Path, *, header_only: bool) -> Source:
    ds = _dcmread(path, header_only=header_only)
    if not header_only:
        _check_decodable(path, ds)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise ImageReadError(path, "no pixel data (no Rows/Columns)") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = 3 if photometric == "PALETTE COLOR" else int(ds.get("SamplesPerPixel", 1) or 1)
    colour = (samples,) if samples > 1 else ()
    modality = str(ds.get("Modality", "")) or None
    dtype = _stored_dtype(ds).name
    if frames == 1:
        return Source(
            format="dicom",
            shape=(rows, cols) + colour,
            volume=False,
            source_dtype=dtype,
            spacing=_dicom_spacing(ds),
            modality=modality,
            load=lambda: _dicom_pixels(path, ds, None),
        )

    def load() -> np.ndarray:  # (frames, H, W[, C]) -> (H, W, frames[, C])
        return np.ascontiguousarray(np.moveaxis(_dicom_pixels(path, ds, None), 0, 2))

    return Source(
        format="dicom",
        shape=(rows, cols, frames) + colour,
        volume=True,
        source_dtype=dtype,
        spacing=_volume_spacing(ds),
        modality=modality,
        load=load,
        load_slice=lambda i: _dicom_pixels(path, ds, i),
    )


#: SOP Class of a DICOMDIR (the directory of a DICOM medium, PS3.10): a DICOM file that is no image.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def not_an_image(ds) -> str | None:
    """Why a DICOM data set (its header) holds no image, in a few words, or None for an image: a DICOMDIR,
    or a data set without Rows/Columns (structured reports, presentation states, other documents)."""
    sop = str(ds.file_meta.get("MediaStorageSOPClassUID", "") if hasattr(ds, "file_meta") else "") or \
        str(ds.get("SOPClassUID", ""))
    if sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "a DICOMDIR (the directory of a DICOM medium), not an image"
    if "Rows" in ds and "Columns" in ds:
        return None
    from pydicom.uid import UID

    kind = UID(sop).name if sop else ""
    return f"no image in it ({kind or 'no pixel data'})"


def dicom_survey(path: Path) -> tuple[str | None, str]:
    """(:func:`not_an_image` of a DICOM file, its SeriesInstanceUID or "") from its header; ImageReadError
    when it cannot be read as DICOM."""
    ds = _dcmread(Path(path), header_only=True)
    return not_an_image(ds), str(ds.get("SeriesInstanceUID", "") or "")


# ----------------------------------------------------------------------------- series


def series_files(directory: Path) -> list[Path]:
    """Member files of a DICOM-series directory (not recursive), sorted by name."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and not f.name.startswith("."))
    members = [f for f in files if f.suffix.lower() in DICOM_SUFFIXES]
    if not members:
        members = [f for f in files if _has_dicm(f)]
    if not members:
        named = ", ".join(f"*{s}" for s in DICOM_SUFFIXES)
        raise ImageReadError(directory, f"directory holds no DICOM files ({named})")
    return members


def _has_dicm(path: Path) -> bool:
    with open(path, "rb") as fh:
        return has_preamble(fh.read(132))


def sorted_series(directory: Path) -> tuple[list[Path], list, float | None]:
    """Member files of a series directory and their headers, in the slice order of
    :func:`open_series` (along the slice normal), and the median slice step in mm (or None).

    Files that hold no image (a DICOMDIR, structured reports: :func:`not_an_image`) are no slices. Checks
    what the reader checks: equal Rows/Columns/SamplesPerPixel, one SeriesInstanceUID, no two slices at one
    position.
    """
    read = [(f, _dcmread(f, header_only=True)) for f in series_files(directory)]
    images = [(f, ds) for f, ds in read if not_an_image(ds) is None]
    if not images:
        raise ImageReadError(directory, "directory holds no DICOM images")
    return sort_series(directory, [f for f, _ in images], [ds for _, ds in images])


def sort_series(name: PathLike, files: list[Path], headers: list) -> tuple[list[Path], list, float | None]:
    """:func:`sorted_series` for given member files and their headers; errors name ``name`` (the series)
    or the file at fault."""
    first = headers[0]
    key = ("Rows", "Columns", "SamplesPerPixel")
    ref = tuple(first.get(k) for k in key)
    for f, ds in zip(files, headers, strict=True):
        geometry = tuple(ds.get(k) for k in key)
        if geometry != ref:
            raise ImageReadError(name, f"{f.name}: slice geometry {geometry} differs from "
                                       f"{files[0].name} {ref}")
    if ref[0] is None or ref[1] is None:
        raise ImageReadError(files[0], "no pixel data (no Rows/Columns)")
    if (ref[2] or 1) != 1:
        raise ImageReadError(name, "colour DICOM series are not supported")
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in headers}
    if len(series_uids) > 1:
        raise ImageReadError(name, f"directory mixes {len(series_uids)} DICOM series")
    order, step = _series_order(name, files, headers)
    return [files[i] for i in order], [headers[i] for i in order], step


def dicom_slice_files(path: PathLike) -> list[Path]:
    """The DICOM files behind the slices of ``read_volume(path)`` (its last axis), in that order.

    A series directory gives its members sorted along the slice normal (see
    :func:`sorted_series`); a single DICOM file gives ``[path]``. Raises ImageReadError.
    """
    p = Path(path)
    with reading(p, "dicom"):
        if p.is_dir():
            return sorted_series(p)[0]
        _dcmread(p, header_only=True)
        return [p]


def open_series(directory: Path) -> Source:
    files, headers, step = sorted_series(directory)
    first = headers[0]
    vol_spacing = _volume_spacing(first, step)
    rows, cols = int(first.Rows), int(first.Columns)
    modality = str(first.get("Modality", "")) or None

    def load_slice(i: int) -> np.ndarray:
        ds = _dcmread(files[i], header_only=False)
        arr = _dicom_pixels(files[i], ds, None)
        if arr.shape != (rows, cols):
            raise ImageReadError(files[i], f"pixel data of shape {arr.shape} != ({rows}, {cols})")
        return arr

    def load() -> np.ndarray:
        volume = np.empty((rows, cols, len(files)), dtype=np.float32)
        for i in range(len(files)):
            volume[:, :, i] = load_slice(i)
        return volume

    return Source(
        format="dicom-series",
        shape=(rows, cols, len(files)),
        volume=True,
        source_dtype=_stored_dtype(first).name,
        spacing=vol_spacing,
        modality=modality,
        load=load,
        load_slice=load_slice,
    )


def _series_order(
    name: PathLike, files: list[Path], headers: list
) -> tuple[list[int], float | None]:
    """Slice order along the normal of ImageOrientationPatient (else InstanceNumber, else name).

    Returns the order and the median slice step in mm (None without positions).
    """
    try:
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
        orient = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        positions = None
    if positions is not None and positions.shape == (len(files), 3) and orient.shape == (6,):
        along = positions @ np.cross(orient[:3], orient[3:])
        order = np.argsort(along, kind="stable")
        steps = np.diff(along[order])
        if len(files) > 1 and np.any(np.isclose(steps, 0.0)):
            dup = int(np.flatnonzero(np.isclose(steps, 0.0))[0])
            a, b = files[order[dup]].name, files[order[dup + 1]].name
            raise ImageReadError(name, f"slices {a} and {b} share one position")
        step = float(np.median(steps)) if len(files) > 1 else None
        return order.tolist(), step
    numbers = [ds.get("InstanceNumber") for ds in headers]
    if all(n is not None for n in numbers):
        return np.argsort(np.array(numbers, dtype=np.int64), kind="stable").tolist(), None
    return list(range(len(files))), None
