"""Medical image readers and writer: PNG, JPEG, TIFF, DICOM (file or series directory), NIfTI.

Every reader returns a float32 array in the image's own units (8/16-bit intensities kept as they
are, CT in Hounsfield units) plus an :class:`ImageMeta`. 2-D images are ``(H, W)`` (gray) or
``(H, W, C)`` (colour); volumes are ``(H, W, N)`` (``(H, W, N, C)`` for colour multi-frame DICOM).

- PNG/JPEG (Pillow): 8 and 16 bit; palette and RGBA become RGB, gray+alpha becomes gray.
- TIFF (tifffile): one page per 2-D image; a multi-page file needs ``page=`` (``read_volume``
  stacks equal-shaped pages along the last axis).
- DICOM (pydicom): modality LUT applied (rescale slope/intercept: CT in HU), MONOCHROME1 inverted
  so that high values are bright, spacing from PixelSpacing. A multi-frame file is a volume of its
  frames in file order. Compressed transfer syntaxes need a decoder plugin (``pip install
  rat[dicom]``); RLE Lossless decodes natively.
- DICOM series: a directory of DICOM files (``*.dcm``, ``*.dicom``, ``*.ima``; or, when there are
  none, every file with the DICM preamble) sorted along the slice normal by ImagePositionPatient
  (fallback InstanceNumber, then file name), stacked to ``(H, W, N)``.
- NIfTI (nibabel, ``.nii``/``.nii.gz``): scaling applied, voxel axes as stored.

Headers are checked against ``max_pixels`` before any pixel is decoded (for volumes the whole
volume counts). Every failure is an :class:`ImageReadError` whose message is one line
``"<path>: <reason>"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS: int = 400_000_000
"""Largest number of pixels (voxels for volumes) a reader decodes unless told otherwise."""

PathLike = str | os.PathLike

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_SUFFIX_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    **dict.fromkeys(_DICOM_SUFFIXES, "dicom"),
}
_HASH_BLOCK = 1 << 20
_MAX_REASON = 240


def _one_line(text: object) -> str:
    """Collapse whitespace (newlines included) and cap the length of an error reason."""
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


class ImageReadError(ValueError):
    """An image could not be read (or written); ``str(err)`` is one line ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # keep it picklable (dask ships exceptions between processes)
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class ImageMeta:
    """What a reader knows about the array it returned.

    ``spacing`` has one entry per spatial axis of the returned array (mm; (row, col) for 2-D,
    (row, col, slice) for volumes) and is None when any of them is unknown.
    """

    path: str
    format: str  # "png" | "jpeg" | "tiff" | "dicom" | "nifti" | "dicom-series"
    source_dtype: str  # numpy dtype name of the stored pixels
    value_range: tuple[float, float]  # (min, max) of the returned float array
    spacing: tuple[float, ...] | None
    modality: str | None
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Source:
    """A file opened from its header only; ``load``/``load_slice`` decode pixels on demand."""

    format: str
    shape: tuple[int, ...]  # (H, W[, C]) for images, (H, W, N[, C]) for volumes
    volume: bool
    source_dtype: str
    spacing: tuple[float, ...] | None  # one per spatial axis, or None
    modality: str | None
    load: Callable[[], np.ndarray]  # the whole image or volume
    load_slice: Callable[[int], np.ndarray] | None = None  # fast path: slice along the last axis

    @property
    def pixels(self) -> int:
        spatial = self.shape[:3] if self.volume else self.shape[:2]
        return int(np.prod(spatial, dtype=np.int64))


# ----------------------------------------------------------------------------- public API


