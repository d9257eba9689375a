"""A dataset definition's TOML text parsed and checked into a :class:`~rat.shared.datasets.DatasetDef`.

Every mistake is a :class:`~rat.shared.datasets.DefinitionError` naming the file and the key. The keys
are documented in :mod:`rat.shared.datasets.definition` and in the comments of the builtin definitions.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from rat.shared.datasets.definition import DatasetDef, DefinitionError, Group, Split, Volume, Window
from rat.shared.datasets.degrade import DERIVE_METHODS
from rat.shared.datasets.patterns import FIELD, pattern_fields

_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TOP_KEYS = ("name", "description", "root", "defaults", "groups")


_GROUP_KEYS = {f.name for f in fields(Group)} - {"name"}
_REQUIRED = ("modality", "channels", "hq", "norm_low", "norm_high", "sam_window", "patch_size",
             "split")


def parse_definition(text: str, path: Path, *, builtin: bool, anchored: bool = True) -> DatasetDef:
    """The definition in ``text``, read from ``path`` (named in errors; with ``anchored``, a relative
    ``root`` key is taken relative to the folder of ``path``)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DefinitionError(f"{path}: invalid TOML: {e}") from None

    def fail(key: str, reason: str) -> DefinitionError:
        return DefinitionError(f"{path}: {key}: {reason}")

    unknown = sorted(set(doc) - set(_TOP_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (expected {', '.join(_TOP_KEYS)})")
    root = doc.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise fail("root", "expected a folder path (string)")
    if root is not None:
        root = Path(root).expanduser()
        root = path.parent / root if anchored and not root.is_absolute() else root
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
    return DatasetDef(name, description.strip(), parsed, path, builtin, root, text)


class _GroupTable:
    """The keys of one group (its own over [defaults]), each read with the check its value needs; errors name
    the key where it was written: ``groups.<name>.<key>`` or ``defaults.<key>``."""

    def __init__(self, gname: str, table: dict[str, Any], own: set[str], fail) -> None:
        self.gname, self.table, self.own, self.fail = gname, table, own, fail

    def __contains__(self, k: str) -> bool:
        return k in self.table

    def key(self, k: str) -> str:
        return f"groups.{self.gname}.{k}" if k in self.own else f"defaults.{k}"

    def error(self, k: str, reason: str) -> DefinitionError:
        return self.fail(self.key(k), reason)

    def number(self, k: str) -> float:
        v = self.table[k]
        if not _is_number(v):
            raise self.error(k, f"expected a number, got {v!r}")
        return float(v)

    def positive_int(self, k: str) -> int:
        v = self.table[k]
        if not _is_int(v) or v < 1:
            raise self.error(k, f"expected a positive integer, got {v!r}")
        return v

    def patterns(self, k: str) -> tuple[str, ...]:
        v = self.table[k]
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not v or not all(isinstance(p, str) and p for p in v):
            raise self.error(k, "expected a pattern string or a non-empty list of them")
        for p in v:
            if p.startswith("/") or ".." in Path(p).parts or "\\" in p:
                raise self.error(k, f"{p!r}: patterns are relative paths inside the data root")
            if not pattern_fields(p):
                raise self.error(k, f"{p!r}: needs at least one named field such as {{id}}")
            for f in FIELD.findall(p):
                if f != "*" and not f.isidentifier():
                    raise self.error(k, f"{p!r}: bad field {{{f}}}")
        return tuple(v)


def _parse_group(gname: str, table: dict[str, Any], own: set[str], fail) -> Group:
    t = _GroupTable(gname, table, own, fail)
    extra = sorted(set(table) - _GROUP_KEYS)
    if extra:
        raise t.error(extra[0], "unknown key")
    for k in _REQUIRED:
        if k not in table:
            raise fail(f"groups.{gname}.{k}", "required (in the group or in [defaults])")
    modality = table["modality"]
    if not isinstance(modality, str) or not modality:
        raise t.error("modality", "expected a string such as 'CT', 'PET' or 'pathology'")
    channels = t.positive_int("channels")
    hq, lq, derive, names = _parse_files(t)
    id_template = _parse_id(t, names)
    norm_low, norm_high, data_range = _parse_normalisation(t)
    value_range, clip_values = _parse_value_range(t), _parse_clip_values(t)
    volume = _parse_volume(table["volume"], t.key("volume"), fail) if "volume" in t else None
    if volume is not None and derive is not None:
        raise t.error("derive_lq", "derived LQ is not supported for volume groups")
    return Group(
        name=gname,
        modality=modality,
        channels=channels,
        hq=hq,
        lq=lq,
        derive_lq=derive,
        id=id_template,
        volume=volume,
        value_range=value_range,
        clip_values=clip_values,
        norm_low=norm_low,
        norm_high=norm_high,
        data_range=data_range,
        sam_window=_parse_window(table["sam_window"], t.key("sam_window"), fail),
        patch_size=t.positive_int("patch_size"),
        split=_parse_split(table["split"], t.key("split"), names, fail),
    )


def _parse_files(t: _GroupTable) -> tuple[tuple[str, ...], tuple[str, ...] | None, str | None, set[str]]:
    """(HQ patterns, LQ patterns or None, the LQ derivation method or None, the patterns' fields)."""
    hq = t.patterns("hq")
    lq = t.patterns("lq") if "lq" in t else None
    derive = t.table.get("derive_lq")
    if (lq is None) == (derive is None):
        raise t.fail(f"groups.{t.gname}", "set exactly one of lq (patterns) and derive_lq (a method)")
    if derive is not None and derive not in DERIVE_METHODS:
        raise t.error("derive_lq", f"unknown method {derive!r} (known: {', '.join(sorted(DERIVE_METHODS))})")
    names = pattern_fields(hq[0])
    for k, pats in (("hq", hq), ("lq", lq or ())):
        for p in pats:
            if pattern_fields(p) != names:
                raise t.error(k, f"{p!r}: uses fields {sorted(pattern_fields(p))}, "
                              f"but {hq[0]!r} uses {sorted(names)}; every pattern needs the same")
    return hq, lq, derive, names


def _parse_id(t: _GroupTable, names: set[str]) -> str | None:
    id_template = t.table.get("id")
    if id_template is not None:
        if not isinstance(id_template, str) or not pattern_fields(id_template):
            raise t.error("id", "expected a template string using the pattern fields")
        extra = pattern_fields(id_template) - names
        if extra or "{*}" in id_template:
            raise t.error("id", f"uses fields the patterns do not have: {sorted(extra) or '*'}")
    return id_template


def _parse_normalisation(t: _GroupTable) -> tuple[float, float, float]:
    """(norm_low, norm_high, data_range)."""
    norm_low, norm_high = t.number("norm_low"), t.number("norm_high")
    if not norm_high > norm_low:
        raise t.error("norm_high", "must be greater than norm_low")
    data_range = t.number("data_range") if "data_range" in t else norm_high - norm_low
    if data_range <= 0:
        raise t.error("data_range", "must be positive")
    return norm_low, norm_high, data_range


def _parse_value_range(t: _GroupTable) -> tuple[float, float] | None:
    if "value_range" not in t:
        return None
    v = t.table["value_range"]
    if not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)) or not v[1] > v[0]:
        raise t.error("value_range", f"expected [low, high] with high > low, got {v!r}")
    return (float(v[0]), float(v[1]))


