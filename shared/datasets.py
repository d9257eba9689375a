"""Dataset definitions: TOML files parsed and checked into :class:`DatasetDef`, and split rules.

A dataset definition is one TOML file (the builtin ones live in ``rat.data_manifests``; each
documents every key in comments). It has a ``name``, a ``description``, an optional ``root`` (the
data root, see :func:`rat.shared.locate.resolve_root`), an optional
``[defaults]`` table and one ``[groups.<group>]`` table per group of images that share modality,
channels, file layout and settings; a group key not set in the group table is taken from
``[defaults]``. See :class:`Group` for the keys and :mod:`rat.shared.patterns` for the file
patterns. Every mistake is a :class:`ManifestError` naming the file and the key.

Parsing and checking the TOML text is in :mod:`rat.shared.definition_toml`; the per-image index built from a
definition in :mod:`rat.shared.manifest` and :mod:`rat.shared.index`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rat.shared.errors import ParamError, RatError

__all__ = [
    "DatasetDef", "Group", "ManifestError", "Split", "Volume", "Window", "builtin_datasets", "load_dataset",
    "split_units",
]



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
    """A dataset definition: groups by name, where it was read from, and its full text.

    ``root``: the data root the definition names (optional ``root`` key; a relative path is relative to
    the definition file's folder). ``text``: the TOML text it was parsed from, which a label store keeps so
    that the definition travels with it; ``sha256`` is that of the text.
    """

    name: str
    description: str
    groups: dict[str, Group]
    source: Path
    builtin: bool = field(default=False, compare=False)
    root: Path | None = field(default=None, compare=False)
    text: str = field(default="", compare=False, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


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
        return _parse_file(path, builtin=False)
    resource = importlib.resources.files("rat.data_manifests") / f"{text_path}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_datasets())
        raise ManifestError(
            f"{text_path}: not a .toml file and not a builtin dataset (builtin: {known})"
        )
    with importlib.resources.as_file(resource) as real:
        return _parse_file(Path(real), builtin=True)


def _parse_file(path: Path, *, builtin: bool) -> DatasetDef:
    from rat.shared.definition_toml import parse_definition

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: cannot read the definition ({e})") from None
    return parse_definition(text, path.resolve(), builtin=builtin)


def definition_from_text(text: str, source: str | Path) -> DatasetDef:
    """A definition parsed from its TOML text (e.g. the copy a label store keeps); ``source`` names where
    the text came from in errors. A relative ``root`` key stays relative (no folder to anchor it to)."""
    from rat.shared.definition_toml import parse_definition

    return parse_definition(text, Path(str(source)), builtin=False, anchored=False)


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
