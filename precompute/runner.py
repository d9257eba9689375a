"""The batch runner: one label map per LQ image of the index, written to the store, resumable.

`process_entry` is the unit of work (also what dask workers run): it skips an image whose record is
complete for this configuration and source, otherwise reads, renders, generates and writes, and turns any
failure into a one-line reason instead of an exception.

What a run computes (:func:`plan`): the images without a complete record for their LQ bytes, and those whose
label bytes no longer match their record (a damaged or swapped chunk: recomputed, and said so; maps checked
before are not read again while their store objects are unchanged, and the maps a run writes are remembered as
checked), less those another run that started earlier is computing on the same store
(:func:`rat.shared.store.leases.hold`: left to it, and said so).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import zarr

from rat.shared import store as st
from rat.shared.datasets import DatasetDef
from rat.shared.errors import one_line
from rat.shared.index.build import derivation_versions
from rat.shared.index.entries import Entry, checked_lq, read_lq
from rat.shared.io import ImageReadError
from rat.shared.jobs import Outcome, run_each
from rat.shared.regions import Generator, image_labels
from rat.shared.regions.window import sam_windows
from rat.shared.store.leases import Lease


def compute_labels(entry: Entry, root: Path, ds: DatasetDef, generator: Generator
                   ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read the LQ image of `entry`, check it is the indexed one, and make its label map
    (:func:`rat.shared.regions.image_labels`: rendered for SAM in its group's window, checked).

    Returns the (H, W) label map and the image's (row, col) pixel spacing in mm (None when unknown).
    """
    checked_lq(entry, root)
    image, meta = read_lq(entry, root)
    labels = image_labels(generator, image, ds.groups[entry.group].sam_window, entry.id)
    spacing = tuple(meta.spacing[:2]) if meta.spacing is not None else None
    return labels, spacing


def process_entry(entry: Entry, root: Path, ds: DatasetDef, generator: Generator,
                  store: zarr.Group, overwrite: bool = False, chunk: int = st.DEFAULT_CHUNK,
                  fingerprint: str | None = None, look: bool = True) -> Outcome:
    """Make and store the label map of one image unless it is already there; never raises for bad items.

    ``fingerprint``: of the configuration this process computes under (default: the store's). ``look``:
    read the image's record first (False when the caller has just read every record in one batch, as
    :func:`already_done` does: one store read less per image).
    """
    start = time.perf_counter()
    try:
        rec = None if overwrite or not look else st.record(store, entry.id)
        if rec is not None and rec.get("source_sha256") == entry.sha256:
            return Outcome(entry.id, "skipped", regions=int(rec.get("regions", 0)))
        labels, spacing = compute_labels(entry, Path(root), ds, generator)
        rec = st.write_labels(store, entry.id, labels, entry.sha256, chunk=chunk, fingerprint=fingerprint,
                              spacing=spacing)
    except (ImageReadError, st.StoreError, ValueError, RuntimeError, OSError) as err:
        return Outcome(entry.id, "failed", one_line(err), time.perf_counter() - start)
    return Outcome(entry.id, "done", seconds=time.perf_counter() - start,
                   regions=int(rec["regions"]))


#: The note of a label map recomputed because its bytes no longer matched its record.
REPAIRED = "recomputed: its label bytes no longer matched their record"
#: The start of the reason of an image left to another run.
LEFT = "left to another masks run on this store"


def already_done(store: zarr.Group, entries: list[Entry], overwrite: bool = False
                 ) -> tuple[dict[str, Outcome], set[str]]:
    """(skipped outcomes of the entries whose label map is complete for their LQ bytes under the store's
    configuration and intact, ids of those complete but whose bytes do not match their record). Records are
    read in one batch and label bytes only where their objects changed since they were last checked or
    written, so a rerun of a finished job reads little else."""
    if overwrite:
        return {}, set()
    found = st.read_records(store, [e.id for e in entries])
    complete = [e for e in entries
                if found[e.id] is not None and found[e.id].get("source_sha256") == e.sha256]
    problems = st.bytes_problems(store, complete, found, remember=True)
    damaged = {i for i, p in problems.items() if p is not None}
    return ({e.id: Outcome(e.id, "skipped", regions=int(found[e.id].get("regions", 0))) for e in complete
             if e.id not in damaged}, damaged)


def plan(store: zarr.Group, entries: list[Entry], overwrite: bool = False
         ) -> tuple[dict[str, Outcome], list[Entry], set[str], Lease]:
    """What this run computes (see the module doc): (outcomes of the entries it does not compute: complete,
    or left to another run; the entries to compute; the ids among them recomputed because damaged; this
    run's lease, to release when it ends)."""
    done, damaged = already_done(store, entries, overwrite)
    todo = [e for e in entries if e.id not in done]
    lease, held = st.hold(store, [e.id for e in todo])
    left = {i: Outcome(i, "skipped", f"{LEFT} ({who})") for i, who in held.items()}
    return {**done, **left}, [e for e in todo if e.id not in left], damaged, lease


def finish(store: zarr.Group, made: list[Outcome], damaged: set[str]) -> list[Outcome]:
    """The coordinator's end of a run: consolidate the records, remember the maps written as checked, and
    note the repaired ones."""
    st.consolidate(store)
    written = [o.image_id for o in made if o.status == "done"]
    if written:
        st.remember_written(store, st.read_records(store, written))
    return [replace(o, reason=REPAIRED) if o.status == "done" and o.image_id in damaged else o for o in made]


def open_run_store(ds: DatasetDef, index: list[Entry], root: Path, url: str | Path,
                   generator_provenance: dict, overwrite: bool = False, chunk: int = st.DEFAULT_CHUNK
                   ) -> tuple[zarr.Group, dict]:
    """The coordinator's part before any label map is made: create or check the store's configuration and
    record the dataset it belongs to (definition, full index, root). Returns (store, provenance)."""
    prov = st.make_provenance(ds.name, generator_provenance, sam_windows(ds), chunk)
    store = st.init_store(url, prov, overwrite=overwrite)
    st.record_dataset(store, ds, index, root, derivation_versions(root, index))
    return store, prov


def run_masks(ds: DatasetDef, entries: Iterable[Entry], root: Path, url: str | Path,
              generator: Generator, overwrite: bool = False, chunk: int = st.DEFAULT_CHUNK,
              progress: bool = True, index: list[Entry] | None = None) -> list[Outcome]:
    """Label maps for `entries` into the store at `url` (created or resumed). One Outcome per entry.

    ``index``: the whole index the entries were selected from (recorded in the store; default `entries`).
    """
    entries = list(entries)
    store, prov = open_run_store(ds, index if index is not None else entries, root, url,
                                 generator.provenance(), overwrite, chunk)
    done, todo, damaged, lease = plan(store, entries, overwrite)
    with lease:
        def work(e: Entry) -> Outcome:
            return process_entry(e, root, ds, generator, store, overwrite, chunk, prov["fingerprint"],
                                 look=False)

        made = run_each(todo, work, "label maps", progress)
        made = finish(store, made, damaged)
    outcomes = {**done, **{o.image_id: o for o in made}}
    return [outcomes[e.id] for e in entries]