def _parse_clip_values(t: _GroupTable) -> bool:
    clip_values = t.table.get("clip_values", False)
    if not isinstance(clip_values, bool):
        raise t.error("clip_values", f"expected true or false, got {clip_values!r}")
    return clip_values


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
    allowed = {"rule", "unit", "seed", "test_count", "test_fraction", "test", "train", "val_count",
               "val_fraction", "val"}
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
        count, frac = _share(v, where, "test", fail, required=True)
        val_count, val_frac = _share(v, where, "val", fail, required=False)
        if {"test", "train", "val"} & set(v):
            raise fail(where, "lists test/train/val belong to rule 'explicit'")
        return Split("seeded", unit, seed, count, frac, val_count=val_count, val_fraction=val_frac)
    if rule == "explicit":
        lists = {}
        for k in ("test", "train", "val"):
            if k in v:
                items = v[k]
                if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                    raise fail(f"{where}.{k}", "expected a list of strings")
                lists[k] = tuple(items)
        if not lists.get("test"):
            raise fail(f"{where}.test", "explicit rule needs a non-empty test list")
        for a, b in (("test", "train"), ("test", "val"), ("val", "train")):
            both = set(lists.get(a, ())) & set(lists.get(b, ()))
            if both:
                raise fail(where, f"{sorted(both)[0]!r} is in both {a} and {b}")
        seeded_keys = {"seed", "test_count", "test_fraction", "val_count", "val_fraction"}
        if seeded_keys & set(v):
            raise fail(where, f"{'/'.join(sorted(seeded_keys & set(v)))} belong to rule 'seeded'")
        return Split("explicit", unit, test=lists["test"], train=lists.get("train"), val=lists.get("val", ()))
    raise fail(f"{where}.rule", f"expected 'seeded' or 'explicit', got {rule!r}")


def _share(v: Any, where: str, name: str, fail, required: bool) -> tuple[int | None, float | None]:
    """(``<name>_count``, ``<name>_fraction``) of a seeded rule: at most one (exactly one if required)."""
    count, frac = v.get(f"{name}_count"), v.get(f"{name}_fraction")
    if (count is not None and frac is not None) or (required and count is None and frac is None):
        raise fail(where, f"seeded rule needs {'exactly' if required else 'at most'} one of {name}_count and "
                   f"{name}_fraction")
    if count is not None and (not _is_int(count) or count < 0):
        raise fail(f"{where}.{name}_count", f"expected an integer >= 0, got {count!r}")
    if frac is not None and (not _is_number(frac) or not 0 <= frac <= 1):
        raise fail(f"{where}.{name}_fraction", f"expected a number in 0..1, got {frac!r}")
    return count, None if frac is None else float(frac)


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
