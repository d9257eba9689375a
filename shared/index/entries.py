"""The per-image index of a dataset: its entries, the CSV they are kept in, and reading an entry's images.

The index has one :class:`Entry` per 2-D image (one per kept slice for volume groups), sorted by id and
written as CSV (:func:`write_index`) with the columns ``id, group, split, lq, hq, slice, sha256, shape,
axis``; by default at ``<root>/.rat/<name>.csv`` (:func:`index_path`), with the files left out and why in
``<root>/.rat/<name>.problems.csv``. It is built from a dataset definition by
:mod:`rat.shared.index.build`; :mod:`rat.shared.index.select` picks entries from it.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rat.shared.datasets.definition import DatasetDef
from rat.shared.datasets.splits import SPLITS
from rat.shared.errors import RatError
from rat.shared.index.hash_cache import source_sha256
from rat.shared.index.locate import source_path, state_dir
from rat.shared.io.base import ImageMeta, ImageReadError
from rat.shared.io.images import read_image

#: Columns of an index entry, in the index CSV and in the copy a label store keeps.
INDEX_COLUMNS = ("id", "group", "split", "lq", "hq", "slice", "sha256", "shape", "axis", "hq_sha256")
_INDEX_V1_COLUMNS = INDEX_COLUMNS[:-1]  # version 1 had no HQ hashes
PROBLEM_COLUMNS = ("path", "reason")


class IndexFileError(RatError, ValueError):
    """A missing or unreadable index file, or one made for another definition; one line naming the file."""


@dataclass(frozen=True)
class Entry:
    """One 2-D image of the index.

    lq/hq: posix paths relative to the data root (derived LQ images: ``.rat/derived/...``, in the root's
    state folder, see :func:`rat.shared.index.locate.source_path`); for volumes, slice is the index along axis
    ``axis`` of the volume (both None for 2-D images); sha256 and hq_sha256: SHA-256 of the LQ and HQ
    files; shape: the LQ image's (H, W) or (H, W, C).
    """

    id: str
    group: str
    split: str
    lq: str
    hq: str
    slice: int | None
    sha256: str
    shape: tuple[int, ...]
    axis: int | None = None
    hq_sha256: str = ""


@dataclass(frozen=True)
class Problem:
    """A file left out of the index, and why (path relative to the data root where possible)."""

    path: str
    reason: str


def index_path(ds: DatasetDef, root: str | Path) -> Path:
    """Default index location: ``<root>/.rat/<name>.csv`` (see :func:`rat.shared.index.locate.state_dir`)."""
    return state_dir(root) / f"{ds.name}.csv"


def problems_path(index: str | Path) -> Path:
    """Where the problems of an index are written: ``<index stem>.problems.csv`` beside it."""
    index = Path(index)
    return index.with_name(f"{index.stem}.problems.csv")


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def entry_row(e: Entry) -> list[str]:
    """An entry as strings, in INDEX_COLUMNS order."""
    return [e.id, e.group, e.split, e.lq, e.hq, "" if e.slice is None else str(e.slice), e.sha256,
            fmt_shape(e.shape), "" if e.axis is None else str(e.axis), e.hq_sha256]


def entry_from_row(row: Sequence[str]) -> Entry:
    """The entry of a row in INDEX_COLUMNS order (ValueError naming what is wrong)."""
    id_, group, split, lq, hq, slc, sha, shape, axis, hq_sha = row
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if (slc == "") != (axis == ""):
        raise ValueError("slice and axis are both set (volumes) or both empty")
    return Entry(id_, group, split, lq, hq, int(slc) if slc else None, sha,
                 tuple(int(s) for s in shape.split("x")), int(axis) if axis else None, hq_sha)


def write_index(entries: list[Entry], path: str | Path) -> None:
    """Write entries as CSV (columns INDEX_COLUMNS, "\\n" line ends, sorted by id)."""
    _write_csv(path, INDEX_COLUMNS, [entry_row(e) for e in sorted(entries, key=lambda e: e.id)])


def write_problems(problems: list[Problem], path: str | Path) -> None:
    """Write problems as CSV (columns path, reason)."""
    _write_csv(path, PROBLEM_COLUMNS, [(p.path, p.reason) for p in problems])


def read_problems(path: str | Path) -> list[Problem]:
    """The problems written by write_problems ([] when there is no such file)."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError:
        return []
    return [Problem(*row) for row in rows[1:] if len(row) == 2]