def read_image(
    path: PathLike,
    *,
    page: int | None = None,
    index: int | None = None,
    axis: int = -1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, ImageMeta]:
    """Read one 2-D image as float32 ``(H, W)`` or ``(H, W, C)``.

    ``page`` selects a TIFF page (a multi-page TIFF without ``page`` is an error). ``index`` and
    ``axis`` select a 2-D slice of a volume (NIfTI, DICOM-series directory, multi-frame DICOM);
    ``axis`` counts the spatial axes ``(H, W, N)``, so the default -1 takes slice ``index`` of N.
    A volume without ``index`` is an error. Raises ImageReadError (one line naming the file).
    """
    with _reading(path):
        src = _open(path, page=page)
        _check_pixels(path, src, max_pixels)
        if not src.volume:
            if index is not None:
                raise ImageReadError(
                    path, f"index={index} given but this is a 2-D image of shape {src.shape}"
                )
            array, spacing = src.load(), src.spacing
        else:
            if index is None:
                raise ImageReadError(
                    path, f"volume of shape {src.shape}: pass index (and axis) to pick a slice"
                )
            ax = _spatial_axis(path, axis)
            n = src.shape[ax]
            if not -n <= index < n:
                raise ImageReadError(
                    path, f"index {index} out of range for {n} slices on axis {ax}"
                )
            index %= n
            if ax == 2 and src.load_slice is not None:
                array = src.load_slice(index)
            else:
                array = np.ascontiguousarray(np.take(src.load(), index, axis=ax))
            spacing = None if src.spacing is None else tuple(np.delete(src.spacing, ax).tolist())
        return array, _meta(path, src, array, spacing)


