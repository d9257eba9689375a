"""The image cache: LQ and HQ images in the label store, chunked like the labels, for fast patch reads.

Layout (beside ``labels/<key>``, see :mod:`rat.shared.store`)::

    images/<key>/lq, images/<key>/hq   (H, W) or (H, W, C) arrays, chunks (chunk, chunk[, C]), zstd
    images/<key>                       group attributes {"rat": record}, written last

The record is ``{"source_sha256": LQ file SHA-256 (the index's), "hq_sha256": HQ file SHA-256, "shape",
"lq_dtype", "hq_dtype", "complete": True}``; a cache without a complete record does not exist for readers.
Values are exactly what :func:`rat.shared.io.read_image` returns, stored in the smallest exact dtype
(:func:`exact_dtype`): the source dtype when it holds them (8/16-bit PNG, int16 HU), else a wider integer,
else float32. Nothing is ever squeezed to 8 bit. Only the process that caches an image writes its key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from rat.shared import store as st
from rat.shared.batch import Outcome, run_each
from rat.shared.errors import one_line
from rat.shared.hashes import source_sha256
from rat.shared.index import Entry, checked_lq, read_hq, read_lq
from rat.shared.io import ImageReadError

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


def image_record(group: zarr.Group, image_id: str) -> dict[str, Any] | None:
    """The complete image-cache record of `image_id`, else None (missing, partial or unreadable)."""
    try:
        rec = group[f"images/{st.image_key(image_id)}"].attrs.get(st.ATTR)
    except Exception:  # noqa: BLE001 - a missing or half-written node is simply not there
        return None
    return rec if isinstance(rec, dict) and rec.get("complete") else None


def _chunk_edge(group: zarr.Group) -> int:
    chunk = st.provenance(group).get("chunk", [st.DEFAULT_CHUNK])
    return int(chunk[0])


def write_images(group: zarr.Group, image_id: str, lq: np.ndarray, hq: np.ndarray, source_sha256: str,
                 hq_sha256: str, lq_dtype: str, hq_dtype: str, chunk: int = st.DEFAULT_CHUNK
                 ) -> dict[str, Any]:
    """Write one image pair (float values as read_image returns them) and its record, the record last.

    lq, hq: (H, W) or (H, W, C) of the same shape; stored in exact_dtype of their source dtypes.
    Replaces whatever was at ``images/<key>`` (partial or stale).
    """
    if lq.shape != hq.shape or lq.ndim not in (2, 3):
        raise ValueError(f"{image_id}: LQ {lq.shape} and HQ {hq.shape} must be equal (H, W[, C]) shapes")
    key = f"images/{st.image_key(image_id)}"
    node = group.create_group(key, overwrite=True)  # no attributes yet: incomplete for readers
    chunks = (min(chunk, lq.shape[0]), min(chunk, lq.shape[1]), *lq.shape[2:])
    dtypes = {}
    for name, values, source in (("lq", lq, lq_dtype), ("hq", hq, hq_dtype)):
        dtype = exact_dtype(values, source)
        arr = node.create_array(name, shape=values.shape, dtype=dtype, chunks=chunks,
                                compressors=zarr.codecs.ZstdCodec(level=st.ZSTD_LEVEL), fill_value=0,
                                overwrite=True)
        arr[...] = values.astype(dtype)
        dtypes[name] = str(dtype)
    rec = {"source_sha256": source_sha256, "hq_sha256": hq_sha256, "shape": list(lq.shape),
           "lq_dtype": dtypes["lq"], "hq_dtype": dtypes["hq"], "complete": True}
    node.attrs[st.ATTR] = rec
    return rec


def cache_entry(entry: Entry, root: str | Path, group: zarr.Group, overwrite: bool = False,
                chunk: int | None = None) -> Outcome:
    """Cache one image pair unless a complete cache with the same LQ and HQ hashes is there.

    Never raises for bad items: a failure is an Outcome with a one-line reason.
    """
    start = time.perf_counter()
    try:
        hq_path = Path(root) / entry.hq
        if not hq_path.exists():
            raise ImageReadError(hq_path, "file not found")
        hq_sha = source_sha256(hq_path)
        rec = None if overwrite else image_record(group, entry.id)
        if rec is not None and rec.get("source_sha256") == entry.sha256 and rec.get("hq_sha256") == hq_sha:
            return Outcome(entry.id, "skipped")
        checked_lq(entry, root)
        lq, lq_meta = read_lq(entry, root)
        hq, hq_meta = read_hq(entry, root)
        if lq.shape != hq.shape:
            raise ValueError(f"{entry.id}: LQ shape {lq.shape} != HQ shape {hq.shape}")
        if list(lq.shape[:2]) != list(entry.shape[:2]):
            raise ValueError(f"{entry.id}: image shape {lq.shape} != indexed shape {entry.shape}")
        write_images(group, entry.id, lq, hq, entry.sha256, hq_sha, lq_meta.source_dtype,
                     hq_meta.source_dtype, chunk or _chunk_edge(group))
    except (ImageReadError, st.StoreError, ValueError, RuntimeError, OSError) as err:
        return Outcome(entry.id, "failed", one_line(err), time.perf_counter() - start)
    return Outcome(entry.id, "done", seconds=time.perf_counter() - start)


def open_for_cache(store_url: str | Path) -> zarr.Group:
    """Open an existing label store (made by `rat-precompute masks`) for adding images; StoreError if none."""
    st.provenance(st.open_store(store_url, mode="r"))  # exists and is a RAT store; never creates one
    group = st.open_store(store_url, mode="a")
    if "images" not in group:
        group.require_group("images")
    return group


def cache_images(entries: Iterable[Entry], root: str | Path, store_url: str | Path, *,
                 overwrite: bool = False, progress: bool = True) -> list[Outcome]:
    """Add the LQ and HQ images of `entries` to the store (resumable). One Outcome per entry.

    The store must exist (StoreError otherwise). Chunk edge: the store's provenance "chunk".
    """
    entries = list(entries)
    group = open_for_cache(store_url)
    chunk = _chunk_edge(group)
    return run_each(entries, lambda e: cache_entry(e, root, group, overwrite, chunk), "image cache", progress)
