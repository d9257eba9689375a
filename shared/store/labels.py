"""The label maps of a store: writing one with its record last, reading one, and listing them.

Each label map is an OME-Zarr label image ``labels/<key>`` (:mod:`rat.shared.store.ngff`) whose array ``0``
holds the (H, W) map and whose attributes hold the record (:mod:`rat.shared.store.schema`). A map without a
complete record made under the store's configuration does not exist for readers (:func:`record` is None).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import zarr

from rat.shared.store.ngff import label_image_attrs, labels_group_attrs
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


def record(group: zarr.Group, image_id: str) -> dict[str, Any] | None:
    """The complete record of a label map made under the store's configuration, else None (missing, half
    written, or of another configuration). Transient read errors are retried, then raise StoreError."""
    def read() -> Any:
        return group[f"labels/{image_key(image_id)}"].attrs.get(ATTR)

    try:
        rec = retrying(f"{group.store}: labels/{image_id}", read)
    except MISSING:
        return None
    if not isinstance(rec, dict) or not rec.get("complete"):
        return None
    if rec.get("fingerprint") != group.attrs.get(ATTR, {}).get("fingerprint"):
        return None
    return rec


def write_labels(group: zarr.Group, image_id: str, labels: np.ndarray, source_sha256: str,
                 chunk: int = DEFAULT_CHUNK, fingerprint: str | None = None,
                 spacing: tuple[float, float] | None = None) -> dict[str, Any]:
    """Write one label map as an NGFF label image, its record last. Replaces whatever was at that key.

    ``fingerprint``: of the configuration the map was computed under (default: the store's now); a writer
    passes its own, so that a map is never recorded under a configuration that replaced it meanwhile.
    ``spacing``: (row, col) pixel spacing in mm, for viewers.
    """
    if labels.ndim != 2:
        raise StoreError(f"{image_id}: label map must be 2-D, got shape {labels.shape}")
    key = image_key(image_id)
    counts = np.bincount(labels.ravel())
    node = group.create_group(f"labels/{key}", overwrite=True,
                              attributes={"ome": label_image_attrs(key, counts, spacing)})
    arr = node.create_array("0", shape=labels.shape, dtype=labels.dtype,
                            chunks=(min(chunk, labels.shape[0]), min(chunk, labels.shape[1])),
                            compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), fill_value=0,
                            dimension_names=("y", "x"))
    arr[...] = labels
    rec = {"source_sha256": source_sha256, "shape": list(labels.shape), "dtype": str(labels.dtype),
           "regions": int(np.count_nonzero(counts[1:])), "labels_sha256": labels_sha256(labels),
           "fingerprint": fingerprint or provenance(group)["fingerprint"], "complete": True}
    node.attrs[ATTR] = rec
    return rec


def label_array(group: zarr.Group, image_id: str) -> zarr.Array:
    """The label array of an image, whatever its record; StoreError when missing."""
    try:
        return retrying(f"{group.store}: labels/{image_id}", lambda: group[f"labels/{image_key(image_id)}/0"])
    except MISSING:
        raise StoreError(f"{image_id}: no label map in the store") from None


def read_labels(group: zarr.Group, image_id: str, check: bool = True) -> np.ndarray:
    """The label map of `image_id`; StoreError when it is missing, incomplete or (with ``check``) its bytes
    do not match their recorded SHA-256."""
    rec = record(group, image_id)
    if rec is None:
        raise StoreError(f"{image_id}: no complete label map in the store")
    labels = retrying(f"{group.store}: labels/{image_id}", lambda: label_array(group, image_id)[...])
    if check and labels_sha256(labels) != rec["labels_sha256"]:
        raise StoreError(f"{image_id}: label bytes do not match their recorded SHA-256 (corrupted or swapped "
                         "chunk); recompute it with `rat-precompute masks --overwrite`")
    return labels


def label_ids(group: zarr.Group) -> list[str]:
    """Ids of every label map in the store, complete or not, sorted."""
    try:
        labels = group["labels"]
    except KeyError:
        return []
    return sorted(image_id(k) for k in labels.group_keys())


def refresh_labels_list(group: zarr.Group) -> None:
    """List the complete label maps in the ``labels`` group's NGFF attributes (for ome-zarr readers)."""
    keys = [image_key(i) for i in label_ids(group) if record(group, i) is not None]
    labels = group.require_group("labels")
    if labels.attrs.get("ome") != labels_group_attrs(keys):  # unchanged: not rewritten
        labels.attrs["ome"] = labels_group_attrs(keys)


def store_summary(group: zarr.Group) -> dict[str, Any]:
    """Provenance, counts and region statistics of a store."""
    prov = provenance(group)
    ids = label_ids(group)
    records = [record(group, i) for i in ids]
    regions = np.array([r["regions"] for r in records if r is not None], dtype=np.int64)
    stats = ({"min": int(regions.min()), "median": float(np.median(regions)),
              "mean": float(regions.mean()), "max": int(regions.max())} if regions.size else {})
    return {"provenance": {k: v for k, v in prov.items() if k != "definition"}, "label_maps": len(ids),
            "complete": int(sum(r is not None for r in records)),
            "incomplete": [i for i, r in zip(ids, records, strict=True) if r is None],
            "regions": stats}
