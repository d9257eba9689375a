"""The batch runner: one label map per LQ image of the index, written to the store, resumable.

`process_entry` is the unit of work (also what dask workers run): it skips an image whose record is
complete for this configuration and source, otherwise reads, renders, generates and writes, and turns any
failure into a one-line reason instead of an exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from rat.precompute.generators import Generator
from rat.precompute.window import render_for_sam
from rat.shared import store as st
from rat.shared.io import ImageReadError, sha256_file
from rat.shared.manifest import DatasetDef, Entry, read_lq


@dataclass(frozen=True)
class Outcome:
    image_id: str
    status: str          # "done" | "skipped" | "failed"
    reason: str = ""
    seconds: float = 0.0
    regions: int = 0


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"i/n" -> (i, n) with 0 <= i < n."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def select(entries: Sequence[Entry], split: str | None = None, shard: tuple[int, int] | None = None,
           limit: int | None = None) -> list[Entry]:
    """Entries of one split, one shard (every n-th by sorted id, from i), at most `limit` of them."""
    chosen = sorted((e for e in entries if split in (None, "all", e.split)), key=lambda e: e.id)
    if shard is not None:
        i, n = shard
        chosen = chosen[i::n]
    return chosen[:limit] if limit is not None else chosen


def sam_windows(ds: DatasetDef) -> dict[str, dict[str, Any]]:
    """The SAM window of every group, as recorded in the store."""
    return {name: {"kind": g.sam_window.kind, "low": g.sam_window.low, "high": g.sam_window.high}
            for name, g in sorted(ds.groups.items())}


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def source_sha256(path: Path) -> str:
    """SHA-256 of an LQ file, computed once per file version (volumes hold many slices)."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def compute_labels(entry: Entry, root: Path, ds: DatasetDef, generator: Generator) -> np.ndarray:
    """Read the LQ image of `entry`, check it is the indexed one, render it for SAM, make its label map."""
    path = Path(root) / entry.lq
    if not path.exists():
        raise ImageReadError(entry.lq, "file not found")
    if source_sha256(path) != entry.sha256:
        raise ImageReadError(entry.lq, "changed since the index was written (SHA-256 differs): "
                             "rerun `rat-precompute manifest`")
    image, _ = read_lq(entry, root)
    rgb = render_for_sam(image, ds.groups[entry.group].sam_window)
    labels = generator(rgb)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"{entry.id}: generator returned {labels.shape} for an image of "
                         f"{image.shape[:2]}")
    return labels


def process_entry(entry: Entry, root: Path, ds: DatasetDef, generator: Generator,
                  group: zarr.Group, overwrite: bool = False,
                  chunk: int = st.DEFAULT_CHUNK) -> Outcome:
    """Make and store the label map of one image unless it is already there; never raises for bad items."""
    start = time.perf_counter()
    try:
        rec = None if overwrite else st.record(group, entry.id)
        if rec is not None and rec.get("source_sha256") == entry.sha256:
            return Outcome(entry.id, "skipped", regions=int(rec.get("regions", 0)))
        labels = compute_labels(entry, Path(root), ds, generator)
        rec = st.write_labels(group, entry.id, labels, entry.sha256, chunk=chunk)
    except (ImageReadError, st.StoreError, ValueError, RuntimeError, OSError) as err:
        return Outcome(entry.id, "failed", _one_line(err), time.perf_counter() - start)
    return Outcome(entry.id, "done", seconds=time.perf_counter() - start,
                   regions=int(rec["regions"]))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def run_masks(ds: DatasetDef, entries: Iterable[Entry], root: Path, out: str | Path,
              generator: Generator, overwrite: bool = False, chunk: int = st.DEFAULT_CHUNK,
              progress: bool = True) -> list[Outcome]:
    """Label maps for `entries` into the store at `out` (created or resumed). One Outcome per entry."""
    entries = list(entries)
    prov = st.make_provenance(ds.name, generator.provenance(), sam_windows(ds), chunk)
    group = st.init_store(out, prov, overwrite=overwrite)
    return run_each(entries, lambda e: process_entry(e, root, ds, generator, group, overwrite, chunk),
                    "label maps", progress)


def run_each(entries: Sequence[Entry], work: Callable[[Entry], Outcome], desc: str,
             progress: bool = True) -> list[Outcome]:
    """`work` on every entry in order, with a progress bar of done/skipped/failed counts."""
    from tqdm import tqdm

    outcomes: list[Outcome] = []
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = tqdm(entries, desc=desc, unit="img", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    for entry in bar:
        outcome = work(entry)
        outcomes.append(outcome)
        counts[outcome.status] += 1
        if outcome.status == "failed" and progress:
            bar.write(f"failed: {outcome.reason}")
        bar.set_postfix(counts, refresh=False)
    return outcomes


def summarize(outcomes: Sequence[Outcome], done: str = "done",
              skipped: str = "skipped (already complete)") -> str:
    """Multi-line summary: counts, median time (and regions), then one line per failure."""
    by = {s: [o for o in outcomes if o.status == s] for s in ("done", "skipped", "failed")}
    lines = [f"{len(by['done'])} {done}, {len(by['skipped'])} {skipped}, {len(by['failed'])} failed"]
    if by["done"]:
        secs = sorted(o.seconds for o in by["done"])
        line = f"  median {secs[len(secs) // 2]:.2f} s/image"
        regions = sorted(o.regions for o in by["done"])
        if regions[-1]:
            line += (f", regions per image min {regions[0]} / median {regions[len(regions) // 2]} "
                     f"/ max {regions[-1]}")
        lines.append(line)
    lines += [f"  FAILED {o.image_id}: {o.reason}" for o in by["failed"]]
    return os.linesep.join(lines)
