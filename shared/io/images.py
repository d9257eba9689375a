"""Reading and writing 2-D images and volumes: the entry points and the dispatch on the file format.

Every reader returns a float32 array in the image's own units plus an :class:`~rat.shared.io.base.ImageMeta`
(see :mod:`rat.shared.io` for the formats and conventions). Headers are checked against ``max_pixels`` before
any pixel is decoded (for volumes the whole volume counts). Every failure is an
:class:`~rat.shared.io.base.ImageReadError` whose message is one line ``"<path>: <reason>"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from rat.shared.io.base import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    ImageReadError,
    PathLike,
    Source,
    reading,
)
from rat.shared.io.dicom import DICOM_SUFFIXES, open_dicom, open_series
from rat.shared.io.dicom_write import write_from_template
from rat.shared.io.raster import open_pillow, open_tiff, to_dtype, write_raster
from rat.shared.io.volumes import open_nifti, take_slice

_SUFFIX_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    **dict.fromkeys(DICOM_SUFFIXES, "dicom"),
}


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
    with reading(path):
        src = open_source(path, page=page)
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
            array, spacing = take_slice(path, src, index, axis)
        return array, _meta(path, src, array, spacing)


def read_volume(
    path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, ImageMeta]:
    """Read a whole volume as float32 ``(H, W, N)`` (``(H, W, N, C)`` for colour frames).

    Volumes: NIfTI, a DICOM-series directory, a multi-frame DICOM, a multi-page TIFF (pages stacked
    along the last axis). Raises ImageReadError for 2-D images.
    """
    with reading(path):
        src = open_source(path, page=None, tiff_stack=True)
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
    with reading(path):
        return open_source(path, page=None, tiff_stack=True, header_only=True).shape


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
    with reading(out):
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
                write_from_template(tmp, out, arr, Path(like))
            else:
                target = _writer_dtype(out, fmt, like, dtype)
                write_raster(tmp, out, fmt, to_dtype(arr, target))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- dispatch


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


def open_source(
    path: PathLike, *, page: int | None, tiff_stack: bool = False, header_only: bool = False
) -> Source:
    """The file (or series folder) opened from its header by the reader of its format; pixels on demand."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(path, "no such file or directory")
    fmt = _detect_format(p)
    if page is not None and fmt != "tiff":
        raise ImageReadError(path, f"page={page} given but this is not a TIFF ({fmt})")
    with reading(path, fmt):
        if fmt in ("png", "jpeg"):
            src = open_pillow(p)
        elif fmt == "tiff":
            src = open_tiff(p, page, stack=tiff_stack)
        elif fmt == "dicom":
            src = open_dicom(p, header_only=header_only)
        elif fmt == "nifti":
            src = open_nifti(p)
        else:
            src = open_series(p)
    load_slice = src.load_slice and _guarded(path, fmt, src.load_slice)
    return replace(src, load=_guarded(path, fmt, src.load), load_slice=load_slice)


def _guarded(path: PathLike, fmt: str, fn: Callable) -> Callable:
    """``fn`` with its exceptions turned into one-line errors that name the file and format."""

    def call(*args):
        with reading(path, fmt):
            return fn(*args)

    return call


def _check_pixels(path: PathLike, src: Source, max_pixels: int) -> None:
    if src.pixels > max_pixels:
        dims = "x".join(str(d) for d in (src.shape[:3] if src.volume else src.shape[:2]))
        raise ImageReadError(path, f"{dims} pixels exceed the limit of {max_pixels} (max_pixels)")


def _meta(
    path: PathLike, src: Source, array: np.ndarray, spacing: tuple[float, ...] | None
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
        stored_channels=src.stored_channels,
        mode=src.mode,
    )


def _writer_dtype(out: Path, fmt: str, like: PathLike | None, dtype) -> np.dtype:
    if dtype is not None:
        target = np.dtype(dtype)
    elif like is not None:
        target = np.dtype(open_source(like, page=None, tiff_stack=True, header_only=True).source_dtype)
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
