"""The training image cache: LQ and HQ images chunked like the labels, in a local folder, for fast patches.

Layout (under :func:`rat.shared.index.locate.cache_dir`, never inside a label store, which stays small)::

    images/<key>.zarr/lq, /hq   (H, W) or (H, W, C) arrays, chunks (chunk, chunk[, C]), zstd
    images/<key>.zarr           zarr group attributes {"rat": record}

``<key>`` hashes the LQ and HQ SHA-256 (and the slice of a volume): the cache holds the pixels of the files,
whatever dataset, root or store names them. The record is ``{"source_sha256": LQ SHA-256, "hq_sha256",
"shape", "lq_dtype", "hq_dtype", "complete": True}``. An image is written into a temporary folder that is
renamed into place when complete, so several ranks or runs on one machine can fill one cache at once: the
first to finish wins and nobody ever reads half an image.

Values are exactly what :func:`rat.shared.io.read_image` returns, stored in the smallest exact dtype
(:func:`exact_dtype`): the source dtype when it holds them (8/16-bit PNG, int16 HU), else a wider integer,
else float32. Nothing is ever squeezed to 8 bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from rat.shared.errors import one_line
from rat.shared.index.entries import Entry, checked_lq, read_hq, read_lq
from rat.shared.index.hash_cache import source_sha256
from rat.shared.index.locate import cache_dir, source_path
from rat.shared.io.base import ImageReadError
from rat.shared.jobs import Outcome, run_each
from rat.shared.store.schema import ATTR, DEFAULT_CHUNK, MISSING, ZSTD_LEVEL, StoreError

_WIDER_INTS = ("int16", "int32")


def exact_dtype(values: np.ndarray, source_dtype: str) -> np.dtype:
    """Smallest dtype that holds `values` exactly, at least as wide as the file's own dtype.

    Tries the source dtype (bool counts as uint8), then int16 and int32 (e.g. uint16 pixels with a
    negative DICOM rescale intercept), then float32 (always exact for read_image's float32 values).
    """
    src = np.dtype("uint8" if source_dtype == "bool" else source_dtype)
    if src.kind not in "iu":
        return np.dtype("float32")
    candidates = [src] + [np.dtype(d) for d in _WIDER_INTS if np.dtype(d).itemsize > src.itemsize]
    if values.size == 0:
        return src
    finite = bool(np.isfinite(values).all())
    whole = finite and bool((values == np.round(values)).all())
    if whole:
        lo, hi = float(values.min()), float(values.max())
        for dtype in candidates:
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return dtype
    return np.dtype("float32")


def write_images(node: zarr.Group, lq: np.ndarray, hq: np.ndarray, source_sha256: str, hq_sha256: str,
                 lq_dtype: str, hq_dtype: str, chunk: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Write one image pair (float values as read_image returns them) into ``node``, its record last.

    lq, hq: (H, W) or (H, W, C) of the same shape; stored in exact_dtype of their source dtypes.
    """
    if lq.shape != hq.shape or lq.ndim not in (2, 3):
        raise ValueError(f"LQ {lq.shape} and HQ {hq.shape} must be equal (H, W[, C]) shapes")
    chunks = (min(chunk, lq.shape[0]), min(chunk, lq.shape[1]), *lq.shape[2:])
    dtypes = {}
    for name, values, source in (("lq", lq, lq_dtype), ("hq", hq, hq_dtype)):
        dtype = exact_dtype(values, source)
        arr = node.create_array(name, shape=values.shape, dtype=dtype, chunks=chunks,
                                 compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), fill_value=0,
                                 overwrite=True)
        arr[...] = values.astype(dtype)
        dtypes[name] = str(dtype)
    rec = {"source_sha256": source_sha256, "hq_sha256": hq_sha256, "shape": list(lq.shape),
           "lq_dtype": dtypes["lq"], "hq_dtype": dtypes["hq"], "complete": True}
    node.attrs[ATTR] = rec
    return rec


