"""Split rules applied: which units (patients, images, ...) of a group are train, val and test.

Validation units are carved from the training units by the same seeded, platform-stable rule as the test
units, so that the test split does not depend on whether (or how large) a validation split is asked for,
and no unit is ever in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rat.shared.datasets.definition import Split

#: The splits of an index, in order.
SPLITS = ("train", "val", "test")
#: Share of the training units held out for validation where a definition names no validation split (older
#: definitions): at least one unit when there are two or more.
DEFAULT_VAL_FRACTION = 0.1


def rank_units(seed: int, units: Iterable[str]) -> list[str]:
    """Units ordered by the SHA-256 of ``"<seed>:<unit>"`` (the seeded rules' order)."""
    return sorted(set(units), key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())


def val_size(split: Split, n_train: int) -> int:
    """How many of ``n_train`` training units a seeded rule (or the default share) holds out for val."""
    if split.val_count is not None:
        return split.val_count
    fraction = split.val_fraction if split.val_fraction is not None else DEFAULT_VAL_FRACTION
    return min(n_train - 1, max(1, round(fraction * n_train))) if n_train > 1 and fraction > 0 else 0


def split_units(split: Split, units: Iterable[str]) -> dict[str, str]:
    """Apply a split rule: unit value -> "train", "val" or "test" (see :class:`~rat.shared.datasets.Split`).

    Units that an explicit rule with a train list names in no list are absent. Raises ValueError when a
    seeded rule asks for more test or validation units than there are.
    """
    units = sorted(set(units))
    if split.rule == "seeded":
        n_test = (split.test_count if split.test_count is not None
                  else round(split.test_fraction * len(units)))
        if n_test > len(units):
            raise ValueError(f"test_count: {n_test} test {split.unit}s asked, only {len(units)} found")
        ranked = rank_units(split.seed, units)
        n_val = val_size(split, len(units) - n_test) if split.has_val else 0
        if n_test + n_val > len(units):
            raise ValueError(f"val_count: {n_val} validation {split.unit}s asked, only {len(units) - n_test} "
                             "training ones found")
        return {u: "test" if k < n_test else "val" if k < n_test + n_val else "train"
                for k, u in enumerate(ranked)}
    test, val = set(split.test), set(split.val)
    train = set(split.train) if split.train is not None else set(units) - test - val
    named = test | val | train
    return {u: "test" if u in test else "val" if u in val else "train" for u in units if u in named}


def carve_val(split: Split, train_units: Iterable[str]) -> set[str]:
    """The validation units to take from the training units of an index made without a validation split:
    the rule's own share (seeded order), or :data:`DEFAULT_VAL_FRACTION` of them."""
    ranked = rank_units(split.seed, train_units)
    if split.rule == "explicit" and split.val:
        return set(split.val) & set(ranked)
    return set(ranked[: val_size(split, len(ranked))])
