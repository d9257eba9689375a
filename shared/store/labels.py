"""The label maps of a store: writing one with its record last, reading one, and listing them.

Each label map is an OME-Zarr label image ``labels/<key>`` (:mod:`rat.shared.store.ngff`) whose array ``0``
holds the (H, W) map and whose attributes hold the record (:mod:`rat.shared.store.schema`). A map without a
complete record made under the store's configuration does not exist for readers (:func:`record` is None).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync

from rat.shared.store.ngff import label_image_attrs
from rat.shared.store.schema import (
    ATTR,
    DEFAULT_CHUNK,
    MISSING,
    ZSTD_LEVEL,
    StoreError,
    image_id,
    image_key,
    provenance,
    retrying,
)


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 of a label map's C-order bytes (dtype and shape are recorded beside it)."""
    return hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()


def record(store: zarr.Group, image_id: str) -> dict[str, Any] | None:
    """The complete record of a label map made under the store's configuration, else None (missing, half
    written, or of another configuration). Transient read errors are retried, then raise StoreError."""
    def read() -> Any:
        return store[f"labels/{image_key(image_id)}"].attrs.get(ATTR)

    try:
        rec = retrying(f"{store.store}: labels/{image_id}", read)
    except MISSING:
        return None
    return complete(rec, store.attrs.get(ATTR, {}).get("fingerprint"))


def complete(rec: Any, fingerprint: str | None) -> dict[str, Any] | None:
    """A record that counts: complete, and made under the store's configuration."""
    if isinstance(rec, dict) and rec.get("complete") and rec.get("fingerprint") == fingerprint:
        return rec
    return None


def write_labels(store: zarr.Group, image_id: str, labels: np.ndarray, source_sha256: str,
                 chunk: int = DEFAULT_CHUNK, fingerprint: str | None = None,
                 spacing: tuple[float, float] | None = None) -> dict[str, Any]:
    """Write one label map as an NGFF label image, its record last. Replaces whatever was at that key.

    ``fingerprint``: of the configuration the map was computed under (default: the store's now); a writer
    passes its own, so that a map is never recorded under a configuration that replaced it meanwhile.
    ``spacing``: (row, col) pixel spacing in mm, for viewers.

    The objects are those zarr writes for ``labels/<key>/0`` (the array, chunks equal to the fill value 0
    left out), byte for byte (a test compares), and the node ``labels/<key>`` as a compact zarr v3 group
    document: the old node removed, the array's metadata and chunks, then the node's document holding the
    record, last.
    """
    if labels.ndim != 2:
        raise StoreError(f"{image_id}: label map must be 2-D, got shape {labels.shape}")
    key = image_key(image_id)
    counts = np.bincount(labels.ravel())
    chunks = (min(chunk, labels.shape[0]), min(chunk, labels.shape[1]))
    rec = {"source_sha256": source_sha256, "shape": list(labels.shape), "chunks": list(chunks),
           "dtype": str(labels.dtype), "regions": int(np.count_nonzero(counts[1:])),
           "labels_sha256": labels_sha256(labels),
           "fingerprint": fingerprint or provenance(store)["fingerprint"], "complete": True}
    attributes = {"ome": label_image_attrs(key, counts, spacing), ATTR: rec}
    node_doc = json.dumps({"attributes": attributes, "zarr_format": 3, "node_type": "group"},
                           separators=(",", ":")).encode()
    array_doc = _array_document(labels.shape, labels.dtype.str, chunks)
    _put(store.store, f"labels/{key}", array_doc, dict(_encoded_chunks(labels, chunks)), node_doc)
    return rec


@functools.lru_cache(maxsize=64)
def _array_document(shape: tuple[int, int], dtype: str, chunks: tuple[int, int]) -> bytes:
    """The metadata document zarr writes for a label array of this shape, dtype and chunks (made by zarr)."""
    memory = zarr.storage.MemoryStore()
    zarr.create_array(memory, shape=shape, dtype=np.dtype(dtype), chunks=chunks, fill_value=0,
                      compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), dimension_names=("y", "x"))
    return sync(memory.get("zarr.json", default_buffer_prototype())).to_bytes()


