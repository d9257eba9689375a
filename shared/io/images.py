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
    to_dtype,
)
from rat.shared.io.formats import Format, by_suffix, format_of, writable
from rat.shared.io.volumes import take_slice

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


def is_volume(path: PathLike) -> bool:
    """Whether ``path`` holds a volume that ``read_volume`` reads and ``read_image`` needs an ``index`` for
    (NIfTI volumes, multi-frame DICOM, DICOM-series folders), from headers only. A multi-page TIFF is no
    volume here (``read_image`` takes its pages): ImageReadError asking for a page."""
    with reading(path):
        return open_source(path, page=None, header_only=True).volume


def write_image(
    path: PathLike,
    array: np.ndarray,
    *,
    like: PathLike | None = None,
    dtype: np.dtype | type | str | None = None,
) -> None:
    """Write a float ``(H, W)`` or ``(H, W, C)`` array in the format its extension names (PNG, JPEG, TIFF,
    DICOM, NIfTI: those of :mod:`rat.shared.io.formats` with a writer).

    PNG/JPEG/TIFF: values are rounded and clipped to ``dtype`` (integer dtypes; TIFF also keeps
    float dtypes as they are). Default dtype: the source dtype of ``like`` when given, else uint8
    for PNG/JPEG and float32 for TIFF. PNG holds uint8 (gray, RGB, RGBA) or uint16 (gray).

    DICOM: ``like`` (a template DICOM) is required; its tags are kept and its pixel data replaced.
    The array is in modality units (e.g. HU) and is converted to stored values with the template's
    RescaleSlope/RescaleIntercept (MONOCHROME1 templates re-inverted), rounded and clipped to the
    stored range (BitsStored, PixelRepresentation), written uncompressed (Explicit VR Little
    Endian) with a new SOPInstanceUID derived deterministically from the template UID, the file
    name and the stored pixels.

    NIfTI: an ``(H, W)`` image with the affine, units and on-disk type of ``like`` (a NIfTI file, required;
    :func:`rat.shared.io.write_nifti` writes volumes and takes an affine).

    The file is written to a temporary name and moved into place. Raises ImageReadError (one line naming
    the file) for bad input.
    """
    out = Path(path)
    with reading(out):
        fmt = by_suffix(out)
        if fmt is None or fmt.write is None:
            raise ImageReadError(out, f"cannot write this extension (use {writable()})")
        arr = np.asarray(array)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ImageReadError(out, f"array of shape {arr.shape} is not (H, W) or (H, W, 3|4)")
        if not np.isfinite(arr).all():
            raise ImageReadError(out, "array holds NaN or infinite values")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{os.getpid()}.tmp.{out.name}")    # the name ends as out's: its format
        try:
            if not fmt.dtypes:  # the format stores what its template stores
                if like is None:
                    raise ImageReadError(out, f"writing {fmt.label} needs like=<template {fmt.label}>")
                if dtype is not None:
                    raise ImageReadError(out, f"{fmt.label} takes its stored dtype from the template")
                fmt.write(tmp, out, arr, Path(like))
            else:
                target = _writer_dtype(out, fmt, like, dtype)
                fmt.write(tmp, out, to_dtype(arr, target), None if like is None else Path(like))
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- dispatch


def open_source(
    path: PathLike, *, page: int | None, tiff_stack: bool = False, header_only: bool = False
) -> Source:
    """The file (or series folder) opened from its header by the reader of its format
    (:mod:`rat.shared.io.formats`); pixels on demand. ``tiff_stack``: a file of pages is one volume."""
    p = Path(path)
    fmt = format_of(p)
    if page is not None and not fmt.pages:
        raise ImageReadError(path, f"page={page} given but this is not a TIFF ({fmt.name})")
    with reading(path, fmt.name):
        src = fmt.open(p, page, tiff_stack, header_only)
    load_slice = src.load_slice and _guarded(path, fmt.name, src.load_slice)
    return replace(src, load=_guarded(path, fmt.name, src.load), load_slice=load_slice)


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


def _writer_dtype(out: Path, fmt: Format, like: PathLike | None, dtype) -> np.dtype:
    if dtype is not None:
        target = np.dtype(dtype)
    elif like is not None:
        target = np.dtype(open_source(like, page=None, tiff_stack=True, header_only=True).source_dtype)
        if target == np.bool_:
            target = np.dtype("uint8")
    else:
        target = np.dtype(fmt.default_dtype or fmt.dtypes[0])
    if target.name not in fmt.dtypes:
        raise ImageReadError(out, f"{fmt.label} cannot hold {target.name} (use {', '.join(fmt.dtypes)})")
    return target
