"""Dataset definitions: TOML files parsed and checked into :class:`DatasetDef`, and split rules.

A dataset definition is one TOML file (the builtin ones live in ``rat.data_manifests``; each
documents every key in comments). It has a ``name``, a ``description``, an optional
``[defaults]`` table and one ``[groups.<group>]`` table per group of images that share modality,
channels, file layout and settings; a group key not set in the group table is taken from
``[defaults]``. See :class:`Group` for the keys and :mod:`rat.shared.patterns` for the file
patterns. Every mistake is a :class:`ManifestError` naming the file and the key.

The per-image index built from a definition is in :mod:`rat.shared.manifest`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rat.shared.degrade import DERIVE_METHODS
from rat.shared.errors import ParamError, RatError
from rat.shared.patterns import FIELD, pattern_fields

__all__ = [
    "DatasetDef", "Group", "ManifestError", "Split", "Volume", "Window", "builtin_datasets", "load_dataset",
    "split_units",
]

_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ManifestError(RatError, ValueError):
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
        if not _is_number(v):
            raise fail(key(k), f"expected a number, got {v!r}")
        return float(v)

    def positive_int(k: str) -> int:
        v = table[k]
        if not _is_int(v) or v < 1:
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
            if not pattern_fields(p):
                raise fail(key(k), f"{p!r}: needs at least one named field such as {{id}}")
            for f in FIELD.findall(p):
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
    names = pattern_fields(hq[0])
    for k, pats in (("hq", hq), ("lq", lq or ())):
        for p in pats:
            if pattern_fields(p) != names:
                raise fail(key(k), f"{p!r}: uses fields {sorted(pattern_fields(p))}, "
                           f"but {hq[0]!r} uses {sorted(names)}; every pattern needs the same")
    id_template = table.get("id")
    if id_template is not None:
        if not isinstance(id_template, str) or not pattern_fields(id_template):
            raise fail(key("id"), "expected a template string using the pattern fields")
        extra = pattern_fields(id_template) - names
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
    _check_table(v, where, {"kind", "low", "high"}, "{kind = ..., low = ..., high = ...}", fail)
    kind = v.get("kind")
    if kind == "none":
        if "low" in v or "high" in v:
            raise fail(where, "kind 'none' takes no low/high")
        return Window("none")
    if kind not in ("fixed", "percentile"):
        raise fail(f"{where}.kind", f"expected 'fixed', 'percentile' or 'none', got {kind!r}")
    for k in ("low", "high"):
        if not _is_number(v.get(k)):
            raise fail(f"{where}.{k}", f"required number for kind {kind!r}")
    low, high = float(v["low"]), float(v["high"])
    if not high > low:
        raise fail(f"{where}.high", "must be greater than low")
    if kind == "percentile" and not (0 <= low and high <= 100):
        raise fail(where, "percentiles must lie in 0..100")
    return Window(kind, low, high)


def _parse_split(v: Any, where: str, names: set[str], fail) -> Split:
    allowed = {"rule", "unit", "seed", "test_count", "test_fraction", "test", "train"}
    _check_table(v, where, allowed, "{rule = ..., unit = ..., ...}", fail)
    unit = v.get("unit")
    if unit not in names:
        raise fail(f"{where}.unit", f"must name a pattern field ({', '.join(sorted(names))}), "
                   f"got {unit!r}")
    rule = v.get("rule")
    if rule == "seeded":
        seed = v.get("seed", 0)
        if not _is_int(seed):
            raise fail(f"{where}.seed", f"expected an integer, got {seed!r}")
        count, frac = v.get("test_count"), v.get("test_fraction")
        if (count is None) == (frac is None):
            raise fail(where, "seeded rule needs exactly one of test_count and test_fraction")
        if count is not None and (not _is_int(count) or count < 0):
            raise fail(f"{where}.test_count", f"expected an integer >= 0, got {count!r}")
        if frac is not None and (not _is_number(frac) or not 0 <= frac <= 1):
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
    keys = {"slice_axis", "air_threshold", "air_fraction"}
    _check_table(v, where, keys, "{slice_axis = ..., air_threshold = ...}", fail)
    axis = v.get("slice_axis")
    if not _is_int(axis) or not -3 <= axis <= 2:
        raise fail(f"{where}.slice_axis", f"expected an integer in -3..2, got {axis!r}")
    thr = v.get("air_threshold")
    if not _is_number(thr):
        raise fail(f"{where}.air_threshold", f"required number, got {thr!r}")
    frac = v.get("air_fraction", 0.0)
    if not _is_number(frac) or not 0 <= frac < 1:
        raise fail(f"{where}.air_fraction", f"expected a number in [0, 1), got {frac!r}")
    return Volume(axis, float(thr), float(frac))


def _check_table(v: Any, where: str, keys: set[str], layout: str, fail) -> None:
    """``v`` must be a TOML table (``layout`` shows its keys in the error) with only ``keys``."""
    if not isinstance(v, dict):
        raise fail(where, f"expected a table {layout}")
    unknown = sorted(set(v) - keys)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key")


def _is_number(v: Any) -> bool:
    """An int or float from TOML (true/false are not numbers)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    """An int from TOML (true/false are not integers)."""
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- splits


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


def pick_group(ds: DatasetDef, name: str | None = None) -> Group:
    """The group ``name`` of a dataset, or its only group; ParamError naming the groups otherwise."""
    names = ", ".join(sorted(ds.groups))
    if name is None:
        if len(ds.groups) > 1:
            raise ParamError("group", f"dataset {ds.name} has several groups ({names}): pass `group`")
        return next(iter(ds.groups.values()))
    if name not in ds.groups:
        raise ParamError("group", f"{name!r} is not a group of {ds.name} ({names})")
    return ds.groups[name]
