"""Every check of a store against the images it serves, in one place.

- :func:`label_problem`: an entry's label map exists with a complete record, was made from the entry's LQ
  bytes (the index's SHA-256) and has the entry's (H, W). :func:`checked_labels` raises on it.
- :func:`verify`: that, and the label bytes against their recorded SHA-256, and optionally the LQ file under
  the data root against the index (the ``verify`` command).
- :func:`source_problems`: the LQ and HQ files under a local root against the store's SHA-256s (a colleague's
  copy of the data); missing derived LQ images are derived again first.
- :func:`check_for_training`: all of these for the images a run uses, in one parallel pass in which each
  label map is read and hashed once; StoreError listing every problem by image id.
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
from rat.shared.index.hash_cache import source_sha256
from rat.shared.index.locate import source_path
from rat.shared.store.labels import label_array, read_labels, record
from rat.shared.store.schema import StoreError, provenance

#: Problems listed in an error before it says "... and N more".
MAX_LISTED = 20
#: Threads of the checks: zstd, SHA-256 and file reads release the GIL.
THREADS = 8


def label_problem(group: zarr.Group, entry: Entry) -> str | None:
    """Why the label map of an index entry cannot be used (one line), or None (see the module doc)."""
    rec = record(group, entry.id)
    if rec is None:
        return f"{entry.id}: missing or incomplete label map"
    if rec["source_sha256"] != entry.sha256:
        return f"{entry.id}: label map made from other LQ bytes than the index's {entry.lq}"
    if list(rec["shape"]) != list(entry.shape[:2]):
        return f"{entry.id}: label map shape {rec['shape']} != image shape {list(entry.shape[:2])}"
    return None


def checked_labels(group: zarr.Group, entry: Entry) -> zarr.Array:
    """The label array of an index entry; StoreError naming the problem of :func:`label_problem`."""
    problem = label_problem(group, entry)
    if problem is not None:
        raise StoreError(problem)
    return label_array(group, entry.id)


def _bytes_problem(group: zarr.Group, image_id: str) -> str | None:
    try:
        read_labels(group, image_id)
    except StoreError as err:
        return str(err)
    return None


def _lq_problem(entry: Entry, root: str | Path) -> str | None:
    path = source_path(root, entry.lq)
    if not path.exists():
        return f"{entry.id}: LQ file {path} not found"
    if source_sha256(path) != entry.sha256:
        return f"{entry.id}: LQ file {path} differs from the label map's source"
    return None


def _versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v[k]}" for k in sorted(v))


def source_problem(ds: DatasetDef, entry: Entry, root: str | Path,
                   recorded_versions: list[dict[str, str]] | None = None) -> str | None:
    """Whether the LQ and HQ files of ``entry`` under ``root`` are those the store was made from (one line),
    or None. A derived LQ image is derived again when missing; if its bytes differ, the library versions
    recorded with the store and those present here are named."""
    e = entry
    hq = Path(root) / e.hq
    if not hq.exists():
        return f"{e.id}: HQ file {hq} not found"
    if e.hq_sha256 and source_sha256(hq) != e.hq_sha256:
        return f"{e.id}: HQ file {hq} differs from the one the store was made with (SHA-256)"
    method = ds.groups[e.group].derive_lq if e.group in ds.groups else None
    if method is not None:
        _, sha = ensure_derived(ds.name, method, root, e.hq, e.hq_sha256 or source_sha256(hq))
        if sha == e.sha256:
            return None
        recorded = "; ".join(_versions(v) for v in recorded_versions or []) or "not recorded"
        return (f"{e.id}: LQ derived here ({method}) differs from the store's: derived with {recorded} "
                f"there, {_versions(derive_versions())} here")
    lq = source_path(root, e.lq)
    if not lq.exists():
        return f"{e.id}: LQ file {lq} not found"
    if source_sha256(lq) != e.sha256:
        return f"{e.id}: LQ file {lq} differs from the one the store was made with (SHA-256)"
    return None


def _parallel(work, items: Sequence[Any], threads: int, desc: str, progress: bool) -> list[Any]:
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(tqdm(pool.map(work, items), total=len(items), desc=desc, unit="img", leave=False,
                         disable=not progress))


def verify(group: zarr.Group, entries: Iterable[Entry], root: str | Path | None = None,
           hash_labels: bool = True, threads: int = THREADS, progress: bool = False) -> list[str]:
    """Problems of the store against index entries (one line each, in entry order; empty when all is well):
    :func:`label_problem`, with `hash_labels` the label bytes against their SHA-256, with `root` the LQ file
    under the data root against the index."""
    def problem(entry: Entry) -> str | None:
        found = label_problem(group, entry)
        if found is None and root is not None:
            found = _lq_problem(entry, root)
        if found is None and hash_labels:
            found = _bytes_problem(group, entry.id)
        return found

    return [p for p in _parallel(problem, list(entries), threads, "verify", progress) if p is not None]


def source_problems(ds: DatasetDef, entries: Iterable[Entry], root: str | Path,
                    recorded_versions: list[dict[str, str]] | None = None, threads: int = THREADS,
                    progress: bool = False) -> list[str]:
    """:func:`source_problem` of every entry (one line each, in entry order)."""
    found = _parallel(lambda e: source_problem(ds, e, root, recorded_versions), list(entries), threads,
                      "check files", progress)
    return [p for p in found if p is not None]


def listing(header: str, problems: Sequence[str]) -> str:
    """``header`` and the first MAX_LISTED problems, indented, one per line."""
    more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
    return "\n".join([header, *(f"  {p}" for p in problems[:MAX_LISTED]), *more])


def check_labels(group: zarr.Group, entries: Sequence[Entry], store_name: str, hash_labels: bool = False,
                 progress: bool = False) -> None:
    """StoreError listing every entry whose label map fails :func:`verify` (without the data root)."""
    problems = verify(group, entries, hash_labels=hash_labels, progress=progress)
    if problems:
        raise StoreError(listing(f"{store_name}: {len(problems)} of {len(entries)} images cannot be used:",
                                 problems))


def check_for_training(group: zarr.Group, ds: DatasetDef, entries: Sequence[Entry], root: str | Path,
                       store_name: str, threads: int = THREADS, progress: bool = False) -> None:
    """Check every image a run uses, once: its label map (:func:`label_problem`, then its bytes against their
    SHA-256) and its LQ and HQ files under ``root`` (:func:`source_problem`). StoreError listing every
    problem by image id; nothing is trained on before this passes."""
    versions = provenance(group).get("derive_versions")

    def problems(entry: Entry) -> tuple[str | None, str | None]:
        labels = label_problem(group, entry) or _bytes_problem(group, entry.id)
        return labels, source_problem(ds, entry, root, versions)

    found = _parallel(problems, list(entries), threads, "check store", progress)
    labels = [p for p, _ in found if p is not None]
    if labels:
        raise StoreError(listing(f"{store_name}: {len(labels)} of {len(entries)} images cannot be used for "
                                 "training:", labels))
    sources = [p for _, p in found if p is not None]
    if sources:
        header = f"{root}: {len(sources)} images are not the files {store_name} was made from:"
        raise StoreError(listing(header, sources))