def _valid(rec: Any, entry: Entry) -> bool:
    return (isinstance(rec, dict) and bool(rec.get("complete")) and rec.get("source_sha256") == entry.sha256
            and (not entry.hq_sha256 or rec.get("hq_sha256") == entry.hq_sha256)
            and list(rec.get("shape", []))[:2] == list(entry.shape[:2]))


class ImageCache:
    """The local image cache in ``folder`` (default :func:`rat.shared.index.locate.cache_dir`)."""

    def __init__(self, folder: str | Path | None = None, chunk: int = DEFAULT_CHUNK) -> None:
        self.folder = cache_dir(folder) / "images"
        self.chunk = chunk

    def path(self, entry: Entry) -> Path:
        hq = entry.hq_sha256 or entry.hq  # indexes of version 1 have no HQ hash: key by path
        key = hashlib.sha256(f"{entry.sha256}:{hq}:{entry.slice}:{entry.axis}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key[2:34]}.zarr"

    def has(self, entry: Entry) -> bool:
        """Whether the entry's images are cached: their complete record, read from the zarr group's metadata
        file alone (a small JSON read: cheap enough to ask for every image of a large dataset)."""
        try:
            meta = json.loads((self.path(entry) / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return False
        return _valid(meta.get("attributes", {}).get(ATTR), entry)

    def arrays(self, entry: Entry) -> tuple[zarr.Array, zarr.Array] | None:
        """(lq, hq) arrays cached for the entry's files, else None."""
        if not self.has(entry):
            return None
        try:
            node = zarr.open_group(zarr.storage.LocalStore(self.path(entry), read_only=True), mode="r")
            return node["lq"], node["hq"]
        except (*MISSING, ValueError, OSError):
            return None

    def add(self, entry: Entry, root: str | Path) -> Outcome:
        """Cache one entry's LQ and HQ unless they are there; a failure is an Outcome, never raised."""
        start = time.perf_counter()
        if self.has(entry):
            return Outcome(entry.id, "skipped")
        tmp = self.path(entry).with_name(f".{self.path(entry).name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            hq_path = source_path(root, entry.hq)
            if not hq_path.exists():
                raise ImageReadError(hq_path, "file not found")
            hq_sha = source_sha256(hq_path)
            if entry.hq_sha256 and hq_sha != entry.hq_sha256:
                raise ImageReadError(entry.hq, "changed since the index was written (SHA-256 differs)")
            checked_lq(entry, root)
            lq, lq_meta = read_lq(entry, root)
            hq, hq_meta = read_hq(entry, root)
            if lq.shape != hq.shape:
                raise ValueError(f"{entry.id}: LQ shape {lq.shape} != HQ shape {hq.shape}")
            if list(lq.shape[:2]) != list(entry.shape[:2]):
                raise ValueError(f"{entry.id}: image shape {lq.shape} != indexed shape {entry.shape}")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            node = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
            write_images(node, lq, hq, entry.sha256, hq_sha, lq_meta.source_dtype, hq_meta.source_dtype,
                         self.chunk)
            try:
                os.rename(tmp, self.path(entry))  # atomic; fails if another process got there first
            except OSError:
                if not self.has(entry):  # what is there is no valid image: a stale leftover
                    shutil.rmtree(self.path(entry), ignore_errors=True)
                    os.rename(tmp, self.path(entry))
        except (ImageReadError, StoreError, ValueError, RuntimeError, OSError) as err:
            return Outcome(entry.id, "failed", one_line(err), time.perf_counter() - start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Outcome(entry.id, "done", seconds=time.perf_counter() - start)


def cache_images(entries: Iterable[Entry], root: str | Path, cache: str | Path | None = None, *,
                 chunk: int = DEFAULT_CHUNK, progress: bool = True) -> list[Outcome]:
    """Add the LQ and HQ images of `entries` to the local image cache (resumable). One Outcome per entry."""
    images = ImageCache(cache, chunk)
    return run_each(list(entries), lambda e: images.add(e, root), "image cache", progress)
