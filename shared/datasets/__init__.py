"""Datasets: their definitions (TOML), file patterns, LQ derivation and split rules.

- :mod:`~rat.shared.datasets.definition`: :class:`DatasetDef` and its parts, :class:`DefinitionError`;
- :mod:`~rat.shared.datasets.parse`: the TOML text checked into a definition;
- :mod:`~rat.shared.datasets.load`: builtin definitions by name, user definitions by path;
- :mod:`~rat.shared.datasets.patterns`: file patterns with named fields, and finding the files;
- :mod:`~rat.shared.datasets.degrade`: derived (simulated) LQ images;
- :mod:`~rat.shared.datasets.splits`: split rules applied to units.

This ``__init__`` only gathers the names most code needs.
"""

from rat.shared.datasets.definition import (
    DatasetDef,
    DefinitionError,
    Group,
    Split,
    Volume,
    Window,
    channel_count,
    pick_group,
)
from rat.shared.datasets.load import builtin_datasets, definition_from_text, load_dataset
from rat.shared.datasets.splits import SPLITS, split_units

__all__ = [
    "SPLITS", "DatasetDef", "DefinitionError", "Group", "Split", "Volume", "Window", "builtin_datasets",
    "channel_count", "definition_from_text", "load_dataset", "pick_group", "split_units",
]
