"""The records of many label maps at once, and the consolidated table that makes reading them cheap.

Each label map's record lives in its own metadata document (:mod:`rat.shared.store.labels`); reading 100,000
of them is 100,000 reads. The coordinator of a run therefore ends it with :func:`consolidate`, which writes
one table of every complete record with the version stamp (:mod:`rat.shared.store.stamps`) its document had
when it was read, in a one-chunk array of one fixed name (``records-table``), pointed at from the root record
with its SHA-256. :func:`read_records` takes a record from the table only while its bytes match that SHA-256
and its document still carries that stamp, and reads the others: the table is a cache, never the truth, so a
map rewritten since (another shard, an ``overwrite``) is read again, and a stale, half-written or missing
table costs time, not correctness. One fixed name means that coordinators ending at the same time overwrite
one table instead of leaving tables nobody points at; tables of older versions (``records-<sha>``) are
removed by the next consolidation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import collect_aiterator

from rat.shared.store.access import read_documents
from rat.shared.store.labels import complete, label_ids
from rat.shared.store.ngff import labels_listing_attrs
from rat.shared.store.schema import (
    ATTR,
    MISSING,
    READ_THREADS,
    ZSTD_LEVEL,
    image_key,
    provenance,
    retrying,
)
from rat.shared.store.stamps import key_stamps

POINTER = "records"
#: The one array that holds the table, and the prefix of the tables older versions named by their SHA-256.
TABLE, OLD_TABLES = "records-table", "records-"


def document_key(image_id: str) -> str:
    """The key of the metadata document that holds an image's record."""
    return f"labels/{image_key(image_id)}/zarr.json"


def _table(store: zarr.Group) -> dict[str, list]:
    """The consolidated table of the store's configuration ({key: [stamp, record]}), else {}."""
    prov = store.attrs.get(ATTR, {})
    pointer = prov.get(POINTER)
    if not pointer or pointer.get("fingerprint") != prov.get("fingerprint"):
        return {}
    try:
        payload = retrying(f"{store.store}: {pointer['array']}", lambda: bytes(store[pointer["array"]][...]))
    except Exception:  # noqa: BLE001 - missing, or half written by another coordinator: a cache miss
        return {}
    if hashlib.sha256(payload).hexdigest() != pointer["sha256"]:
        return {}
    return json.loads(payload)["rows"]


def read_records(store: zarr.Group, image_ids: Sequence[str], threads: int = READ_THREADS
            ) -> dict[str, dict[str, Any] | None]:
    """The complete records of these label maps made under the store's configuration (None for the others,
    as :func:`rat.shared.store.labels.record` says): from the consolidated table where their documents still
    carry its stamps, else read, concurrently."""
    fingerprint = store.attrs.get(ATTR, {}).get("fingerprint")
    keys = [document_key(i) for i in image_ids]
    table = _table(store)
    stamps = key_stamps(store.store, keys, "labels/") if table else None
    found: dict[str, Any] = {}
    if stamps is not None:
        for i, key in zip(image_ids, keys, strict=True):
            row = table.get(key)
            if row is not None and stamps[key] is not None and row[0] == stamps[key]:
                found[i] = row[1]
    rest = [i for i in image_ids if i not in found]
    docs = read_documents(store.store, [document_key(i) for i in rest], threads)
    found.update({i: (d or {}).get("attributes", {}).get(ATTR) for i, d in zip(rest, docs, strict=True)})
    return {i: complete(found[i], fingerprint) for i in image_ids}


def consolidate(store: zarr.Group) -> None:
    """The coordinator's last step: list the complete label maps in the NGFF attributes of ``labels``
    (for ome-zarr readers), and write the consolidated table of their records (see the module doc)."""
    ids = label_ids(store)
    keys = [document_key(i) for i in ids]
    stamps = key_stamps(store.store, keys, "labels/")      # stamped before read: a later rewrite mismatches
    found = read_records(store, ids)
    labels = store.require_group("labels")
    listed = labels_listing_attrs([image_key(i) for i, rec in found.items() if rec is not None])
    if labels.attrs.get("ome") != listed:                  # unchanged: not rewritten
        labels.attrs["ome"] = listed
    if stamps is None:
        return
    rows = {k: [stamps[k], found[i]] for i, k in zip(ids, keys, strict=True)
            if found[i] is not None and stamps[k] is not None}
    payload = json.dumps({"rows": rows}, separators=(",", ":"), sort_keys=True).encode()
    sha = hashlib.sha256(payload).hexdigest()
    prov = provenance(store)
    old = prov.get(POINTER) or {}
    if old.get("sha256") == sha and old.get("fingerprint") == prov.get("fingerprint") and \
            old.get("array") == TABLE:
        return
    try:
        arr = store.create_array(TABLE, shape=(len(payload),), dtype="uint8", chunks=(max(1, len(payload)),),
                                 compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), overwrite=True)
        arr[...] = np.frombuffer(payload, dtype=np.uint8)
    except (*MISSING, OSError, ValueError):
        return  # another coordinator rewrote it meanwhile: its table (or none) stands, a cache either way
    pointer = {"array": TABLE, "sha256": sha, "fingerprint": prov.get("fingerprint"), "entries": len(rows)}
    store.attrs[ATTR] = {**prov, POINTER: pointer}
    names = collect_aiterator(store.store.list_dir(store.path or ""))   # names only: no node is opened
    for name in [k for k in names if k.startswith(OLD_TABLES) and k != TABLE]:
        try:
            del store[name]
        except (*MISSING, OSError, ValueError):
            pass  # another coordinator removed it already


def store_summary(store: zarr.Group) -> dict[str, Any]:
    """Provenance, counts and region statistics of a store."""
    prov = provenance(store)
    ids = label_ids(store)
    found = list(read_records(store, ids).values())
    regions = np.array([r["regions"] for r in found if r is not None], dtype=np.int64)
    stats = ({"min": int(regions.min()), "median": float(np.median(regions)),
              "mean": float(regions.mean()), "max": int(regions.max())} if regions.size else {})
    return {"provenance": {k: v for k, v in prov.items() if k not in ("definition", POINTER)},
            "label_maps": len(ids), "complete": int(sum(r is not None for r in found)),
            "incomplete": [i for i, r in zip(ids, found, strict=True) if r is None], "regions": stats}