def read_volume(
    path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read a whole volume as float32 ``(H, W, N)`` (``(H, W, N, C)`` for colour frames).

    Volumes: NIfTI, a DICOM-series directory, a multi-frame DICOM, a multi-page TIFF (pages stacked
    along the last axis). Raises ImageReadError for 2-D images.
    """
    with _reading(path):
        src = _open(path, page=None, tiff_stack=True)
        if not src.volume:
            raise ImageReadError(
                path, f"not a volume (2-D image of shape {src.shape}); use read_image"
            )
        _check_pixels(path, src, max_pixels)
        array = src.load()
        return array, _meta(path, src, array, src.spacing)


def volume_shape(path: PathLike) -> tuple[int, ...]:
    """Shape from headers only (no pixel decoding).

    Volumes (see :func:`read_volume`, multi-page TIFF included): the shape ``read_volume`` returns.
    2-D images: the shape ``read_image`` returns.
    """
    with _reading(path):
        return _open(path, page=None, tiff_stack=True, header_only=True).shape


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB blocks.

    For a DICOM-series directory: SHA-256 over its sorted member files, each contributing
    ``name + "\\0" + sha256_hex(member) + "\\n"`` (UTF-8): renaming or changing a slice changes it.
    """
    with _reading(path):
        p = Path(path)
        if p.is_dir():
            members = _series_files(p)
            lines = b"".join(
                f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n"
                for f in sorted(members, key=lambda f: f.name)
            )
            return hashlib.sha256(lines).hexdigest()
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()


def write_image(
    path: PathLike,
    array: np.ndarray,
    *,
    like: PathLike | None = None,
    dtype: np.dtype | type | str | None = None,
) -> None:
    """Write a float ``(H, W)`` or ``(H, W, C)`` array as PNG, JPEG, TIFF or DICOM (by extension).

    PNG/JPEG/TIFF: values are rounded and clipped to ``dtype`` (integer dtypes; TIFF also keeps
    float dtypes as they are). Default dtype: the source dtype of ``like`` when given, else uint8
    for PNG/JPEG and float32 for TIFF. PNG holds uint8 (gray, RGB, RGBA) or uint16 (gray).

    DICOM: ``like`` (a template DICOM) is required; its tags are kept and its pixel data replaced.
    The array is in modality units (e.g. HU) and is converted to stored values with the template's
    RescaleSlope/RescaleIntercept (MONOCHROME1 templates re-inverted), rounded and clipped to the
    stored range (BitsStored, PixelRepresentation), written uncompressed (Explicit VR Little
    Endian) with a new SOPInstanceUID derived deterministically from the template UID, the file
    name and the stored pixels. The file is written to a temporary name and moved into place.
    Raises ImageReadError (one line naming the file) for bad input.
    """
    out = Path(path)
    with _reading(out):
        fmt = _SUFFIX_FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise ImageReadError(out, "cannot write this extension (use .png, .jpg, .tif or .dcm)")
        arr = np.asarray(array)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ImageReadError(out, f"array of shape {arr.shape} is not (H, W) or (H, W, 3|4)")
        if not np.isfinite(arr).all():
            raise ImageReadError(out, "array holds NaN or infinite values")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            if fmt == "dicom":
                if like is None:
                    raise ImageReadError(out, "writing DICOM needs like=<template DICOM>")
                if dtype is not None:
                    raise ImageReadError(out, "DICOM takes its stored dtype from the template")
                _write_dicom(tmp, out, arr, Path(like))
            else:
                target = _writer_dtype(out, fmt, like, dtype)
                _write_raster(tmp, out, fmt, _to_dtype(arr, target))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- dispatch


@contextmanager
def _reading(path: PathLike, fmt: str | None = None) -> Iterator[None]:
    """Turn any exception inside the block into a one-line ImageReadError naming ``path``.

    ``fmt`` (when known) names the format in the reason: "corrupt or unreadable TIFF (...)".
    """
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError as err:
        raise ImageReadError(path, "no such file or directory") from err
    except PermissionError as err:
        raise ImageReadError(path, "permission denied") from err
    except Exception as err:
        what = f"corrupt or unreadable {fmt.upper()}" if fmt else "unreadable"
        raise ImageReadError(path, f"{what} ({type(err).__name__}: {err})") from err


def _detect_format(path: Path) -> str:
    if path.is_dir():
        return "dicom-series"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if path.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    with open(path, "rb") as fh:  # unknown extension: sniff the signature
        head = fh.read(352)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head[344:348] == b"n+1\0":
        return "nifti"
    raise ImageReadError(
        path,
        f"unknown image format (extension '{path.suffix}'; expected .png, .jpg, .tif, .dcm, "
        ".nii[.gz] or a directory holding a DICOM series)",
    )


def _open(
    path: PathLike, *, page: int | None, tiff_stack: bool = False, header_only: bool = False
) -> _Source:
    p = Path(path)
    if not p.exists():
        raise ImageReadError(path, "no such file or directory")
    fmt = _detect_format(p)
    if page is not None and fmt != "tiff":
        raise ImageReadError(path, f"page={page} given but this is not a TIFF ({fmt})")
    with _reading(path, fmt):
        if fmt in ("png", "jpeg"):
            src = _open_pillow(p)
        elif fmt == "tiff":
            src = _open_tiff(p, page, stack=tiff_stack)
        elif fmt == "dicom":
            src = _open_dicom(p, header_only=header_only)
        elif fmt == "nifti":
            src = _open_nifti(p)
        else:
            src = _open_series(p)
    load_slice = src.load_slice and _guarded(path, fmt, src.load_slice)
    return replace(src, load=_guarded(path, fmt, src.load), load_slice=load_slice)


def _guarded(path: PathLike, fmt: str, fn: Callable) -> Callable:
    """``fn`` with its exceptions turned into one-line errors that name the file and format."""

    def call(*args):
        with _reading(path, fmt):
            return fn(*args)

    return call


def _check_pixels(path: PathLike, src: _Source, max_pixels: int) -> None:
    if src.pixels > max_pixels:
        dims = "x".join(str(d) for d in (src.shape[:3] if src.volume else src.shape[:2]))
        raise ImageReadError(path, f"{dims} pixels exceed the limit of {max_pixels} (max_pixels)")


def _spatial_axis(path: PathLike, axis: int) -> int:
    if not -3 <= axis < 3:
        raise ImageReadError(path, f"axis {axis} is not one of the volume axes -3..2")
    return axis % 3


def _meta(
    path: PathLike, src: _Source, array: np.ndarray, spacing: tuple[float, ...] | None
) -> ImageMeta:
    if array.size and np.isfinite(array).all():
        value_range = (float(array.min()), float(array.max()))
    elif array.size and np.isfinite(array).any():
        value_range = (float(np.nanmin(array)), float(np.nanmax(array)))
    else:
        value_range = (float("nan"), float("nan"))
    return ImageMeta(
        path=str(path),
        format=src.format,
        source_dtype=src.source_dtype,
        value_range=value_range,
        spacing=spacing,
        modality=src.modality,
        shape=tuple(array.shape),
    )


# ----------------------------------------------------------------------------- PNG / JPEG

# Pillow mode -> (mode to convert to, or None to keep; numpy dtype of the stored pixels)
_PIL_MODES = {
    "1": (None, "bool"),
    "L": (None, "uint8"),
    "LA": ("L", "uint8"),
    "La": ("L", "uint8"),
    "P": ("RGB", "uint8"),
    "PA": ("RGB", "uint8"),
    "RGB": (None, "uint8"),
    "RGBA": ("RGB", "uint8"),
    "RGBa": ("RGB", "uint8"),
    "RGBX": ("RGB", "uint8"),
    "CMYK": ("RGB", "uint8"),
    "YCbCr": ("RGB", "uint8"),
    "I;16": (None, "uint16"),
    "I;16L": (None, "uint16"),
    "I;16B": (None, "uint16"),
    "I": (None, "int32"),
    "F": (None, "float32"),
}


def _open_pillow(path: Path) -> _Source:
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            fmt, mode, (width, height) = (im.format or "").lower(), im.mode, im.size
    except Image.DecompressionBombError as err:
        raise ImageReadError(path, f"{err} (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "not a readable PNG/JPEG (corrupt or wrong format)") from None
    if fmt not in ("png", "jpeg"):
        raise ImageReadError(path, f"file holds {fmt.upper() or 'unknown'} data, not PNG/JPEG")
    if mode not in _PIL_MODES:
        raise ImageReadError(path, f"unsupported Pillow image mode {mode!r}")
    convert, source_dtype = _PIL_MODES[mode]
    if fmt == "png" and mode == "I":  # older Pillow opens 16-bit gray PNG as 32-bit "I"
        source_dtype = "uint16"
    channels = 3 if (convert or mode) == "RGB" else None
    shape = (height, width) if channels is None else (height, width, channels)

    def load() -> np.ndarray:
        with Image.open(path) as im:
            try:
                im.load()
            except OSError as err:
                raise ImageReadError(path, f"corrupt or truncated {fmt.upper()} ({err})") from None
            if convert is not None:
                im = im.convert(convert)
            return np.asarray(im).astype(np.float32)

    return _Source(
        format=fmt,
        shape=shape,
        volume=False,
        source_dtype=source_dtype,
        spacing=None,
        modality=None,
        load=load,
    )


# ----------------------------------------------------------------------------- TIFF


def _open_tiff(path: Path, page: int | None, *, stack: bool) -> _Source:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        n = len(pages)
        if page is None and n > 1 and not stack:
            raise ImageReadError(path, f"multi-page TIFF with {n} pages: pass page (0..{n - 1})")
        if page is not None and not -n <= page < n:
            raise ImageReadError(path, f"page {page} out of range for a TIFF with {n} pages")
        first = pages[page or 0]
        shape, dtype = _tiff_page_shape(path, first), first.dtype
        spacing = _tiff_spacing(first)
        if stack and page is None and n > 1:
            shapes = {_tiff_page_shape(path, pg) for pg in pages}
            if len(shapes) > 1:
                raise ImageReadError(path, f"TIFF pages differ in shape {sorted(shapes)}")
            return _Source(
                format="tiff",
                shape=shape[:2] + (n,) + shape[2:],
                volume=True,
                source_dtype=dtype.name,
                spacing=None,
                modality=None,
                load=lambda: _tiff_stack(path, n),
                load_slice=lambda i: _tiff_pixels(path, i),
            )
    index = page or 0
    return _Source(
        format="tiff",
        shape=shape,
        volume=False,
        source_dtype=dtype.name,
        spacing=spacing,
        modality=None,
        load=lambda: _tiff_pixels(path, index),
    )


def _tiff_page_shape(path: Path, page) -> tuple[int, ...]:
    if page.imagedepth > 1:
        raise ImageReadError(path, f"volumetric TIFF page (depth {page.imagedepth})")
    h, w, s = page.imagelength, page.imagewidth, page.samplesperpixel
    if int(page.photometric) == 3:  # PALETTE
        return (h, w, 3)
    s = s - 1 if s in (2, 4) else s  # drop the alpha/extra sample
    return (h, w) if s == 1 else (h, w, s)


def _tiff_pixels(path: Path, index: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[index]
        arr = page.asarray()
        axes = page.axes
        photometric = int(page.photometric)
        colormap = page.colormap
    if "S" in axes and axes.index("S") == 0 and arr.ndim == 3:  # planar: (S, H, W)
        arr = np.moveaxis(arr, 0, -1)
    if photometric == 3 and colormap is not None:  # PALETTE -> RGB (colormap is (3, 2**bits))
        arr = np.moveaxis(np.asarray(colormap)[:, arr], 0, -1)
    elif arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if photometric == 0 and np.issubdtype(arr.dtype, np.unsignedinteger):  # MINISWHITE
        arr = np.iinfo(arr.dtype).max - arr
    return arr.astype(np.float32)


def _tiff_stack(path: Path, n: int) -> np.ndarray:
    return np.stack([_tiff_pixels(path, i) for i in range(n)], axis=2)


def _tiff_spacing(page) -> tuple[float, float] | None:
    """(row, col) spacing in mm from X/YResolution when the unit is inch or centimetre."""
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    mm_per_unit = {2: 25.4, 3: 10.0}.get(int(unit.value) if unit is not None else 0)
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    if mm_per_unit is None or xres is None or yres is None:
        return None
    (xn, xd), (yn, yd) = xres.value, yres.value
    if not (xn and yn):
        return None
    return (mm_per_unit * yd / yn, mm_per_unit * xd / xn)


# ----------------------------------------------------------------------------- DICOM


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
            path, f"corrupt or truncated DICOM ({type(err).__name__}: {_one_line(err)[:120]})"
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
            raise ImageReadError(path, f"{reason}: pip install rat[dicom]")
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
        reason = _one_line(err)[:160]
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            raise ImageReadError(path, f"cannot decode {kind} pixel data ({reason})") from None
        raise ImageReadError(path, f"corrupt or truncated DICOM ({reason})") from None
    return _dicom_values(path, ds, stored)


def _open_dicom(path: Path, *, header_only: bool) -> _Source:
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
    spacing = _dicom_spacing(ds)
    dtype = _stored_dtype(ds).name
    if frames == 1:
        return _Source(
            format="dicom",
            shape=(rows, cols) + colour,
            volume=False,
            source_dtype=dtype,
            spacing=spacing,
            modality=modality,
            load=lambda: _dicom_pixels(path, ds, None),
        )
    step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    vol_spacing = None if spacing is None or not step else spacing + (abs(float(step)),)

    def load() -> np.ndarray:  # (frames, H, W[, C]) -> (H, W, frames[, C])
        return np.ascontiguousarray(np.moveaxis(_dicom_pixels(path, ds, None), 0, 2))

    return _Source(
        format="dicom",
        shape=(rows, cols, frames) + colour,
        volume=True,
        source_dtype=dtype,
        spacing=vol_spacing,
        modality=modality,
        load=load,
        load_slice=lambda i: _dicom_pixels(path, ds, i),
    )


def _series_files(directory: Path) -> list[Path]:
    """Member files of a DICOM-series directory (not recursive), sorted by name."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and not f.name.startswith("."))
    members = [f for f in files if f.suffix.lower() in _DICOM_SUFFIXES]
    if not members:
        members = [f for f in files if _has_dicm(f)]
    if not members:
        raise ImageReadError(directory, "directory holds no DICOM files (*.dcm, *.dicom, *.ima)")
    return members


def _has_dicm(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(132)[128:] == b"DICM"


def _open_series(directory: Path) -> _Source:
    files = _series_files(directory)
    headers = [_dcmread(f, header_only=True) for f in files]
    first = headers[0]
    key = ("Rows", "Columns", "SamplesPerPixel")
    ref = tuple(first.get(k) for k in key)
    for f, ds in zip(files, headers, strict=True):
        geometry = tuple(ds.get(k) for k in key)
        if geometry != ref:
            raise ImageReadError(f, f"slice geometry {geometry} differs from {files[0].name} {ref}")
    if ref[0] is None or ref[1] is None:
        raise ImageReadError(files[0], "no pixel data (no Rows/Columns)")
    if (ref[2] or 1) != 1:
        raise ImageReadError(directory, "colour DICOM series are not supported")
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in headers}
    if len(series_uids) > 1:
        raise ImageReadError(directory, f"directory mixes {len(series_uids)} DICOM series")
    order, step = _series_order(directory, files, headers)
    files = [files[i] for i in order]
    spacing = _dicom_spacing(first)
    if step is None:
        step = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    vol_spacing = None if spacing is None or not step else spacing + (abs(float(step)),)
    rows, cols = int(ref[0]), int(ref[1])
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

    return _Source(
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
    directory: Path, files: list[Path], headers: list
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
            raise ImageReadError(directory, f"slices {a} and {b} share one position")
        step = float(np.median(steps)) if len(files) > 1 else None
        return order.tolist(), step
    numbers = [ds.get("InstanceNumber") for ds in headers]
    if all(n is not None for n in numbers):
        return np.argsort(np.array(numbers, dtype=np.int64), kind="stable").tolist(), None
    return list(range(len(files))), None


# ----------------------------------------------------------------------------- NIfTI


def _open_nifti(path: Path) -> _Source:
    import nibabel as nib

    try:
        img = nib.load(path)  # header only; data stays in the file
    except Exception as err:
        raise ImageReadError(
            path, f"corrupt or unreadable NIfTI ({_one_line(err)[:160]})"
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
    return _Source(
        format="nifti",
        shape=shape,
        volume=volume,
        source_dtype=header.get_data_dtype().name,
        spacing=spacing,
        modality=None,
        load=load,
        load_slice=load_slice if volume else None,
    )


# ----------------------------------------------------------------------------- writing


def _writer_dtype(out: Path, fmt: str, like: PathLike | None, dtype) -> np.dtype:
    if dtype is not None:
        target = np.dtype(dtype)
    elif like is not None:
        target = np.dtype(_open(like, page=None, tiff_stack=True, header_only=True).source_dtype)
        if target == np.bool_:
            target = np.dtype("uint8")
    else:
        target = np.dtype("float32" if fmt == "tiff" else "uint8")
    allowed = {
        "png": ("uint8", "uint16"),
        "jpeg": ("uint8",),
        "tiff": ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64"),
    }[fmt]
    if target.name not in allowed:
        raise ImageReadError(
            out, f"{fmt.upper()} cannot hold {target.name} (use {', '.join(allowed)})"
        )
    return target


def _to_dtype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range; float dtypes are a plain cast."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)


def _write_raster(tmp: Path, out: Path, fmt: str, arr: np.ndarray) -> None:
    if fmt == "tiff":
        import tifffile

        photometric = "rgb" if arr.ndim == 3 else "minisblack"
        extra = {"extrasamples": ["unassalpha"]} if arr.ndim == 3 and arr.shape[2] == 4 else {}
        tifffile.imwrite(
            tmp, arr, photometric=photometric, compression="zlib", metadata=None, **extra
        )
        return
    from PIL import Image

    if arr.dtype == np.uint16 and arr.ndim == 3:
        raise ImageReadError(out, "16-bit colour PNG is not supported (write TIFF instead)")
    if fmt == "jpeg" and arr.ndim == 3 and arr.shape[2] == 4:
        raise ImageReadError(out, "JPEG cannot hold an alpha channel")
    image = Image.fromarray(arr)
    if fmt == "png":
        image.save(tmp, format="PNG")
    else:
        image.save(tmp, format="JPEG", quality=95)


def _write_dicom(tmp: Path, out: Path, arr: np.ndarray, like: Path) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        raise ImageReadError(like, "PALETTE COLOR templates are not supported")
    if samples == 1:
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
    signed = lo < 0
    container = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    stored = np.clip(np.rint(values), lo, hi).astype(container)
    template_uid = str(ds.get("SOPInstanceUID", ""))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            del ds[keyword]
    ds.set_pixel_data(
        stored, photometric, int(ds.get("BitsStored", bits_allocated)), generate_instance_uid=False
    )
    uid = generate_uid(
        entropy_srcs=[template_uid, out.name, hashlib.sha256(stored.tobytes()).hexdigest()]
    )
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(tmp, enforce_file_format=True)