def _write_csv(path: str | Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(partial, path)


def read_index(path: str | Path) -> list[Entry]:
    """Read an index CSV written by write_index (or by version 1, without HQ hashes and stamps); errors
    name the file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise IndexFileError(f"{path}: cannot read index ({e})") from None
    header = tuple(rows[0]) if rows else ()
    if header not in (INDEX_COLUMNS, _INDEX_V1_COLUMNS):
        raise IndexFileError(f"{path}: not an index (header must be {','.join(INDEX_COLUMNS)})")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, expected {len(header)}")
            entries.append(entry_from_row(row if header == INDEX_COLUMNS else [*row, ""]))
        except ValueError as e:
            raise IndexFileError(f"{path}: line {line}: bad row ({e})") from None
    return entries


def load_index(ds: DatasetDef, root: str | Path, index: str | Path | None = None) -> list[Entry]:
    """Read the dataset's index (default :func:`index_path`); its groups must be ds's."""
    path = Path(index) if index is not None else index_path(ds, root)
    if not path.is_file():
        dataset = ds.name if ds.builtin else str(ds.source)
        hint = "" if index is None else f" --index {path}"
        raise IndexFileError(f"{path}: no index; run `rat-precompute index --dataset {dataset} "
                            f"--root {root}{hint}` first (masks and cache build it themselves)")
    entries = read_index(path)
    unknown = sorted({e.group for e in entries} - set(ds.groups))
    if unknown:
        raise IndexFileError(f"{path}: group {unknown[0]!r} is not in dataset {ds.name!r} "
                            f"({ds.source}); rebuild the index")
    return entries


def read_lq(entry: Entry, root: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """The entry's LQ image (float32 (H, W) or (H, W, C); a slice for volumes) and its ImageMeta."""
    return _read(source_path(root, entry.lq), entry)


def read_hq(entry: Entry, root: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """The entry's HQ image (float32 (H, W) or (H, W, C); a slice for volumes) and its ImageMeta."""
    return _read(source_path(root, entry.hq), entry)


def _read(path: Path, entry: Entry) -> tuple[np.ndarray, ImageMeta]:
    if entry.slice is None:
        return read_image(path)
    return read_image(path, index=entry.slice, axis=entry.axis)


def index_report(entries: list[Entry], problems: list[Problem]) -> str:
    """What an index holds, as printable lines: counts per group and split, then the problems (the outcomes
    of a batch job are :func:`rat.shared.jobs.summarize`'s)."""
    counts = Counter((e.group, e.split) for e in entries)
    lines = [f"{len(entries)} images indexed, {len(problems)} problem(s)"]
    for group in sorted({g for g, _ in counts}):
        parts = ", ".join(f"{s} {counts[(group, s)]}" for s in SPLITS)
        lines.append(f"  {group}: {parts}")
    lines += [f"  problem: {p.path}: {p.reason}" for p in problems]
    return "\n".join(lines)


def checked_lq(entry: Entry, root: str | Path) -> Path:
    """The entry's LQ file under ``root``; ImageReadError (naming the file as the index does, relative to
    the root) when it is missing or no longer the indexed bytes."""
    path = source_path(root, entry.lq)
    if not path.exists():
        raise ImageReadError(entry.lq, "file not found")
    if source_sha256(path) != entry.sha256:
        raise ImageReadError(entry.lq, "changed since the index was written (SHA-256 differs): "
                             "rerun `rat-precompute index`")
    return path