def _encoded_chunks(labels: np.ndarray, chunks: tuple[int, int]):
    """(key, bytes) of each chunk not equal to the fill value: C-order little-endian bytes, zstd (the
    array's codecs: ``bytes`` then ``zstd``), edge chunks padded with the fill value as zarr pads them."""
    codec = Zstd(level=ZSTD_LEVEL)
    little = labels.astype(labels.dtype.newbyteorder("<"), copy=False)
    (h, w), (ch, cw) = labels.shape, chunks
    for i in range(-(-h // ch)):
        for j in range(-(-w // cw)):
            part = little[i * ch:(i + 1) * ch, j * cw:(j + 1) * cw]
            if not part.any():
                continue
            block = np.zeros(chunks, dtype=little.dtype)
            block[:part.shape[0], :part.shape[1]] = part
            yield f"c/{i}/{j}", codec.encode(block.tobytes())


def _put(raw: zarr.abc.store.Store, prefix: str, array_doc: bytes, encoded: dict[str, bytes],
         node_doc: bytes) -> None:
    """Replace the node at ``prefix``: remove it, write the array's metadata and chunks, then the node's
    document (the record) last. Files of a local store are written directly, each folder made once; the
    record atomically (temporary name, then rename): until it is there, readers take the node as incomplete.
    Other stores are written through their own concurrent writes."""
    objects = {"0/zarr.json": array_doc, **{f"0/{k}": v for k, v in encoded.items()}}
    if isinstance(raw, zarr.storage.LocalStore):
        node = Path(raw.root) / prefix
        shutil.rmtree(node, ignore_errors=True)
        node.parent.mkdir(parents=True, exist_ok=True)
        folders = {"/".join(name.split("/")[:k]) for name in objects for k in range(name.count("/") + 1)}
        for folder in sorted(folders, key=len):                 # each folder once, parents first
            (node / folder).mkdir(exist_ok=True)
        for name, data in objects.items():
            (node / name).write_bytes(data)
        tmp = node / f".zarr.json.{uuid.uuid4().hex}.partial"
        tmp.write_bytes(node_doc)
        os.replace(tmp, node / "zarr.json")
        return
    sync(_put_async(raw, prefix, objects, node_doc))


async def _put_async(raw: zarr.abc.store.Store, prefix: str, objects: dict[str, bytes], node_doc: bytes
                     ) -> None:
    buffer = default_buffer_prototype().buffer
    await raw.delete_dir(prefix)
    await asyncio.gather(*(raw.set(f"{prefix}/{k}", buffer.from_bytes(v)) for k, v in objects.items()))
    await raw.set(f"{prefix}/zarr.json", buffer.from_bytes(node_doc))    # the record, last


def label_array(store: zarr.Group, image_id: str) -> zarr.Array:
    """The label array of an image, whatever its record; StoreError when missing."""
    try:
        return retrying(f"{store.store}: labels/{image_id}", lambda: store[f"labels/{image_key(image_id)}/0"])
    except MISSING:
        raise StoreError(f"{image_id}: no label map in the store") from None


def read_labels(store: zarr.Group, image_id: str, check: bool = True) -> np.ndarray:
    """The label map of `image_id`; StoreError when it is missing, incomplete or (with ``check``) its bytes
    do not match their recorded SHA-256."""
    rec = record(store, image_id)
    if rec is None:
        raise StoreError(f"{image_id}: no complete label map in the store")
    labels = retrying(f"{store.store}: labels/{image_id}", lambda: label_array(store, image_id)[...])
    if check and labels_sha256(labels) != rec["labels_sha256"]:
        raise StoreError(f"{image_id}: label bytes do not match their recorded SHA-256 (corrupted or swapped "
                         "chunk); recompute it with `rat-precompute masks --overwrite`")
    return labels


def label_ids(store: zarr.Group) -> list[str]:
    """Ids of every label map in the store, complete or not, sorted: one listing of ``labels/`` (not a read
    of each one's metadata)."""
    prefix = f"{store.path}/labels" if store.path else "labels"
    names = collect_aiterator(store.store.list_dir(prefix))
    return sorted(image_id(k) for k in names if k != "zarr.json" and not k.startswith("."))
