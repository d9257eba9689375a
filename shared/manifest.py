"""Dataset definitions (TOML) and the per-image index built from them.

A dataset definition is one TOML file (the builtin ones live in ``rat.data_manifests``; each
documents every key in comments). It has a ``name``, a ``description``, an optional
``[defaults]`` table and one ``[groups.<group>]`` table per group of images that share modality,
channels, file layout and settings; a group key not set in the group table is taken from
``[defaults]``. See :class:`Group` for the keys.

File patterns are paths relative to the data root with named fields, e.g.
``"{patient}/full_dose/{slice}.dcm"``: ``{name}`` matches one or more characters within one path
component (a name used twice must match the same text), ``{*}`` matches any text within one path
component and is not part of the key. An HQ and an LQ file pair when their named fields agree. A
group lists several patterns (e.g. PNG and TIFF variants); every HQ and LQ pattern of a group uses
the same named fields.

The index (:func:`build_index`) has one :class:`Entry` per 2-D image (one per kept slice for
volume groups), sorted by id and written as CSV (:func:`write_index`) with the columns
``id, group, split, lq, hq, slice, sha256, shape, axis``; by default at ``<root>/.rat/<name>.csv``
(:func:`index_path`), with the files left out and why in ``<root>/.rat/<name>.problems.csv``.
Derived LQ images are written once under ``<root>/.rat/derived/<name>/`` in the HQ file's format
(PNG for JPEG) and the index points at them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import json
import os
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rat.shared.degrade import DERIVE_METHODS, derive_lq
from rat.shared.io import (
    ImageMeta,
    ImageReadError,
    read_image,
    read_volume,
    sha256_file,
    write_image,
)

STATE_DIR = ".rat"
"""Folder under the data root that holds the index, its problems and derived LQ images."""

INDEX_COLUMNS = ("id", "group", "split", "lq", "hq", "slice", "sha256", "shape", "axis")
PROBLEM_COLUMNS = ("path", "reason")
SPLITS = ("train", "test")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_FIELD = re.compile(r"\{([^{}]*)\}")


class ManifestError(ValueError):
    """A bad dataset definition or index; ``str(err)`` is one line naming the file (and key)."""


# ----------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Window:
    """8-bit window that maps an image to SAM's uint8 input.

    kind: "fixed" (low/high in source units, e.g. a CT window in HU), "percentile" (low/high are
    percentiles 0..100 of each image) or "none" (8-bit images used as they are).
    """

    kind: str
    low: float = 0.0
    high: float = 0.0


@dataclass(frozen=True)
class Split:
    """How a group's images are split into "train" and "test", at the level of ``unit``.

    unit: the named pattern field whose values are split (e.g. "patient": all images of a
    patient land in the same split).
    rule "seeded": units are ordered by the SHA-256 of ``"<seed>:<unit value>"`` (stable across
    platforms and library versions) and the first ``test_count`` (or ``round(test_fraction * n)``)
    are test, the rest train.
    rule "explicit": the units named in ``test`` are test; with ``train`` given, those are train and
    units in neither list are reported as problems and left out; without it, all others are train.
    """

    rule: str
    unit: str
    seed: int = 0
    test_count: int | None = None
    test_fraction: float | None = None
    test: tuple[str, ...] = ()
    train: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Volume:
    """3-D volumes (e.g. NIfTI) cut into 2-D slices along ``slice_axis``.

    A slice is air-only, and left out, when at most ``air_fraction`` of its HQ voxels exceed
    ``air_threshold`` (source units, after the file's scaling).
    """

    slice_axis: int
    air_threshold: float
    air_fraction: float = 0.0


@dataclass(frozen=True)
class Group:
    """One group of images with the same modality, channels, layout and settings.

    hq / lq: file patterns (see the module doc); exactly one of ``lq`` and ``derive_lq`` is set.
    derive_lq: name of a method in ``rat.shared.degrade.DERIVE_METHODS`` (e.g. "bicubic_x4").
    id: template for entry ids from the named fields, e.g. "{patient}_{slice}" (default: the
    field values joined by "_" in the order they appear in the first HQ pattern); characters
    other than letters, digits, ".", "_" and "-" become "-"; volume slices get "_<slice:04d>".
    norm_low / norm_high: training normalisation, the linear map norm_low -> 0, norm_high -> 1
    (source units). data_range: value span for PSNR/SSIM in source units (default
    norm_high - norm_low). sam_window: how SAM's 8-bit input is made. patch_size: training patch.
    """

    name: str
    modality: str
    channels: int
    hq: tuple[str, ...]
    norm_low: float
    norm_high: float
    data_range: float
    sam_window: Window
    patch_size: int
    split: Split
    lq: tuple[str, ...] | None = None
    derive_lq: str | None = None
    id: str | None = None
    volume: Volume | None = None


@dataclass(frozen=True)
class DatasetDef:
    """A dataset definition: groups by name, and the file it was read from."""

    name: str
    description: str
    groups: dict[str, Group]
    source: Path
    builtin: bool = field(default=False, compare=False)


def builtin_datasets() -> list[str]:
    """Names of the definitions shipped in ``rat.data_manifests``."""
    files = importlib.resources.files("rat.data_manifests").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_dataset(name_or_path: str | Path) -> DatasetDef:
    """Load a builtin definition by name (e.g. "tma") or a user definition from a .toml path."""
    text_path = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or os.sep in text_path or "/" in text_path:
        if not path.is_file():
            raise ManifestError(f"{path}: dataset definition not found")
        return _parse_definition(path, builtin=False)
    resource = importlib.resources.files("rat.data_manifests") / f"{text_path}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_datasets())
        raise ManifestError(
            f"{text_path}: not a .toml file and not a builtin dataset (builtin: {known})"
        )
    with importlib.resources.as_file(resource) as real:
        return _parse_definition(Path(real), builtin=True)


_GROUP_KEYS = {f.name for f in fields(Group)} - {"name"}
_REQUIRED = ("modality", "channels", "hq", "norm_low", "norm_high", "sam_window", "patch_size",
             "split")


def _parse_definition(path: Path, *, builtin: bool) -> DatasetDef:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"{path}: invalid TOML: {e}") from None

    def fail(key: str, reason: str) -> ManifestError:
        return ManifestError(f"{path}: {key}: {reason}")

    unknown = sorted(set(doc) - {"name", "description", "defaults", "groups"})
    if unknown:
        raise fail(unknown[0], "unknown key (expected name, description, defaults, groups)")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_OK.fullmatch(name):
        raise fail("name", "required; letters, digits, '_' and '-' only")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "expected a string")
    defaults = doc.get("defaults", {})
    groups = doc.get("groups")
    if not isinstance(defaults, dict):
        raise fail("defaults", "expected a table")
    if not isinstance(groups, dict) or not groups:
        raise fail("groups", "required: at least one [groups.<name>] table")
    extra = sorted(set(defaults) - _GROUP_KEYS)
    if extra:
        raise fail(f"defaults.{extra[0]}", "unknown key")
    parsed = {}
    for gname, table in groups.items():
        if not isinstance(table, dict):
            raise fail(f"groups.{gname}", "expected a table")
        if not _NAME_OK.fullmatch(gname):
            raise fail(f"groups.{gname}", "group names use letters, digits, '_' and '-' only")
        parsed[gname] = _parse_group(gname, {**defaults, **table}, set(table), fail)
    return DatasetDef(name, description.strip(), parsed, path.resolve(), builtin)


def _parse_group(gname: str, table: dict[str, Any], own: set[str], fail) -> Group:
    def key(k: str) -> str:
        return f"groups.{gname}.{k}" if k in own else f"defaults.{k}"

    extra = sorted(set(table) - _GROUP_KEYS)
    if extra:
        raise fail(key(extra[0]), "unknown key")
    for k in _REQUIRED:
        if k not in table:
            raise fail(f"groups.{gname}.{k}", "required (in the group or in [defaults])")

    def number(k: str) -> float:
        v = table[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise fail(key(k), f"expected a number, got {v!r}")
        return float(v)

    def positive_int(k: str) -> int:
        v = table[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise fail(key(k), f"expected a positive integer, got {v!r}")
        return v

    def patterns(k: str) -> tuple[str, ...]:
        v = table[k]
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not v or not all(isinstance(p, str) and p for p in v):
            raise fail(key(k), "expected a pattern string or a non-empty list of them")
        for p in v:
            if p.startswith("/") or ".." in Path(p).parts or "\\" in p:
                raise fail(key(k), f"{p!r}: patterns are relative paths inside the data root")
            if not _pattern_fields(p):
                raise fail(key(k), f"{p!r}: needs at least one named field such as {{id}}")
            for f in _FIELD.findall(p):
                if f != "*" and not f.isidentifier():
                    raise fail(key(k), f"{p!r}: bad field {{{f}}}")
        return tuple(v)

    modality = table["modality"]
    if not isinstance(modality, str) or not modality:
        raise fail(key("modality"), "expected a string such as 'CT', 'PET' or 'pathology'")
    channels = positive_int("channels")
    hq = patterns("hq")
    lq = patterns("lq") if "lq" in table else None
    derive = table.get("derive_lq")
    if (lq is None) == (derive is None):
        raise fail(f"groups.{gname}", "set exactly one of lq (patterns) and derive_lq (a method)")
    if derive is not None and derive not in DERIVE_METHODS:
        raise fail(key("derive_lq"), f"unknown method {derive!r} (known: "
                   f"{', '.join(sorted(DERIVE_METHODS))})")
    names = _pattern_fields(hq[0])
    for k, pats in (("hq", hq), ("lq", lq or ())):
        for p in pats:
            if _pattern_fields(p) != names:
                raise fail(key(k), f"{p!r}: uses fields {sorted(_pattern_fields(p))}, "
                           f"but {hq[0]!r} uses {sorted(names)}; every pattern needs the same")
    id_template = table.get("id")
    if id_template is not None:
        if not isinstance(id_template, str) or not _pattern_fields(id_template):
            raise fail(key("id"), "expected a template string using the pattern fields")
        extra = _pattern_fields(id_template) - names
        if extra or "{*}" in id_template:
            raise fail(key("id"), f"uses fields the patterns do not have: {sorted(extra) or '*'}")
    norm_low, norm_high = number("norm_low"), number("norm_high")
    if not norm_high > norm_low:
        raise fail(key("norm_high"), "must be greater than norm_low")
    data_range = number("data_range") if "data_range" in table else norm_high - norm_low
    if data_range <= 0:
        raise fail(key("data_range"), "must be positive")
    volume = _parse_volume(table["volume"], key("volume"), fail) if "volume" in table else None
    if volume is not None and derive is not None:
        raise fail(key("derive_lq"), "derived LQ is not supported for volume groups")
    return Group(
        name=gname,
        modality=modality,
        channels=channels,
        hq=hq,
        lq=lq,
        derive_lq=derive,
        id=id_template,
        volume=volume,
        norm_low=norm_low,
        norm_high=norm_high,
        data_range=data_range,
        sam_window=_parse_window(table["sam_window"], key("sam_window"), fail),
        patch_size=positive_int("patch_size"),
        split=_parse_split(table["split"], key("split"), names, fail),
    )


def _parse_window(v: Any, where: str, fail) -> Window:
    if not isinstance(v, dict):
        raise fail(where, "expected a table {kind = ..., low = ..., high = ...}")
    unknown = sorted(set(v) - {"kind", "low", "high"})
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key")
    kind = v.get("kind")
    if kind == "none":
        if "low" in v or "high" in v:
            raise fail(where, "kind 'none' takes no low/high")
        return Window("none")
    if kind not in ("fixed", "percentile"):
        raise fail(f"{where}.kind", f"expected 'fixed', 'percentile' or 'none', got {kind!r}")
    for k in ("low", "high"):
        if isinstance(v.get(k), bool) or not isinstance(v.get(k), (int, float)):
            raise fail(f"{where}.{k}", f"required number for kind {kind!r}")
    low, high = float(v["low"]), float(v["high"])
    if not high > low:
        raise fail(f"{where}.high", "must be greater than low")
    if kind == "percentile" and not (0 <= low and high <= 100):
        raise fail(where, "percentiles must lie in 0..100")
    return Window(kind, low, high)


def _parse_split(v: Any, where: str, names: set[str], fail) -> Split:
    if not isinstance(v, dict):
        raise fail(where, "expected a table {rule = ..., unit = ..., ...}")
    allowed = {"rule", "unit", "seed", "test_count", "test_fraction", "test", "train"}
    unknown = sorted(set(v) - allowed)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key")
    unit = v.get("unit")
    if unit not in names:
        raise fail(f"{where}.unit", f"must name a pattern field ({', '.join(sorted(names))}), "
                   f"got {unit!r}")
    rule = v.get("rule")
    if rule == "seeded":
        seed = v.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise fail(f"{where}.seed", f"expected an integer, got {seed!r}")
        count, frac = v.get("test_count"), v.get("test_fraction")
        if (count is None) == (frac is None):
            raise fail(where, "seeded rule needs exactly one of test_count and test_fraction")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            raise fail(f"{where}.test_count", f"expected an integer >= 0, got {count!r}")
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float))
                                 or not 0 <= frac <= 1):
            raise fail(f"{where}.test_fraction", f"expected a number in 0..1, got {frac!r}")
        if "test" in v or "train" in v:
            raise fail(where, "lists test/train belong to rule 'explicit'")
        return Split("seeded", unit, seed, count, None if frac is None else float(frac))
    if rule == "explicit":
        lists = {}
        for k in ("test", "train"):
            if k in v:
                items = v[k]
                if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                    raise fail(f"{where}.{k}", "expected a list of strings")
                lists[k] = tuple(items)
        if not lists.get("test"):
            raise fail(f"{where}.test", "explicit rule needs a non-empty test list")
        both = set(lists["test"]) & set(lists.get("train", ()))
        if both:
            raise fail(where, f"{sorted(both)[0]!r} is in both test and train")
        if {"seed", "test_count", "test_fraction"} & set(v):
            raise fail(where, "seed/test_count/test_fraction belong to rule 'seeded'")
        return Split("explicit", unit, test=lists["test"], train=lists.get("train"))
    raise fail(f"{where}.rule", f"expected 'seeded' or 'explicit', got {rule!r}")


def _parse_volume(v: Any, where: str, fail) -> Volume:
    if not isinstance(v, dict):
        raise fail(where, "expected a table {slice_axis = ..., air_threshold = ...}")
    unknown = sorted(set(v) - {"slice_axis", "air_threshold", "air_fraction"})
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key")
    axis = v.get("slice_axis")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -3 <= axis <= 2:
        raise fail(f"{where}.slice_axis", f"expected an integer in -3..2, got {axis!r}")
    thr = v.get("air_threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)):
        raise fail(f"{where}.air_threshold", f"required number, got {thr!r}")
    frac = v.get("air_fraction", 0.0)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
        raise fail(f"{where}.air_fraction", f"expected a number in [0, 1), got {frac!r}")
    return Volume(axis, float(thr), float(frac))


# ----------------------------------------------------------------------------- patterns


def _pattern_fields(pattern: str) -> set[str]:
    return {f for f in _FIELD.findall(pattern) if f != "*"}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, seen, pos = [], set(), 0
    for m in _FIELD.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name = m.group(1)
        if name == "*":
            out.append(r"[^/]*?")
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            out.append(f"(?P<{name}>[^/]+?)")
            seen.add(name)
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


def _match(root: Path, patterns: tuple[str, ...], *, dirs: bool) -> dict[tuple, list[str]]:
    """Files (and directories, if dirs) under root matching any pattern: key -> relative paths.

    The key is the tuple of (field, value) pairs sorted by field name.
    """
    found: dict[tuple, set[str]] = defaultdict(set)
    for pattern in patterns:
        regex = _pattern_regex(pattern)
        for path in root.glob(_FIELD.sub("*", pattern)):
            rel = path.relative_to(root).as_posix()
            if rel.split("/", 1)[0] == STATE_DIR or not (path.is_file() or dirs and path.is_dir()):
                continue
            m = regex.fullmatch(rel)
            if m:
                found[tuple(sorted(m.groupdict().items()))].add(rel)
    return {k: sorted(v) for k, v in found.items()}


# ----------------------------------------------------------------------------- index


@dataclass(frozen=True)
class Entry:
    """One 2-D image of the index. lq/hq are posix paths relative to the data root; for volumes,
    slice is the index along axis ``axis`` of the volume (both None for 2-D images); sha256 is
    that of the LQ file; shape is the LQ image's (H, W) or (H, W, C)."""

    id: str
    group: str
    split: str
    lq: str
    hq: str
    slice: int | None
    sha256: str
    shape: tuple[int, ...]
    axis: int | None = None


@dataclass(frozen=True)
class Problem:
    """A file left out of the index, and why (path relative to the data root where possible)."""

    path: str
    reason: str


def index_path(ds: DatasetDef, root: str | Path) -> Path:
    """Default index location: ``<root>/.rat/<name>.csv``."""
    return Path(root) / STATE_DIR / f"{ds.name}.csv"


def problems_path(index: str | Path) -> Path:
    """Where the problems of an index are written: ``<index stem>.problems.csv`` beside it."""
    index = Path(index)
    return index.with_name(f"{index.stem}.problems.csv")


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
    hq = _match(root, group.hq, dirs=dirs)
    lq = _match(root, group.lq, dirs=dirs) if group.lq else {}
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
            wanted = _fill(group.lq[0], dict(key))
            problems.append(Problem(paths[0], f"no LQ file pairs with it (e.g. {wanted})"))
        elif len(lq[key]) == 1:
            pairs.append(_Pair(group, dict(key), paths[0], lq[key][0]))
    for key, paths in sorted(lq.items()):
        if key not in hq and len(paths) == 1:
            wanted = _fill(group.hq[0], dict(key))
            problems.append(Problem(paths[0], f"no HQ file pairs with it (e.g. {wanted})"))
    return pairs


def _fill(pattern: str, values: dict[str, str]) -> str:
    """The pattern with its named fields filled in ({*} becomes *)."""
    return _FIELD.sub(lambda m: values.get(m.group(1), "*"), pattern)


def _check_pair(ds: DatasetDef, root: Path, pair: _Pair) -> list[Entry]:
    """Read (or derive) a pair; return its entries with split "" still to be assigned."""
    group = pair.group
    base_id = _entry_id(group, pair.fields)
    if group.volume is not None:
        return _check_volume_pair(root, pair, base_id)
    if pair.lq is None:
        lq_rel, lq_shape, lq_sha = _derive(ds, root, pair)
    else:
        lq_rel = pair.lq
        lq, _ = read_image(root / pair.lq)
        _check_channels(group, lq_rel, lq.shape)
        hq, _ = read_image(root / pair.hq)
        if hq.shape != lq.shape:
            raise _PairProblem(pair.lq, f"shape {_fmt_shape(lq.shape)} differs from HQ "
                               f"{pair.hq} {_fmt_shape(hq.shape)}")
        lq_shape, lq_sha = lq.shape, sha256_file(root / pair.lq)
    _check_channels(group, lq_rel, lq_shape)
    return [Entry(base_id, group.name, "", lq_rel, pair.hq, None, lq_sha, tuple(lq_shape))]


def _check_channels(group: Group, rel: str, shape: tuple[int, ...]) -> None:
    channels = shape[2] if len(shape) == 3 else 1
    if channels != group.channels:
        raise _PairProblem(rel, f"has {channels} channel(s), group {group.name!r} expects "
                           f"{group.channels}")


def _check_volume_pair(root: Path, pair: _Pair, base_id: str) -> list[Entry]:
    vol = pair.group.volume
    assert vol is not None and pair.lq is not None
    hq, _ = read_volume(root / pair.hq)
    lq, _ = read_volume(root / pair.lq)
    if hq.shape != lq.shape:
        raise _PairProblem(pair.lq, f"shape {_fmt_shape(lq.shape)} differs from HQ "
                           f"{pair.hq} {_fmt_shape(hq.shape)}")
    if pair.group.channels != 1 or hq.ndim != 3:
        raise _PairProblem(pair.hq, f"volume groups need 1-channel 3-D volumes, got "
                           f"{_fmt_shape(hq.shape)}")
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
        order = [f for f in _FIELD.findall(group.hq[0]) if f != "*"]
        raw = "_".join(values[f] for f in dict.fromkeys(order))
    return _ID_UNSAFE.sub("-", raw).strip("-") or "-"


def split_units(split: Split, units: Iterable[str]) -> dict[str, str]:
    """Apply a split rule: unit value -> "train" or "test" (see :class:`Split`).

    Units that an explicit rule with a train list names in neither list are absent. Raises
    ValueError when a seeded rule asks for more test units than there are.
    """
    units = sorted(set(units))
    if split.rule == "seeded":
        n_test = (split.test_count if split.test_count is not None
                  else round(split.test_fraction * len(units)))
        if n_test > len(units):
            raise ValueError(f"test_count: {n_test} test {split.unit}s asked, only "
                             f"{len(units)} found")
        ranked = sorted(units, key=lambda u: hashlib.sha256(f"{split.seed}:{u}".encode())
                        .hexdigest())
        return {u: "test" if rank < n_test else "train" for rank, u in enumerate(ranked)}
    test = set(split.test)
    train = set(split.train) if split.train is not None else set(units) - test
    return {u: "test" if u in test else "train" for u in units if u in test | train}


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


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def write_index(entries: list[Entry], path: str | Path) -> None:
    """Write entries as CSV (columns INDEX_COLUMNS, "\\n" line ends, sorted by id)."""
    rows = [(e.id, e.group, e.split, e.lq, e.hq, "" if e.slice is None else e.slice, e.sha256,
             _fmt_shape(e.shape), "" if e.axis is None else e.axis)
            for e in sorted(entries, key=lambda e: e.id)]
    _write_csv(path, INDEX_COLUMNS, rows)


def write_problems(problems: list[Problem], path: str | Path) -> None:
    """Write problems as CSV (columns path, reason)."""
    _write_csv(path, PROBLEM_COLUMNS, [(p.path, p.reason) for p in problems])


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
    """Read an index CSV written by write_index; errors name the file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read index ({e})") from None
    if not rows or tuple(rows[0]) != INDEX_COLUMNS:
        raise ManifestError(f"{path}: not an index (header must be {','.join(INDEX_COLUMNS)})")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            id_, group, split, lq, hq, slc, sha, shape, axis = row
            if split not in SPLITS:
                raise ValueError(f"split {split!r} is not train or test")
            if (slc == "") != (axis == ""):
                raise ValueError("slice and axis are both set (volumes) or both empty")
            entries.append(Entry(id_, group, split, lq, hq, int(slc) if slc else None, sha,
                                 tuple(int(s) for s in shape.split("x")),
                                 int(axis) if axis else None))
        except ValueError as e:
            raise ManifestError(f"{path}: line {line}: bad row ({e})") from None
    return entries


def load_index(ds: DatasetDef, root: str | Path, index: str | Path | None = None) -> list[Entry]:
    """Read the dataset's index (default :func:`index_path`); its groups must be ds's."""
    path = Path(index) if index is not None else index_path(ds, root)
    if not path.is_file():
        dataset = ds.name if ds.builtin else str(ds.source)
        hint = "" if index is None else f" --index {path}"
        raise ManifestError(f"{path}: no index; run `rat-precompute manifest --dataset {dataset} "
                            f"--root {root}{hint}` first")
    entries = read_index(path)
    unknown = sorted({e.group for e in entries} - set(ds.groups))
    if unknown:
        raise ManifestError(f"{path}: group {unknown[0]!r} is not in dataset {ds.name!r} "
                            f"({ds.source}); rebuild the index")
    return entries


def read_lq(entry: Entry, root: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """The entry's LQ image (float32 (H, W) or (H, W, C); a slice for volumes) and its ImageMeta."""
    return _read(Path(root) / entry.lq, entry)


def read_hq(entry: Entry, root: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """The entry's HQ image (float32 (H, W) or (H, W, C); a slice for volumes) and its ImageMeta."""
    return _read(Path(root) / entry.hq, entry)


def _read(path: Path, entry: Entry) -> tuple[np.ndarray, ImageMeta]:
    if entry.slice is None:
        return read_image(path)
    return read_image(path, index=entry.slice, axis=entry.axis)


def summarize(entries: list[Entry], problems: list[Problem]) -> str:
    """Counts per group and split, then the problems, as printable lines."""
    counts = Counter((e.group, e.split) for e in entries)
    lines = [f"{len(entries)} images indexed, {len(problems)} problem(s)"]
    for group in sorted({g for g, _ in counts}):
        parts = ", ".join(f"{s} {counts[(group, s)]}" for s in SPLITS)
        lines.append(f"  {group}: {parts}")
    lines += [f"  problem: {p.path}: {p.reason}" for p in problems]
    return "\n".join(lines)
