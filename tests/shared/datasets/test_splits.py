"""Split rules (rat.shared.datasets.splits): every unit in exactly one split, for many seeds and sizes; the
validation units come from the training units and leave the test split as it was."""

import hashlib

import numpy as np
import pytest

from rat.shared.datasets import Split, split_units
from rat.shared.datasets.splits import DEFAULT_VAL_FRACTION, carve_val, rank_units


def units(n: int, rng: np.random.Generator) -> list[str]:
    return [f"P{int(x):05d}" for x in rng.choice(10**5, size=n, replace=False)]


@pytest.mark.parametrize("seed", range(40))
def test_seeded_rules_put_every_unit_in_exactly_one_split(seed):
    rng = np.random.default_rng(seed)
    names = units(int(rng.integers(3, 200)), rng)
    n_test = int(rng.integers(0, len(names) // 2))
    n_val = int(rng.integers(0, len(names) - n_test))
    with_val = split_units(Split("seeded", "patient", seed, test_count=n_test, val_count=n_val), names)
    without = split_units(Split("seeded", "patient", seed, test_count=n_test), names)
    assert set(with_val) == set(without) == set(names)                    # each unit once, none lost
    counts = {s: sum(v == s for v in with_val.values()) for s in ("train", "val", "test")}
    assert counts == {"train": len(names) - n_test - n_val, "val": n_val, "test": n_test}
    assert {u for u, s in with_val.items() if s == "test"} == {u for u, s in without.items() if s == "test"}
    assert {u for u, s in with_val.items() if s == "val"} <= {u for u, s in without.items() if s == "train"}
    # the rule's own order, by hand: SHA-256 of "<seed>:<unit>"
    by_hand = sorted(names, key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())
    assert [with_val[u] for u in by_hand] == ["test"] * n_test + ["val"] * n_val + ["train"] * counts["train"]


@pytest.mark.parametrize("seed", range(20))
def test_explicit_rules_put_every_named_unit_in_exactly_one_split(seed):
    rng = np.random.default_rng(100 + seed)
    names = units(int(rng.integers(3, 60)), rng)
    shuffled = list(rng.permutation(names))
    k, m = int(rng.integers(1, len(names) - 1)), int(rng.integers(0, 3))
    test, val, rest = shuffled[:k], shuffled[k:k + m], shuffled[k + m:]
    train = rest[: len(rest) // 2]                         # the others are in no list: left out
    rule = Split("explicit", "patient", test=tuple(test), val=tuple(val), train=tuple(train))
    expected = {**dict.fromkeys(test, "test"), **dict.fromkeys(val, "val"), **dict.fromkeys(train, "train")}
    assert split_units(rule, names) == expected
    free = split_units(Split("explicit", "patient", test=tuple(test), val=tuple(val)), names)
    assert set(free) == set(names) and {u for u, s in free.items() if s == "train"} == set(rest)


def test_seeded_val_fraction_of_the_training_units_and_too_many_refused():
    names = [f"u{i}" for i in range(573)]
    out = split_units(Split("seeded", "id", 0, test_count=113, val_fraction=0.1), names)
    assert [sum(v == s for v in out.values()) for s in ("train", "val", "test")] == [414, 46, 113]
    with pytest.raises(ValueError, match="val_count: 461 validation ids asked, only 460"):
        split_units(Split("seeded", "id", 0, test_count=113, val_count=461), names)


def test_carving_val_from_an_index_without_one_takes_the_rules_next_units():
    names = [f"u{i}" for i in range(50)]
    rule = Split("seeded", "id", 3, test_count=10, val_count=4)
    now = split_units(rule, names)
    old = split_units(Split("seeded", "id", 3, test_count=10), names)    # as an older index split them
    carved = carve_val(rule, [u for u, s in old.items() if s == "train"])
    assert carved == {u for u, s in now.items() if s == "val"}
    older_rule = Split("seeded", "id", 3, test_count=10)                  # a definition without val keys
    trained = [u for u, s in old.items() if s == "train"]
    default = carve_val(older_rule, trained)
    assert len(default) == round(DEFAULT_VAL_FRACTION * 40) and default < set(trained)
    assert default == set(rank_units(3, trained)[:4])
