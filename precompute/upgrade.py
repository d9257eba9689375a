"""Upgrading a label store of schema 1 in place to schema 2.

Schema 1 (read through :mod:`rat.shared.store.legacy`) kept nothing about its dataset and no NGFF metadata.
The upgrade rewrites each complete label map whose bytes still match their recorded SHA-256 as an OME-Zarr
label image (``labels/<key>/0``, same values, same chunks) under the schema-2 fingerprint, records the
dataset's definition, index and root, and only then switches the root record to schema 2. Until that last
step the store reads as the schema-1 store it was; an interrupted upgrade is resumed by running it again.
Label maps that are incomplete or whose bytes changed are left out (reported) and recomputed by `masks`.
"""

from __future__ import annotations

from pathlib import Path

from rat.shared import store as st
from rat.shared.datasets import DatasetDef
from rat.shared.errors import one_line
from rat.shared.index import Entry
from rat.shared.index.build import derivation_versions
from rat.shared.jobs import Outcome, run_each, summarize
from rat.shared.store import legacy


def upgrade_store(url: str | Path, ds: DatasetDef, entries: list[Entry], root: str | Path,
                  progress: bool = True) -> str:
    """Upgrade the store at ``url`` (see the module doc); returns a summary to print."""
    store = st.open_store(url, mode="a")
    old = st.provenance(store)
    if old["dataset"] != ds.name:
        raise st.StoreError(f"{url}: label maps of dataset {old['dataset']!r}, not {ds.name!r}")
    new = st.make_provenance(old["dataset"], old["generator"], old["windows"], int(old["chunk"][0]))
    if not legacy.is_legacy(old):
        st.record_dataset(store, ds, entries, root, derivation_versions(root, entries))
        st.consolidate(store)
        return f"{url}: already schema {st.SCHEMA_VERSION}; its dataset record was refreshed"
    seen = legacy.view(store)  # the old label maps, read in the new layout

    def convert(image_id: str) -> Outcome:
        rec = st.record(seen, image_id)
        if rec is None:
            done = store[f"labels/{st.image_key(image_id)}"].attrs.get(st.ATTR)
            converted = isinstance(done, dict) and done.get("fingerprint") == new["fingerprint"]
            if converted and done.get("complete"):
                return Outcome(image_id, "skipped")  # converted by an earlier, interrupted upgrade
            return Outcome(image_id, "failed", "incomplete label map: left out, `masks` recomputes it")
        array = st.label_array(seen, image_id)
        labels = array[...]
        if st.labels_sha256(labels) != rec["labels_sha256"]:
            return Outcome(image_id, "failed", "label bytes do not match their recorded SHA-256: left out")
        st.write_labels(store, image_id, labels, rec["source_sha256"], chunk=int(array.chunks[0]),
                        fingerprint=new["fingerprint"])
        return Outcome(image_id, "done", regions=int(rec.get("regions", 0)))

    def safely(image_id: str) -> Outcome:
        try:
            return convert(image_id)
        except (st.StoreError, *st.MISSING, ValueError, OSError) as err:
            return Outcome(image_id, "failed", one_line(err))

    outcomes = run_each(st.label_ids(seen), safely, "upgrade", progress)
    store.attrs[st.ATTR] = new
    st.record_dataset(store, ds, entries, root, derivation_versions(root, entries))
    st.consolidate(store)
    return (f"{url}: upgraded to schema {st.SCHEMA_VERSION}\n"
            + summarize(outcomes, done="label maps converted", skipped="already converted"))
