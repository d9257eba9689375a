"""Building the per-image index of a dataset: find, pair, check and split its images.

The dataset definitions it is built from (TOML, :func:`rat.shared.datasets.load_dataset`) are in
:mod:`rat.shared.datasets`, the file patterns in :mod:`rat.shared.patterns`, and the index itself (entries,
CSV, selection) in :mod:`rat.shared.index`. Derived LQ images are written once under
``<root>/.rat/derived/<name>/`` in the HQ file's format (PNG for JPEG) and the index points at them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rat.shared.datasets import DatasetDef, Group, ManifestError, split_units
from rat.shared.degrade import derive_lq
from rat.shared.index import STATE_DIR, Entry, Problem, fmt_shape
from rat.shared.io import ImageReadError, read_image, read_volume, sha256_file, write_image
from rat.shared.patterns import FIELD, fill_pattern, match_files

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def derived_dir(ds: DatasetDef, root: str | Path) -> Path:
    """Folder of derived LQ images: ``<root>/.rat/derived/<name>`` (mirrors the HQ paths)."""
    return Path(root) / STATE_DIR / "derived" / ds.name


@dataclass
class _Pair:
    group: Group
    fields: dict[str, str]
    hq: str
    lq: str | None  # None: to be derived


def build_index(
    ds: DatasetDef, root: str | Path, *, progress: bool = True
) -> tuple[list[Entry], list[Problem]]:
    """Find, pair, check and split every image of the dataset under root.

    Derived LQ images are written (or reused when up to date). Unpaired, ambiguous, unreadable
    and mismatched files become Problems and are left out. Returns (entries sorted by id,
    problems sorted by path). Raises ManifestError when the split rule cannot be applied.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: data root is not a directory")
    problems: list[Problem] = []
    pairs: list[_Pair] = []
    for group in ds.groups.values():
        pairs += _pair_group(group, root, problems)

    rows: list[tuple[_Pair, list[Entry]]] = []
    for pair in tqdm(pairs, desc=f"index {ds.name}", unit="image", disable=not progress):
        try:
            rows.append((pair, _check_pair(ds, root, pair)))
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
    if pair.lq is None:
        lq_rel, lq_shape, lq_sha = _derive(ds, root, pair)
        _check_channels(group, lq_rel, lq_shape)
    else:
        lq_rel = pair.lq
        lq, _ = read_image(root / pair.lq)
        _check_channels(group, lq_rel, lq.shape)
        hq, _ = read_image(root / pair.hq)
        _check_same_shape(pair, lq.shape, hq.shape)
        lq_shape, lq_sha = lq.shape, sha256_file(root / pair.lq)
    return [Entry(base_id, group.name, "", lq_rel, pair.hq, None, lq_sha, tuple(lq_shape))]


def _check_channels(group: Group, rel: str, shape: tuple[int, ...]) -> None:
    channels = shape[2] if len(shape) == 3 else 1
    if channels != group.channels:
        raise _PairProblem(rel, f"has {channels} channel(s), group {group.name!r} expects "
                           f"{group.channels}")


def _check_same_shape(pair: _Pair, lq_shape: tuple[int, ...], hq_shape: tuple[int, ...]) -> None:
    if hq_shape != lq_shape:
        raise _PairProblem(pair.lq, f"shape {fmt_shape(lq_shape)} differs from HQ "
                           f"{pair.hq} {fmt_shape(hq_shape)}")


def _check_volume_pair(root: Path, pair: _Pair, base_id: str) -> list[Entry]:
    vol = pair.group.volume
    assert vol is not None and pair.lq is not None
    hq, _ = read_volume(root / pair.hq)
    lq, _ = read_volume(root / pair.lq)
    _check_same_shape(pair, lq.shape, hq.shape)
    if pair.group.channels != 1 or hq.ndim != 3:
        raise _PairProblem(pair.hq, f"volume groups need 1-channel 3-D volumes, got "
                           f"{fmt_shape(hq.shape)}")
    axis = vol.slice_axis % 3
    other = tuple(a for a in range(3) if a != axis)
    above = (hq > vol.air_threshold).mean(axis=other)  # (n_slices,) fraction of non-air voxels
    keep = np.flatnonzero(above > vol.air_fraction)
    shape = tuple(int(s) for i, s in enumerate(hq.shape) if i != axis)
    sha = sha256_file(root / pair.lq)
    return [Entry(f"{base_id}_{k:04d}", pair.group.name, "", pair.lq, pair.hq, int(k), sha, shape,
                  axis) for k in keep]


def _derive(ds: DatasetDef, root: Path, pair: _Pair) -> tuple[str, tuple[int, ...], str]:
    """Write (or reuse) the derived LQ of pair.hq; returns (relative path, shape, sha256).

    The LQ file mirrors the HQ path and format, except that JPEG HQ gives PNG LQ (lossless).
    A JSON sidecar records the method and both SHA-256s; the LQ is up to date while they match.
    """
    method = pair.group.derive_lq
    assert method is not None
    out = derived_dir(ds, root) / pair.hq
    if out.suffix.lower() in (".jpg", ".jpeg"):
        out = out.with_suffix(".png")
    sidecar = out.with_name(out.name + ".json")
    hq_sha = sha256_file(root / pair.hq)
    rel = out.relative_to(root).as_posix()
    try:
        record = json.loads(sidecar.read_text())
        if (record["method"] == method and record["hq_sha256"] == hq_sha
                and sha256_file(out) == record["lq_sha256"]):
            lq, _ = read_image(out)  # still decodes: the index lists only readable images
            return rel, lq.shape, record["lq_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or stale: derive again
    hq, meta = read_image(root / pair.hq)
    lq = derive_lq(hq, method, meta.source_dtype)
    dtype = None if meta.format == "dicom" else meta.source_dtype  # DICOM: template's dtype
    write_image(out, lq, like=root / pair.hq, dtype=dtype)  # atomic
    lq_sha = sha256_file(out)
    record = {"method": method, "hq": pair.hq, "hq_sha256": hq_sha, "lq_sha256": lq_sha}
    sidecar.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return rel, lq.shape, lq_sha


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
            raise ManifestError(f"{ds.source}: groups.{gname}.split.{e} under the data root; "
                                "lower it or use test_fraction") from None
        problems += [Problem(str(ds.source), f"groups.{gname}.split.test: {split.unit} {u!r} "
                             "not found under the data root") for u in sorted(set(split.test)
                                                                             - units)]
        for pair, entries in group_rows:
            unit = pair.fields[split.unit]
            if unit not in assigned:
                problems.append(Problem(pair.hq, f"{split.unit} {unit!r} is in neither split "
                                        "list (test, train) of the definition"))
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


