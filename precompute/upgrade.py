"""Upgrading a label store of schema 1 in place to schema 2.

Schema 1 kept each label map as the array ``labels/<key>`` with its record, and nothing about its dataset.
The upgrade rewrites each complete label map whose bytes still match their recorded SHA-256 as an OME-Zarr
label image (``labels/<key>/0``, same values, same chunks) under the schema-2 fingerprint, records the
dataset's definition, index and root, and only then switches the root record to schema 2. Until that last
step the store reads as the schema-1 store it was; an interrupted upgrade is resumed by running it again.
Label maps that are incomplete or whose bytes changed are left out (reported) and recomputed by `masks`.
"""

from __future__ import annotations

from pathlib import Path

from rat.shared import store as st
from rat.shared.batch import Outcome, run_each, summarize
from rat.shared.datasets import DatasetDef
from rat.shared.errors import one_line
from rat.shared.index import Entry
from rat.shared.manifest import derivation_versions
from rat.shared.store_dataset import record_dataset, refresh_labels_list


def upgrade_store(url: str | Path, ds: DatasetDef, entries: list[Entry], root: str | Path,
                  progress: bool = True) -> str:
    """Upgrade the store at ``url`` (see the module doc); returns a summary to print."""
    group = st.open_store(url, mode="a")
    old = st.provenance(group)
    if old["dataset"] != ds.name:
        raise st.StoreError(f"{url}: label maps of dataset {old['dataset']!r}, not {ds.name!r}")
    new = st.make_provenance(old["dataset"], old["generator"], old["windows"], int(old["chunk"][0]))
    if old["schema"] == st.SCHEMA_VERSION:
        record_dataset(group, ds, entries, root, derivation_versions(root, entries))
        refresh_labels_list(group)
        return f"{url}: already schema {st.SCHEMA_VERSION}; its dataset record was refreshed"

    def convert(image_id: str) -> Outcome:
        node = group[f"labels/{st.image_key(image_id)}"]
        rec = node.attrs.get(st.ATTR)
        if not hasattr(node, "shape"):  # converted by an earlier, interrupted upgrade
            ok = isinstance(rec, dict) and rec.get("fingerprint") == new["fingerprint"]
            return Outcome(image_id, "skipped" if ok else "failed", "" if ok else "not a schema-1 label map")
        complete = isinstance(rec, dict) and rec.get("complete")
        if not complete or rec.get("fingerprint") != old["fingerprint"]:
            return Outcome(image_id, "failed", "incomplete label map: left out, `masks` recomputes it")
        labels = node[...]
        if st.labels_sha256(labels) != rec["labels_sha256"]:
            return Outcome(image_id, "failed", "label bytes do not match their recorded SHA-256: left out")
        st.write_labels(group, image_id, labels, rec["source_sha256"], chunk=int(node.chunks[0]),
                        fingerprint=new["fingerprint"])
        return Outcome(image_id, "done", regions=int(rec.get("regions", 0)))

    def safely(image_id: str) -> Outcome:
        try:
            return convert(image_id)
        except (st.StoreError, *st.MISSING, ValueError, OSError) as err:
            return Outcome(image_id, "failed", one_line(err))

    outcomes = run_each(st.label_ids(group), safely, "upgrade", progress)
    group.attrs[st.ATTR] = new
    record_dataset(group, ds, entries, root, derivation_versions(root, entries))
    refresh_labels_list(group)
    return (f"{url}: upgraded to schema {st.SCHEMA_VERSION}\n"
            + summarize(outcomes, done="label maps converted", skipped="already converted"))
