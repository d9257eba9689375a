"""Every check of a store against the images it serves, in one place.

- :func:`label_problem`: an entry's label map exists with a complete record, was made from the entry's LQ
  bytes (the index's SHA-256) and has the entry's (H, W). :func:`checked_labels` raises on it.
- :func:`verify`: that, and the label bytes against their recorded SHA-256, and optionally the LQ file under
  the data root against the index (the ``verify`` command).
- :func:`source_problems`: the LQ and HQ files under a local root against the store's SHA-256s (a colleague's
  copy of the data); missing derived LQ images are derived again first.
- :func:`check_for_training`: all of these for the images a run uses, before its first step; StoreError
  listing every problem by image id. Records come in one batch
  (:func:`rat.shared.store.records.read_records`), files are hashed through the hash cache, and a label map
  whose store objects still carry the version stamps (:mod:`rat.shared.store.stamps`) they had when its
  bytes last matched their SHA-256 is not read again; the others are read and hashed once, in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zarr
from tqdm import tqdm

from rat.shared.datasets.definition import DatasetDef
from rat.shared.datasets.degrade import derive_versions
from rat.shared.index.build import ensure_derived
from rat.shared.index.entries import Entry
from rat.shared.index.hash_cache import checked, remember_checked, source_sha256_many
from rat.shared.index.locate import source_path
from rat.shared.store.labels import label_array, read_labels, record
from rat.shared.store.records import read_records
from rat.shared.store.schema import StoreError, image_key, provenance
from rat.shared.store.stamps import key_stamps

#: Problems listed in an error before it says "... and N more".
MAX_LISTED = 20
#: Threads of the checks: zstd, SHA-256 and file reads release the GIL.
THREADS = 8


def _label_problem(entry: Entry, rec: dict[str, Any] | None) -> str | None:
    if rec is None:
        return f"{entry.id}: missing or incomplete label map"
    if rec["source_sha256"] != entry.sha256:
        return f"{entry.id}: label map made from other LQ bytes than the index's {entry.lq}"
    if list(rec["shape"]) != list(entry.shape[:2]):
        return f"{entry.id}: label map shape {rec['shape']} != image shape {list(entry.shape[:2])}"
    return None


def label_problem(store: zarr.Group, entry: Entry) -> str | None:
    """Why the label map of an index entry cannot be used (one line), or None (see the module doc)."""
    return _label_problem(entry, record(store, entry.id))


def checked_labels(store: zarr.Group, entry: Entry) -> zarr.Array:
    """The label array of an index entry; StoreError naming the problem of :func:`label_problem`."""
    problem = label_problem(store, entry)
    if problem is not None:
        raise StoreError(problem)
    return label_array(store, entry.id)


def _bytes_problem(store: zarr.Group, image_id: str) -> str | None:
    try:
        read_labels(store, image_id)
    except StoreError as err:
        return str(err)
    return None


def _object_keys(image_id: str, rec: dict[str, Any]) -> list[str] | None:
    """The store objects a label map's bytes come from (array metadata, chunks), from its record's shape
    and chunks (None for records without chunks: older stores)."""
    if "chunks" not in rec:
        return None
    base = f"labels/{image_key(image_id)}/0"
    (h, w), (ch, cw) = rec["shape"], rec["chunks"]
    grid = [(i, j) for i in range(-(-h // ch)) for j in range(-(-w // cw))]
    return [f"{base}/zarr.json", *(f"{base}/c/{i}/{j}" for i, j in grid)]


def bytes_problems(store: zarr.Group, entries: Sequence[Entry], recs: dict[str, dict[str, Any] | None],
                   remember: bool = False, threads: int = THREADS, progress: bool = False
                   ) -> dict[str, str | None]:
    """Whether the label bytes of entries with a complete record match their recorded SHA-256 (read and
    hashed in parallel). With ``remember``, maps whose store objects still carry the stamps they had when
    they last matched are not read again, and those that match now are remembered (local hash cache)."""
    todo = [e for e in entries if recs.get(e.id) is not None]
    stamps: dict[str, str] = {}
    if remember:
        keys = {e.id: _object_keys(e.id, recs[e.id]) for e in todo}
        found = key_stamps(store.store, [k for ks in keys.values() if ks for k in ks], "labels/")
        if found is not None:
            stamps = {i: "|".join(found[k] or "-" for k in ks) for i, ks in keys.items() if ks}
        names = {i: f"{store.store}|{image_key(i)}" for i in stamps}
        known = checked("labels", list(names.values()))
        todo = [e for e in todo if known.get(names.get(e.id, "")) != (stamps.get(e.id),
                                                                     recs[e.id]["labels_sha256"])]
    problems = dict(zip((e.id for e in todo), _parallel(lambda e: _bytes_problem(store, e.id), todo, threads,
                                                       "check label bytes", progress), strict=True))
    if remember:
        remember_checked("labels", [(f"{store.store}|{image_key(i)}", stamps[i], recs[i]["labels_sha256"])
                                    for i, p in problems.items() if p is None and i in stamps])
    return problems


def remember_written(store: zarr.Group, recs: dict[str, dict[str, Any] | None]) -> None:
    """Remember label maps a run has just written (their records ``recs``) as checked, by the stamps their
    store objects carry now: later checks (:func:`bytes_problems` with ``remember``) read them only when
    their objects change. One listing (or a stat per object), no read of label bytes."""
    keys = {i: _object_keys(i, r) for i, r in recs.items() if r is not None}
    keys = {i: ks for i, ks in keys.items() if ks}
    found = key_stamps(store.store, [k for ks in keys.values() for k in ks], "labels/") if keys else None
    if found is None:
        return
    remember_checked("labels", [(f"{store.store}|{image_key(i)}", "|".join(found[k] or "-" for k in ks),
                                 recs[i]["labels_sha256"]) for i, ks in keys.items()
                                if all(found[k] is not None for k in ks[:1])])


def _versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v[k]}" for k in sorted(v))


def source_problem(ds: DatasetDef, entry: Entry, root: str | Path,
                   recorded_versions: list[dict[str, str]] | None = None,
                   hashes: dict[str, str | None] | None = None) -> str | None:
    """Whether the LQ and HQ files of ``entry`` under ``root`` are those the store was made from (one line),
    or None. A derived LQ image is derived again when missing; if its bytes differ, the library versions
    recorded with the store and those present here are named. ``hashes``: the files' SHA-256 by path, known
    already (:func:`rat.shared.index.hash_cache.source_sha256_many`; None for a missing file)."""
    e = entry
    hq = Path(root) / e.hq
    known = hashes if hashes is not None else source_sha256_many([hq, source_path(root, e.lq)])

    def sha(path: Path) -> str | None:
        return known[str(path)] if str(path) in known else source_sha256_many([path])[str(path)]

    hq_sha = sha(hq)
    if hq_sha is None:
        return f"{e.id}: HQ file {hq} not found"
    if e.hq_sha256 and hq_sha != e.hq_sha256:
        return f"{e.id}: HQ file {hq} differs from the one the store was made with (SHA-256)"
    method = ds.groups[e.group].derive_lq if e.group in ds.groups else None
    if method is not None:
        _, sha = ensure_derived(ds.name, method, root, e.hq, e.hq_sha256 or hq_sha)
        if sha == e.sha256:
            return None
        recorded = "; ".join(_versions(v) for v in recorded_versions or []) or "not recorded"
        return (f"{e.id}: LQ derived here ({method}) differs from the store's: derived with {recorded} "
                f"there, {_versions(derive_versions())} here")
    lq = source_path(root, e.lq)
    lq_sha = sha(lq)
    if lq_sha is None:
        return f"{e.id}: LQ file {lq} not found"
    if lq_sha != e.sha256:
        return f"{e.id}: LQ file {lq} differs from the one the store was made with (SHA-256)"
    return None


def _parallel(work, items: Sequence[Any], threads: int, desc: str, progress: bool) -> list[Any]:
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(tqdm(pool.map(work, items), total=len(items), desc=desc, unit="img", leave=False,
                         disable=not progress))


def verify(store: zarr.Group, entries: Iterable[Entry], root: str | Path | None = None,
           hash_labels: bool = True, threads: int = THREADS, progress: bool = False) -> list[str]:
    """Problems of the store against index entries (one line each, in entry order; empty when all is well):
    :func:`label_problem`, with `root` the LQ file under the data root against the index, with
    `hash_labels` the label bytes against their SHA-256 (every one read: this is the thorough check)."""
    entries = list(entries)
    recs = read_records(store, [e.id for e in entries])
    found = [_label_problem(e, recs[e.id]) for e in entries]
    if root is not None:
        lq = [source_path(root, e.lq) for e in entries]
        hashes = source_sha256_many([p for p, f in zip(lq, found, strict=True) if f is None], threads)
        for k, e in enumerate(entries):
            if found[k] is None:
                sha = hashes[str(lq[k])]
                found[k] = (f"{e.id}: LQ file {lq[k]} not found" if sha is None else
                            f"{e.id}: LQ file {lq[k]} differs from the label map's source"
                            if sha != e.sha256 else None)
    if hash_labels:
        ok = [e for e, f in zip(entries, found, strict=True) if f is None]
        hashed = bytes_problems(store, ok, recs, threads=threads, progress=progress)
        found = [f if f is not None else hashed.get(e.id) for e, f in zip(entries, found, strict=True)]
    return [f for f in found if f is not None]


def source_problems(ds: DatasetDef, entries: Iterable[Entry], root: str | Path,
                    recorded_versions: list[dict[str, str]] | None = None, threads: int = THREADS,
                    progress: bool = False) -> list[str]:
    """:func:`source_problem` of every entry (one line each, in entry order), the files hashed together."""
    entries = list(entries)
    hashes = source_sha256_many([p for e in entries for p in (Path(root) / e.hq, source_path(root, e.lq))],
                                threads)
    derived = [e for e in entries if e.group in ds.groups and ds.groups[e.group].derive_lq]
    def problem(e: Entry) -> str | None:
        return source_problem(ds, e, root, recorded_versions, hashes)

    found = dict(zip((e.id for e in derived), _parallel(problem, derived, threads, "check derived images",
                                                       progress), strict=True))
    # the others only compare hashes known already: no I/O, no threads
    found.update({e.id: problem(e) for e in entries if e.id not in found})
    return [found[e.id] for e in entries if found[e.id] is not None]


def listing(header: str, problems: Sequence[str]) -> str:
    """``header`` and the first MAX_LISTED problems, indented, one per line."""
    more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
    return "\n".join([header, *(f"  {p}" for p in problems[:MAX_LISTED]), *more])


def check_labels(store: zarr.Group, entries: Sequence[Entry], url: str, hash_labels: bool = False,
                 progress: bool = False) -> None:
    """StoreError listing every entry whose label map fails :func:`verify` (without the data root)."""
    problems = verify(store, entries, hash_labels=hash_labels, progress=progress)
    if problems:
        raise StoreError(listing(f"{url}: {len(problems)} of {len(entries)} images cannot be used:",
                                 problems))


def check_for_training(store: zarr.Group, ds: DatasetDef, entries: Sequence[Entry], root: str | Path,
                       url: str, threads: int = THREADS, progress: bool = False) -> None:
    """Check every image a run uses, once (see the module doc): its label map (complete, made from its LQ
    bytes, its bytes matching their SHA-256) and its LQ and HQ files under ``root``. StoreError listing every
    problem by image id; nothing is trained on before this passes."""
    entries = list(entries)
    recs = read_records(store, [e.id for e in entries])
    labels = {e.id: _label_problem(e, recs[e.id]) for e in entries}
    labels.update(bytes_problems(store, [e for e in entries if labels[e.id] is None], recs, remember=True,
                                 threads=threads, progress=progress))
    bad = [labels[e.id] for e in entries if labels[e.id] is not None]
    if bad:
        raise StoreError(listing(f"{url}: {len(bad)} of {len(entries)} images cannot be used for "
                                 "training:", bad))
    sources = source_problems(ds, entries, root, provenance(store).get("derive_versions"), threads, progress)
    if sources:
        header = f"{root}: {len(sources)} images are not the files {url} was made from:"
        raise StoreError(listing(header, sources))
