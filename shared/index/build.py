"""Building and refreshing the per-image index of a dataset: find, pair, check and split its images.

The definitions it is built from are :mod:`rat.shared.datasets`; the index itself (entries, CSV) is
:mod:`rat.shared.index.entries`. Derived LQ images are written once under ``<state folder>/derived/<name>/``
(:func:`rat.shared.index.locate.state_dir`: ``<root>/.rat`` where it can be written) in the HQ file's format
(PNG for JPEG), and the index points at them.

:func:`ensure_index` brings the index up to date: a pair of files whose size and modification time are
those recorded in the index, under an unchanged definition, is taken over without being read again; only
new and changed files are read and hashed.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rat.shared.datasets.definition import DatasetDef, DefinitionError, Group, channel_count, range_problem
from rat.shared.datasets.degrade import derive_lq, derive_versions
from rat.shared.datasets.patterns import FIELD, fill_pattern, match_files
from rat.shared.datasets.splits import split_units
from rat.shared.index.entries import (
    Entry,
    IndexFileError,
    Problem,
    fmt_shape,
    index_path,
    load_index,
    problems_path,
    read_index,
    write_index,
    write_problems,
)
from rat.shared.index.hash_cache import file_stamp, source_sha256
from rat.shared.index.locate import STATE_DIR, DataRootError, source_path
from rat.shared.io.base import ImageMeta, ImageReadError, describe_channels
from rat.shared.io.formats import output_name
from rat.shared.io.images import read_image, read_volume, write_image

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def derived_rel(ds_name: str, hq: str) -> str:
    """Index path of the derived LQ image of HQ file ``hq``: ``.rat/derived/<name>/<hq>`` (JPEG as PNG:
    :func:`rat.shared.io.formats.output_name`)."""
    return output_name(Path(STATE_DIR) / "derived" / ds_name / hq).as_posix()


def index_entries(ds: DatasetDef, root: str | Path, index: str | Path | None = None,
                  progress: bool = True) -> list[Entry]:
    """The entries to work on: an index file named by the user as it is, else the dataset's own index
    under the root, built or brought up to date (:func:`ensure_index`)."""
    if index is not None:
        return load_index(ds, root, index)
    return ensure_index(ds, root, progress=progress)[0]


def ensure_index(ds: DatasetDef, root: str | Path, index: str | Path | None = None, *,
                 rebuild: bool = False, progress: bool = True) -> tuple[list[Entry], list[Problem]]:
    """The dataset's index under ``root``, built when missing and brought up to date when files or the
    definition changed (see the module doc); written with its problems. ``rebuild``: read every file."""
    path = Path(index) if index is not None else index_path(ds, root)
    state_file = path.with_suffix(".state.json")  # the definition's hash and the files' stamps
    previous, stamps = None, {}
    if not rebuild and path.is_file():
        try:
            state = json.loads(state_file.read_text())
            if state["definition_sha256"] == ds.sha256:
                previous, stamps = read_index(path), {k: tuple(v) for k, v in state["stamps"].items()}
        except (OSError, ValueError, KeyError, TypeError, IndexFileError):
            previous, stamps = None, {}
    entries, problems = build_index(ds, root, previous=previous, stamps=stamps, progress=progress)
    write_index(entries, path)
    write_problems(problems, problems_path(path))
    stamps = {rel: file_stamp(source_path(root, rel)) for e in entries for rel in (e.lq, e.hq)}
    state = {"definition": str(ds.source), "definition_sha256": ds.sha256, "stamps": stamps}
    state_file.write_text(json.dumps(state, sort_keys=True) + "\n")
    return entries, problems


@dataclass
class _Pair:
    group: Group
    fields: dict[str, str]
    hq: str
    lq: str | None  # None: to be derived


def build_index(
    ds: DatasetDef, root: str | Path, *, previous: list[Entry] | None = None,
    stamps: dict[str, tuple[int, int]] | None = None, progress: bool = True
) -> tuple[list[Entry], list[Problem]]:
    """Find, pair, check and split every image of the dataset under root.

    Derived LQ images are written (or reused when up to date). Unpaired, ambiguous, unreadable
    and mismatched files become Problems and are left out. ``previous``: entries of an earlier index
    of the same definition, taken over for files whose (size, mtime) are still those in ``stamps``
    (by index path). Returns (entries
    sorted by id, problems sorted by path). Raises DefinitionError when the split rule cannot be applied.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataRootError(f"{root}: data root is not a directory")
    problems: list[Problem] = []
    pairs: list[_Pair] = []
    for group in ds.groups.values():
        pairs += _pair_group(group, root, problems)

    known: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
    for e in previous or ():
        known[(e.group, e.lq, e.hq)].append(e)
    rows: list[tuple[_Pair, list[Entry]]] = []
    for pair in tqdm(pairs, desc=f"index {ds.name}", unit="image", disable=not progress):
        try:
            lq_rel = pair.lq or derived_rel(ds.name, pair.hq)
            reused = _unchanged(known.get((pair.group.name, lq_rel, pair.hq), []), root, stamps or {})
            rows.append((pair, reused or _check_pair(ds, root, pair)))
        except ImageReadError as e:
            bad = Path(e.path)
            rel = bad.relative_to(root).as_posix() if bad.is_relative_to(root) else str(bad)
            problems.append(Problem(rel, e.reason))
        except _PairProblem as e:
            problems.append(Problem(e.path, e.reason))

    entries = _assign_splits(ds, pairs, rows, problems)
    entries = _dedupe_ids(entries, problems)
    return sorted(entries, key=lambda e: e.id), sorted(problems, key=lambda p: (p.path, p.reason))


