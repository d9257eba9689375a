"""The dataset a label store carries (schema 2): the definition's text, the index, the root it was made from.

With these a store is a complete hand-over: ``rat-train --masks STORE`` needs nothing else but the data under
a root. The coordinator of a run (the `masks` command, `upgrade`, `merge`) records them
(:func:`record_dataset`); the index is kept as UTF-8 JSON in a one-chunk array named after its SHA-256
(``index-<sha>``), so that rewriting it never exposes half an index, and the root record points at it.

On the receiving side, :func:`check_sources` compares the files under the local root with the store's
SHA-256s (LQ and HQ; hashes cached by path, size and mtime) and re-derives derived LQ images that are
missing, reporting exactly which images differ and, for derived ones, the library versions recorded and
present.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from rat.shared import store as st
from rat.shared.datasets import DatasetDef, definition_from_text, load_dataset
from rat.shared.index import INDEX_COLUMNS, Entry, entry_from_row, entry_row
from rat.shared.ngff import labels_group_attrs


def record_dataset(group: zarr.Group, ds: DatasetDef, entries: Iterable[Entry], root: str | Path,
                   derive_versions: list[dict[str, str]] | None = None) -> None:
    """Write the index and the definition, root and derivation versions into the store (coordinator only)."""
    rows = [entry_row(e) for e in sorted(entries, key=lambda e: e.id)]
    payload = json.dumps({"columns": list(INDEX_COLUMNS), "rows": rows}, separators=(",", ":")).encode()
    sha = hashlib.sha256(payload).hexdigest()
    name = f"index-{sha[:16]}"
    prov = st.provenance(group)
    if prov.get("index", {}).get("sha256") != sha and name not in group:
        arr = group.create_array(name, shape=(len(payload),), dtype="uint8", chunks=(max(1, len(payload)),),
                                 compressors=zarr.codecs.ZstdCodec(level=st.ZSTD_LEVEL), overwrite=True)
        arr[...] = np.frombuffer(payload, dtype=np.uint8)
        arr.attrs[st.ATTR] = {"sha256": sha, "entries": len(rows), "columns": list(INDEX_COLUMNS)}
    new = {**prov,
           "definition": {"name": ds.name, "text": ds.text, "sha256": ds.sha256, "builtin": ds.builtin},
           "root": str(Path(root).resolve()),
           "index": {"array": name, "sha256": sha, "entries": len(rows)}}
    if derive_versions:
        new["derive_versions"] = derive_versions
    if new != prov:
        group.attrs[st.ATTR] = new


def refresh_labels_list(group: zarr.Group) -> None:
    """List the complete label maps in the ``labels`` group's NGFF attributes (for ome-zarr readers)."""
    keys = [st.image_key(i) for i in st.label_ids(group) if st.record(group, i) is not None]
    labels = group.require_group("labels")
    if labels.attrs.get("ome") != labels_group_attrs(keys):  # unchanged: not rewritten
        labels.attrs["ome"] = labels_group_attrs(keys)


def store_definition(group: zarr.Group) -> DatasetDef | None:
    """The dataset definition a store carries (None for schema-1 stores)."""
    prov = st.provenance(group)
    d = prov.get("definition")
    if not d:
        return None
    if d.get("builtin"):
        builtin = load_dataset(d["name"])
        if builtin.sha256 == d["sha256"]:
            return builtin
    return definition_from_text(d["text"], f"{group.store} (definition {d['name']})")


def store_index(group: zarr.Group) -> list[Entry] | None:
    """The index a store carries (None for schema-1 stores); StoreError if its bytes are not the recorded."""
    pointer = st.provenance(group).get("index")
    if not pointer:
        return None
    name = pointer["array"]
    try:
        payload = st.retrying(f"{group.store}: {name}", lambda: bytes(group[name][...]))
    except st.MISSING:
        raise st.StoreError(f"{group.store}: the index {name} the store points at is missing") from None
    if hashlib.sha256(payload).hexdigest() != pointer["sha256"]:
        raise st.StoreError(f"{group.store}: the index {name} does not match its recorded SHA-256")
    doc = json.loads(payload)
    columns = tuple(doc["columns"])
    if columns != INDEX_COLUMNS:
        raise st.StoreError(f"{group.store}: index columns {columns} are not {INDEX_COLUMNS}")
    return [entry_from_row(row) for row in doc["rows"]]


