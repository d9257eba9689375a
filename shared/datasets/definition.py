"""What a dataset definition is: :class:`DatasetDef` and its groups, windows, split rules and volumes.

A dataset definition is one TOML file (the builtin ones live in ``rat.data_manifests``; each documents every
key in comments). It has a ``name``, a ``description``, an optional ``root`` (the data root, see
:func:`rat.shared.index.locate.resolve_root`), an optional ``[defaults]`` table and one ``[groups.<group>]``
table per group of images that share modality, channels, file layout and settings; a group key not set in the
group table is taken from ``[defaults]``. See :class:`Group` for the keys and
:mod:`rat.shared.datasets.patterns` for the file patterns. Reading and checking the TOML text is
:mod:`rat.shared.datasets.parse`; finding definitions by name :mod:`rat.shared.datasets.load`; applying
a split rule :mod:`rat.shared.datasets.splits`. Every mistake is a :class:`DefinitionError` naming the file
and the key.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from rat.shared.errors import ParamError, RatError


class DefinitionError(RatError, ValueError):
    """A bad dataset definition; ``str(err)`` is one line naming the file (and key)."""


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
    """How a group's images are split into "train", "val" and "test", at the level of ``unit``.

    unit: the named pattern field whose values are split (e.g. "patient": all images of a
    patient land in the same split).
    rule "seeded": units are ordered by the SHA-256 of ``"<seed>:<unit value>"`` (stable across
    platforms and library versions); the first ``test_count`` (or ``round(test_fraction * n)``)
    are test, the next ``val_count`` (or ``round(val_fraction * the units left)``) are val (carved
    from the training units: the test split is the same with or without them), the rest train.
    rule "explicit": the units named in ``test`` are test and those in ``val`` val; with ``train``
    given, those are train and units in no list are reported as problems and left out; without it,
    all others are train.
    """

    rule: str
    unit: str
    seed: int = 0
    test_count: int | None = None
    test_fraction: float | None = None
    test: tuple[str, ...] = ()
    train: tuple[str, ...] | None = None
    val_count: int | None = None
    val_fraction: float | None = None
    val: tuple[str, ...] = ()

    @property
    def has_val(self) -> bool:
        """Whether the rule names a validation split (definitions older than it do not)."""
        return bool(self.val_count or self.val_fraction or self.val)


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
    value_range: the values the group's images hold (source units); an image with values outside it (by more
    than RANGE_TOLERANCE of its span) is refused at indexing and by restore, naming the file, its values and
    this range (:func:`range_problem`). Default: the normalisation range for groups of 8-bit images used as
    they are (``sam_window`` kind "none": a 16-bit image there is a mistake), none otherwise (CT padding,
    metal and PET hot spots lie beyond the normalisation range and are real). clip_values: clip values
    outside ``value_range`` instead of refusing the image (on purpose).
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
    value_range: tuple[float, float] | None = None
    clip_values: bool = False

    @property
    def declared_range(self) -> tuple[float, float] | None:
        """The values this group's images may hold (see ``value_range``), or None when unbounded."""
        if self.value_range is not None:
            return self.value_range
        return (self.norm_low, self.norm_high) if self.sam_window.kind == "none" else None


#: Values may exceed a group's declared range by this fraction of its span (rounding, resampling).
RANGE_TOLERANCE = 0.01


def range_problem(group: Group, low: float, high: float) -> str | None:
    """Why values ``low..high`` do not belong in ``group`` (one line, without the file), or None: within its
    declared range, or the group clips (``clip_values``) or declares none."""
    bounds = group.declared_range
    if bounds is None or group.clip_values or not (math.isfinite(low) and math.isfinite(high)):
        return None
    slack = RANGE_TOLERANCE * (bounds[1] - bounds[0])
    if low >= bounds[0] - slack and high <= bounds[1] + slack:
        return None
    return (f"values {low:g}..{high:g} outside group {group.name!r}'s range {bounds[0]:g}..{bounds[1]:g} (a "
            "16-bit image in an 8-bit group?); set the group's value_range, or clip_values = true to clip "
            "them on purpose")


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


def channel_count(shape: tuple[int, ...]) -> int:
    """Channels of an image of ``shape``: (H, W) is 1, (H, W, C) is C."""
    return int(shape[2]) if len(shape) == 3 else 1