class _PairProblem(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _pair_group(group: Group, root: Path, problems: list[Problem]) -> list[_Pair]:
    dirs = group.volume is not None
    hq = match_files(root, group.hq, dirs=dirs, skip=STATE_DIR)
    lq = match_files(root, group.lq, dirs=dirs, skip=STATE_DIR) if group.lq else {}
    pairs = []
    for kind, found in (("HQ", hq), ("LQ", lq)):
        for paths in found.values():
            if len(paths) > 1:
                problems += [Problem(p, f"ambiguous {kind} file: {', '.join(paths)} have the same "
                             f"fields in group {group.name!r}") for p in paths]
    for key, paths in sorted(hq.items()):
        if len(paths) > 1:
            continue
        if group.lq is None:
            pairs.append(_Pair(group, dict(key), paths[0], None))
        elif key not in lq:
            wanted = fill_pattern(group.lq[0], dict(key))
            problems.append(Problem(paths[0], f"no LQ file pairs with it (e.g. {wanted})"))
        elif len(lq[key]) == 1:
            pairs.append(_Pair(group, dict(key), paths[0], lq[key][0]))
    for key, paths in sorted(lq.items()):
        if key not in hq and len(paths) == 1:
            wanted = fill_pattern(group.hq[0], dict(key))
            problems.append(Problem(paths[0], f"no HQ file pairs with it (e.g. {wanted})"))
    return pairs


def _check_pair(ds: DatasetDef, root: Path, pair: _Pair) -> list[Entry]:
    """Read (or derive) a pair; return its entries with split "" still to be assigned."""
    group = pair.group
    base_id = _entry_id(group, pair.fields)
    if group.volume is not None:
        return _check_volume_pair(root, pair, base_id)
    hq_sha = source_sha256(root / pair.hq)
    if pair.lq is None:
        lq_rel, lq_sha = ensure_derived(ds.name, group.derive_lq, root, pair.hq, hq_sha)
        lq, lq_meta = read_image(source_path(root, lq_rel))  # the index lists readable images only
        lq_shape = lq.shape
        _check_channels(group, lq_rel, lq_shape, lq_meta)
        _check_range(group, pair.hq, lq_meta, " (its derived LQ image)")
    else:
        lq_rel = pair.lq
        lq, lq_meta = read_image(root / pair.lq)
        _check_channels(group, lq_rel, lq.shape, lq_meta)
        _check_range(group, lq_rel, lq_meta)
        hq, hq_meta = read_image(root / pair.hq)
        _check_range(group, pair.hq, hq_meta)
        _check_same_shape(pair, lq.shape, hq.shape)
        lq_shape, lq_sha = lq.shape, source_sha256(root / pair.lq)
    return [Entry(base_id, group.name, "", lq_rel, pair.hq, None, lq_sha, tuple(lq_shape), None, hq_sha)]


def _unchanged(entries: list[Entry], root: Path, stamps: dict[str, tuple[int, int]]) -> list[Entry]:
    """``entries`` (of one pair of files, from an earlier index) if both files still have the recorded
    size and modification time, else [] (they must be read again)."""
    if not entries or not all(e.hq_sha256 for e in entries):
        return []
    lq, hq = entries[0].lq, entries[0].hq
    try:
        same = stamps.get(lq) == file_stamp(source_path(root, lq)) and stamps.get(hq) == file_stamp(root / hq)
    except (OSError, ImageReadError):
        return []
    return [replace(e, split="") for e in entries] if same else []


def _check_channels(group: Group, rel: str, shape: tuple[int, ...], meta: ImageMeta | None = None) -> None:
    channels = channel_count(shape)
    if channels != group.channels:
        raise _PairProblem(rel, f"has {describe_channels(shape, meta)}, group {group.name!r} expects "
                           f"{group.channels}")


def _check_range(group: Group, rel: str, meta: ImageMeta, what: str = "") -> None:
    """_PairProblem when the image's values lie outside the group's declared range (see
    :func:`rat.shared.datasets.definition.range_problem`)."""
    problem = range_problem(group, *meta.value_range)
    if problem is not None:
        raise _PairProblem(rel, problem.replace("values ", f"values{what} ", 1) if what else problem)


def _check_same_shape(pair: _Pair, lq_shape: tuple[int, ...], hq_shape: tuple[int, ...]) -> None:
    if hq_shape != lq_shape:
        raise _PairProblem(pair.lq, f"shape {fmt_shape(lq_shape)} differs from HQ "
                           f"{pair.hq} {fmt_shape(hq_shape)}")


def _check_volume_pair(root: Path, pair: _Pair, base_id: str) -> list[Entry]:
    vol = pair.group.volume
    assert vol is not None and pair.lq is not None
    hq, hq_meta = read_volume(root / pair.hq)
    lq, lq_meta = read_volume(root / pair.lq)
    _check_range(pair.group, pair.lq, lq_meta)
    _check_range(pair.group, pair.hq, hq_meta)
    _check_same_shape(pair, lq.shape, hq.shape)
    if pair.group.channels != 1 or hq.ndim != 3:
        raise _PairProblem(pair.hq, f"volume groups need 1-channel 3-D volumes, got "
                           f"{fmt_shape(hq.shape)}")
    axis = vol.slice_axis % 3
    other = tuple(a for a in range(3) if a != axis)
    above = (hq > vol.air_threshold).mean(axis=other)  # (n_slices,) fraction of non-air voxels
    keep = np.flatnonzero(above > vol.air_fraction)
    shape = tuple(int(s) for i, s in enumerate(hq.shape) if i != axis)
    sha, hq_sha = source_sha256(root / pair.lq), source_sha256(root / pair.hq)
    return [Entry(f"{base_id}_{k:04d}", pair.group.name, "", pair.lq, pair.hq, int(k), sha, shape,
                  axis, hq_sha) for k in keep]


def ensure_derived(ds_name: str, method: str, root: str | Path, hq: str, hq_sha256: str) -> tuple[str, str]:
    """Write (or reuse) the derived LQ image of HQ file ``hq``; returns (index path, SHA-256 of the LQ file).

    The LQ file mirrors the HQ path and format (JPEG HQ gives PNG LQ: lossless) in the root's state folder.
    A JSON sidecar records the method, both SHA-256s and the library versions that derived it; the LQ is up
    to date while they match the HQ file and the method.
    """
    rel = derived_rel(ds_name, hq)
    out = source_path(root, rel)
    sidecar = out.with_name(out.name + ".json")
    try:
        record = json.loads(sidecar.read_text())
        if (record["method"] == method and record["hq_sha256"] == hq_sha256
                and source_sha256(out) == record["lq_sha256"]):
            return rel, record["lq_sha256"]
    except (OSError, ValueError, KeyError, TypeError, ImageReadError):
        pass  # missing or stale: derive again
    source = Path(root) / hq
    image, meta = read_image(source)
    lq = derive_lq(image, method, meta.source_dtype)
    write_image(out, lq, like=source)  # atomic; in the source's dtype (DICOM: the template's)
    lq_sha = source_sha256(out)
    record = {"method": method, "hq": hq, "hq_sha256": hq_sha256, "lq_sha256": lq_sha,
              "versions": derive_versions()}
    sidecar.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return rel, lq_sha


def _entry_id(group: Group, values: dict[str, str]) -> str:
    if group.id is not None:
        raw = group.id.format_map(values)
    else:
        order = [f for f in FIELD.findall(group.hq[0]) if f != "*"]
        raw = "_".join(values[f] for f in dict.fromkeys(order))
    return _ID_UNSAFE.sub("-", raw).strip("-") or "-"


def _assign_splits(
    ds: DatasetDef,
    pairs: list[_Pair],
    rows: list[tuple[_Pair, list[Entry]]],
    problems: list[Problem],
) -> list[Entry]:
    """Split per group over the units of all pairs found, so that an unreadable file does not
    move other images between splits."""
    by_group: dict[str, list[tuple[_Pair, list[Entry]]]] = defaultdict(list)
    for pair, entries in rows:
        by_group[pair.group.name].append((pair, entries))
    out: list[Entry] = []
    for gname, group_rows in by_group.items():
        split = ds.groups[gname].split
        units = {pair.fields[split.unit] for pair in pairs if pair.group.name == gname}
        try:
            assigned = split_units(split, units)
        except ValueError as e:
            raise DefinitionError(f"{ds.source}: groups.{gname}.split.{e} under the data root; "
                                "lower it or use a fraction") from None
        problems += [Problem(str(ds.source), f"groups.{gname}.split.{name}: {split.unit} {u!r} not found "
                             "under the data root") for name in ("test", "val")
                     for u in sorted(set(getattr(split, name)) - units)]
        for pair, entries in group_rows:
            unit = pair.fields[split.unit]
            if unit not in assigned:
                problems.append(Problem(pair.hq, f"{split.unit} {unit!r} is in no split "
                                        "list (test, val, train) of the definition"))
                continue
            out += [replace(e, split=assigned[unit]) for e in entries]
    return out


def _dedupe_ids(entries: list[Entry], problems: list[Problem]) -> list[Entry]:
    counts = Counter(e.id for e in entries)
    for e in entries:
        if counts[e.id] > 1:
            problems.append(Problem(e.hq, f"id {e.id!r} is not unique (set the group's id "
                                    "template); left out"))
    return [e for e in entries if counts[e.id] == 1]


def derivation_versions(root: str | Path, entries: list[Entry]) -> list[dict[str, str]]:
    """The distinct library versions that derived the entries' derived LQ images (from their sidecars)."""
    found: list[dict[str, str]] = []
    for rel in sorted({e.lq for e in entries if e.lq.startswith(f"{STATE_DIR}/derived/")}):
        path = source_path(root, rel)
        try:
            versions = json.loads(path.with_name(path.name + ".json").read_text()).get("versions")
        except (OSError, ValueError):
            continue
        if versions and versions not in found:
            found.append(versions)
    return found
