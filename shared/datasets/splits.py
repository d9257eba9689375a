"""Split rules applied: which units (patients, images, ...) of a group are train and which are test."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rat.shared.datasets.definition import Split

#: The splits of an index, in order.
SPLITS = ("train", "test")


def split_units(split: Split, units: Iterable[str]) -> dict[str, str]:
    """Apply a split rule: unit value -> "train" or "test" (see :class:`~rat.shared.datasets.Split`).

    Units that an explicit rule with a train list names in neither list are absent. Raises
    ValueError when a seeded rule asks for more test units than there are.
    """
    units = sorted(set(units))
    if split.rule == "seeded":
        n_test = (split.test_count if split.test_count is not None
                  else round(split.test_fraction * len(units)))
        if n_test > len(units):
            raise ValueError(f"test_count: {n_test} test {split.unit}s asked, only {len(units)} found")
        ranked = sorted(units, key=lambda u: hashlib.sha256(f"{split.seed}:{u}".encode()).hexdigest())
        return {u: "test" if rank < n_test else "train" for rank, u in enumerate(ranked)}
    test = set(split.test)
    train = set(split.train) if split.train is not None else set(units) - test
    return {u: "test" if u in test else "train" for u in units if u in test | train}