def recorded_root(group: zarr.Group) -> str | None:
    """The data root a schema-2 store was made from (a hint: it may not exist here)."""
    return st.provenance(group).get("root")


def check_sources(ds: DatasetDef, entries: Iterable[Entry], root: str | Path,
                  recorded_versions: list[dict[str, str]] | None = None, progress: bool = False) -> list[str]:
    """Problems of the files under ``root`` against the entries' SHA-256s (one line per image, empty when all
    is well). Missing derived LQ images are derived again from their HQ file first; a derived image whose
    bytes differ names the library versions recorded with the store and those present here."""
    from tqdm import tqdm

    from rat.shared.degrade import derive_versions
    from rat.shared.hashes import source_sha256
    from rat.shared.locate import source_path
    from rat.shared.manifest import ensure_derived

    problems: list[str] = []
    here = derive_versions()
    for e in tqdm(list(entries), desc="check files", unit="img", disable=not progress, leave=False):
        hq = Path(root) / e.hq
        if not hq.exists():
            problems.append(f"{e.id}: HQ file {hq} not found")
            continue
        if e.hq_sha256 and source_sha256(hq) != e.hq_sha256:
            problems.append(f"{e.id}: HQ file {hq} differs from the one the store was made with (SHA-256)")
            continue
        method = ds.groups[e.group].derive_lq if e.group in ds.groups else None
        lq = source_path(root, e.lq)
        if method is not None:
            _, sha = ensure_derived(ds.name, method, root, e.hq, e.hq_sha256 or source_sha256(hq))
            if sha != e.sha256:
                recorded = "; ".join(_versions(v) for v in recorded_versions or []) or "not recorded"
                problems.append(f"{e.id}: LQ derived here ({method}) differs from the store's: derived with "
                                f"{recorded} there, {_versions(here)} here")
            continue
        if not lq.exists():
            problems.append(f"{e.id}: LQ file {lq} not found")
        elif source_sha256(lq) != e.sha256:
            problems.append(f"{e.id}: LQ file {lq} differs from the one the store was made with (SHA-256)")
    return problems


def _versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v[k]}" for k in sorted(v))


def dataset_for(group: zarr.Group | None, dataset: str | None = None, root: str | Path | None = None,
                index: str | Path | None = None, progress: bool = False
                ) -> tuple[DatasetDef, list[Entry], Path]:
    """The dataset definition, index entries and data root to use with a label store (or without one).

    A schema-2 store carries its definition and index: without ``dataset`` (or with the same definition)
    they are used as they are; the root is resolved as :func:`rat.shared.locate.resolve_root` says, with the
    store's recorded root as the last resort. With another definition, or a schema-1 store, or no store,
    ``dataset`` is required and the index under the root is built or brought up to date. An ``index`` file
    named by the user is used as it is.
    """
    from rat.shared.datasets import ManifestError
    from rat.shared.errors import ParamError
    from rat.shared.locate import resolve_root
    from rat.shared.manifest import index_entries

    carried = store_definition(group) if group is not None else None
    if dataset is None and carried is None:
        if group is not None:
            raise ParamError("dataset", f"{group.store} is a schema-1 store, which does not carry its "
                             "dataset: pass it (and the data root), or upgrade the store")
        raise ParamError("dataset", "is required")
    ds = load_dataset(dataset) if dataset is not None else carried
    if group is not None and ds.name != st.provenance(group).get("dataset"):
        raise ManifestError(f"{group.store}: label maps of dataset {st.provenance(group).get('dataset')!r}, "
                            f"not {ds.name!r}")
    recorded = recorded_root(group) if group is not None else None
    path = resolve_root(ds, root, recorded)
    if carried is not None and carried.sha256 == ds.sha256 and index is None:
        entries = store_index(group)
        if entries is not None:
            return ds, entries, path
    return ds, index_entries(ds, path, index, progress), path
