"""What every image reader shares: the error, the metadata record, the opened-source record.

The format modules (:mod:`rat.shared.io.raster`, :mod:`rat.shared.io.dicom`, :mod:`rat.shared.io.volumes`)
open a file into a :class:`Source` (header only; pixels decoded on demand); :mod:`rat.shared.io`
dispatches on the format and turns a Source into an array and its :class:`ImageMeta`. Every
failure is an :class:`ImageReadError` whose message is one line ``"<path>: <reason>"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from rat.shared.errors import RatError, one_line

DEFAULT_MAX_PIXELS: int = 400_000_000
"""Largest number of pixels (voxels for volumes) a reader decodes unless told otherwise."""

PathLike = str | os.PathLike

class ImageReadError(RatError, ValueError):
    """An image could not be read (or written); ``str(err)`` is one line ``"<path>: <reason>"``."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = one_line(reason)
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
    stored_channels: int | None = None  # channels in the file when the reader made others (RGBA: 4 -> 3)
    mode: str | None = None  # how the file stores them, e.g. Pillow's "RGBA", when that differs


def describe_channels(shape: tuple[int, ...], meta: ImageMeta | None = None) -> str:
    """The channels of an image of ``shape`` as read, and as stored in its file when the reader changed
    them: "1 channel(s)", "4 channels (RGBA, read as 3)"."""
    n = int(shape[2]) if len(shape) == 3 else 1
    stored = meta.stored_channels if meta is not None else None
    if not stored or stored == n:
        return f"{n} channel(s)"
    return f"{stored} channels ({meta.mode + ', ' if meta.mode else ''}read as {n})"


@dataclass(frozen=True)
class Source:
    """A file opened from its header only; ``load``/``load_slice`` decode pixels on demand."""

    format: str
    shape: tuple[int, ...]  # (H, W[, C]) for images, (H, W, N[, C]) for volumes
    volume: bool
    source_dtype: str
    spacing: tuple[float, ...] | None  # one per spatial axis, or None
    modality: str | None
    load: Callable[[], np.ndarray]  # the whole image or volume
    load_slice: Callable[[int], np.ndarray] | None = None  # fast path: slice along the last axis
    stored_channels: int | None = None  # see ImageMeta
    mode: str | None = None

    @property
    def pixels(self) -> int:
        spatial = self.shape[:3] if self.volume else self.shape[:2]
        return int(np.prod(spatial, dtype=np.int64))


@contextmanager
def reading(path: PathLike, fmt: str | None = None) -> Iterator[None]:
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


def diagonal_affine(spacing: tuple[float, ...] | None) -> np.ndarray:
    """The 4x4 affine of an array whose axes step by ``spacing`` (mm; 1 mm where unknown) along x, y, z."""
    steps = list(spacing or ())
    steps += [1.0] * (3 - len(steps))
    return np.diag(steps[:3] + [1.0])


def to_dtype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range; float dtypes are a plain cast."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)
