"""Raster formats: PNG and JPEG (Pillow), TIFF (tifffile); opening from headers and writing.

- PNG/JPEG: 8 and 16 bit; palette and RGBA become RGB, gray+alpha becomes gray.
- TIFF: one page per 2-D image; a multi-page file needs ``page=`` unless opened as a stack
  (equal-shaped pages along the last axis). Palette becomes RGB, MINISWHITE is inverted,
  extra (alpha) samples are dropped; spacing from X/YResolution in inch or centimetre units.

Internal to :mod:`rat.shared.io`, which dispatches here by format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rat.shared.io.base import ImageReadError, Source

# ----------------------------------------------------------------------------- PNG / JPEG

#: Channels of the Pillow modes whose conversion changes their number (alpha dropped, CMYK to RGB).
_STORED_CHANNELS = {"LA": 2, "La": 2, "PA": 2, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4}
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


def open_pillow(path: Path) -> Source:
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

    return Source(
        format=fmt,
        shape=shape,
        volume=False,
        source_dtype=source_dtype,
        spacing=None,
        modality=None,
        load=load,
        stored_channels=_STORED_CHANNELS.get(mode),
        mode=mode if mode in _STORED_CHANNELS else None,
    )


# ----------------------------------------------------------------------------- TIFF


def open_tiff(path: Path, page: int | None, *, stack: bool) -> Source:
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
            return Source(
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
    samples = int(first.samplesperpixel)
    extra = samples in (2, 4) and int(first.photometric) != 3  # an alpha sample, dropped when read
    return Source(
        format="tiff",
        shape=shape,
        volume=False,
        source_dtype=dtype.name,
        spacing=spacing,
        modality=None,
        load=lambda: _tiff_pixels(path, index),
        stored_channels=samples if extra else None,
        mode="with alpha" if extra else None,
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


# ----------------------------------------------------------------------------- writing


def write_tiff(tmp: Path, out: Path, arr: np.ndarray, like: Path | None = None) -> None:
    """An (H, W) or (H, W, 3|4) array, already in the dtype to store, as a zlib-compressed TIFF at ``tmp``."""
    import tifffile

    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    extra = {"extrasamples": ["unassalpha"]} if arr.ndim == 3 and arr.shape[2] == 4 else {}
    tifffile.imwrite(tmp, arr, photometric=photometric, compression="zlib", metadata=None, **extra)


def write_png(tmp: Path, out: Path, arr: np.ndarray, like: Path | None = None) -> None:
    """An (H, W) or (H, W, 3|4) uint8 array, or an (H, W) uint16 one, as a PNG at ``tmp``."""
    _pillow(out, arr).save(tmp, format="PNG")


def write_jpeg(tmp: Path, out: Path, arr: np.ndarray, like: Path | None = None) -> None:
    """An (H, W) or (H, W, 3) uint8 array as a JPEG (quality 95) at ``tmp``."""
    if arr.ndim == 3 and arr.shape[2] == 4:
        raise ImageReadError(out, "JPEG cannot hold an alpha channel")
    _pillow(out, arr).save(tmp, format="JPEG", quality=95)


def _pillow(out: Path, arr: np.ndarray):
    from PIL import Image

    if arr.dtype == np.uint16 and arr.ndim == 3:
        raise ImageReadError(out, "16-bit colour PNG is not supported (write TIFF instead)")
    return Image.fromarray(arr)
