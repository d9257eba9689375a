"""The dataset a label store carries (schema 2): the definition's text, the index, the root it was made from.

With these a store is a complete hand-over: ``rat-train --masks STORE`` needs nothing else but the data under
a root. The coordinator of a run (the `masks` command, `upgrade`, `merge`) records them
(:func:`record_dataset`); the index is kept as UTF-8 JSON in a one-chunk array named after its SHA-256
(``index-<sha>``), so that rewriting it never exposes half an index, and the root record points at it.
:func:`dataset_for` is how every command gets from a store to its definition, entries and data root.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import zarr

from rat.shared.datasets.definition import DatasetDef
from rat.shared.datasets.load import definition_from_text, load_dataset
from rat.shared.errors import ParamError
from rat.shared.index.build import index_entries
from rat.shared.index.entries import INDEX_COLUMNS, Entry, entry_from_row, entry_row
from rat.shared.index.locate import resolve_root
from rat.shared.index.select import with_val_split
from rat.shared.store.schema import ATTR, MISSING, ZSTD_LEVEL, StoreError, provenance, retrying

log = logging.getLogger(__name__)


def record_dataset(store: zarr.Group, ds: DatasetDef, entries: Iterable[Entry], root: str | Path,
                   derive_versions: list[dict[str, str]] | None = None) -> None:
    """Write the index and the definition, root and derivation versions into the store (coordinator only)."""
    rows = [entry_row(e) for e in sorted(entries, key=lambda e: e.id)]
    payload = json.dumps({"columns": list(INDEX_COLUMNS), "rows": rows}, separators=(",", ":")).encode()
    sha = hashlib.sha256(payload).hexdigest()
    name = f"index-{sha[:16]}"
    prov = provenance(store)
    if prov.get("index", {}).get("sha256") != sha and name not in store:
        arr = store.create_array(name, shape=(len(payload),), dtype="uint8", chunks=(max(1, len(payload)),),
                                 compressors=zarr.codecs.ZstdCodec(level=ZSTD_LEVEL), overwrite=True)
        arr[...] = np.frombuffer(payload, dtype=np.uint8)
        arr.attrs[ATTR] = {"sha256": sha, "entries": len(rows), "columns": list(INDEX_COLUMNS)}
    new = {**prov,
           "definition": {"name": ds.name, "text": ds.text, "sha256": ds.sha256, "builtin": ds.builtin},
           "root": str(Path(root).resolve()),
           "index": {"array": name, "sha256": sha, "entries": len(rows)}}
    if derive_versions:
        new["derive_versions"] = derive_versions
    if new != prov:
        store.attrs[ATTR] = new


def store_definition(store: zarr.Group) -> DatasetDef | None:
    """The dataset definition a store carries (None for stores that carry none: schema 1); StoreError when its
    text is not the one recorded (its SHA-256 differs: edited in the store's root record)."""
    d = provenance(store).get("definition")
    if not d:
        return None
    if hashlib.sha256(str(d.get("text", "")).encode("utf-8")).hexdigest() != d.get("sha256"):
        raise StoreError(f"{store.store}: the dataset definition it carries ({d.get('name')}) does not match "
                         "its recorded SHA-256 (its text was edited in zarr.json); restore it, or record the "
                         "definition again with `rat-precompute upgrade --dataset DEFINITION`")
    if d.get("builtin"):
        builtin = load_dataset(d["name"])
        if builtin.sha256 == d["sha256"]:
            return builtin
    return definition_from_text(d["text"], f"{store.store} (definition {d['name']})")


def store_index(store: zarr.Group) -> list[Entry] | None:
    """The index a store carries (None when it carries none); StoreError if its bytes are not the recorded."""
    pointer = provenance(store).get("index")
    if not pointer:
        return None
    name = pointer["array"]
    try:
        payload = retrying(f"{store.store}: {name}", lambda: bytes(store[name][...]))
    except MISSING:
        raise StoreError(f"{store.store}: the index {name} the store points at is missing") from None
    if hashlib.sha256(payload).hexdigest() != pointer["sha256"]:
        raise StoreError(f"{store.store}: the index {name} does not match its recorded SHA-256")
    doc = json.loads(payload)
    columns = tuple(doc["columns"])
    if columns != INDEX_COLUMNS:
        raise StoreError(f"{store.store}: index columns {columns} are not {INDEX_COLUMNS}")
    return [entry_from_row(row) for row in doc["rows"]]


def recorded_root(store: zarr.Group) -> str | None:
    """The data root a store was made from (a hint: it may not exist here)."""
    return provenance(store).get("root")


def dataset_for(store: zarr.Group | None, dataset: str | None = None, root: str | Path | None = None,
                index: str | Path | None = None, progress: bool = False
                ) -> tuple[DatasetDef, list[Entry], Path]:
    """The dataset definition, index entries and data root to use with a label store (or without one).

    A store that carries its definition and index: without ``dataset`` (or with the same definition) they are
    used as they are; the root is resolved as :func:`rat.shared.index.locate.resolve_root` says, with the
    store's recorded root as the last resort. With another definition, a store that carries none (schema 1)
    or no store, ``dataset`` is required and the index under the root is built or brought up to date. An
    ``index`` file named by the user is used as it is. An index without a validation split (made before
    there were any) gets one carved from its training units (:func:`rat.shared.index.select.with_val_split`),
    and a note says so.
    """
    carried = store_definition(store) if store is not None else None
    if dataset is None and carried is None:
        if store is not None:
            raise ParamError("dataset", f"{store.store} is a schema-1 store, which does not carry its "
                             "dataset: pass it (and the data root), or upgrade the store")
        raise ParamError("dataset", "is required")
    ds = load_dataset(dataset) if dataset is not None else carried
    if store is not None and ds.name != provenance(store).get("dataset"):
        raise StoreError(f"{store.store}: label maps of dataset {provenance(store).get('dataset')!r}, "
                         f"not {ds.name!r}")
    path = resolve_root(ds, root, recorded_root(store) if store is not None else None)
    entries = None
    if carried is not None and carried.sha256 == ds.sha256 and index is None:
        entries = store_index(store)
    if entries is None:
        entries = index_entries(ds, path, index, progress)
    entries, note = with_val_split(ds, entries)
    if note:
        log.warning(note)
    return ds, entries, path
