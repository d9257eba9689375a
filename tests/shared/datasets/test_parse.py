"""Dataset definitions (rat.shared.datasets.parse, load): the paper's settings; one-line mistakes."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import GOOD

from rat.shared import datasets as mf
from rat.shared.datasets import DefinitionError, Split, load_dataset, split_units


def test_builtin_definitions_state_the_papers_settings():
    assert mf.builtin_datasets() == ["aapm", "pet", "realdata", "sample", "tma"]
    real = load_dataset("realdata").groups
    assert (real["ct"].split.rule, real["ct"].split.unit, real["ct"].split.test) == ("explicit", "patient",
                                                                                  ("pancreas",))
    assert (real["pathology"].derive_lq, real["pathology"].channels) == ("bicubic_x4", 3)
    tma = load_dataset("tma").groups["tma"]
    assert (tma.channels, tma.patch_size, tma.derive_lq, tma.lq) == (3, 256, "bicubic_x4", None)
    assert (tma.split.rule, tma.split.test_count, tma.sam_window.kind) == ("seeded", 113, "none")
    aapm = load_dataset("aapm").groups["ct"]
    assert (aapm.modality, aapm.channels, aapm.patch_size) == ("CT", 1, 256)
    assert aapm.split.rule == "explicit" and aapm.split.test == ("L506",)
    training = aapm.split.train + aapm.split.val
    assert len(training) == 9 and "L506" not in training
    assert aapm.sam_window == mf.Window("fixed", -160.0, 240.0)
    pet = load_dataset("pet").groups["pet"]
    assert (pet.patch_size, pet.split.test_count, pet.split.unit) == (192, 25, "patient")
    assert pet.volume is not None and pet.sam_window.kind == "percentile"
    sample = load_dataset("sample")
    assert set(sample.groups) == {"pathology", "ct"}
    assert {g.patch_size for g in sample.groups.values()} == {96}  # from [defaults]
    assert sample.groups["pathology"].channels == 3 and sample.groups["ct"].channels == 1


def counts(assigned: dict[str, str]) -> tuple[int, int, int]:
    return tuple(list(assigned.values()).count(s) for s in ("train", "val", "test"))


def test_builtin_splits_hold_the_papers_test_sets_and_carve_val_from_their_training_sets():
    tma = split_units(load_dataset("tma").groups["tma"].split, [f"img{i:03d}" for i in range(573)])
    assert counts(tma) == (414, 46, 113)                        # paper: 460 train (414 + 46) / 113 test
    pet = split_units(load_dataset("pet").groups["pet"].split, [f"P{i:03d}" for i in range(115)])
    assert counts(pet) == (81, 9, 25)                           # paper: 90 train patients (81 + 9) / 25 test
    patients = ["L067", "L096", "L109", "L143", "L192", "L286", "L291", "L310", "L333", "L506"]
    aapm = split_units(load_dataset("aapm").groups["ct"].split, patients)
    assert aapm["L506"] == "test" and aapm["L333"] == "val" and counts(aapm) == (8, 1, 1)  # paper: 9 / 1
    for group in load_dataset("sample").groups.values():
        assert counts(split_units(group.split, [f"x_{i:02d}" for i in range(8)])) == (5, 1, 2)


def test_paper_split_sizes_from_the_seeded_rules():
    # stable: independent of input order, and a different seed gives a different split
    units = [f"u{i}" for i in range(50)]
    rule = Split("seeded", "id", seed=3, test_fraction=0.2)
    assert split_units(rule, units) == split_units(rule, units[::-1])
    assert list(split_units(rule, units).values()).count("test") == 10
    assert split_units(rule, units) != split_units(dataclasses.replace(rule, seed=4), units)
    with pytest.raises(ValueError, match="test_count"):
        split_units(Split("seeded", "id", test_count=5), ["a", "b"])


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("patch_size = 64", 'patch_size = "big"', "defaults.patch_size"),
        ('channels = 1', 'channels = 1\nchanels = 2', "groups.g.chanels"),
        ('lq = ["lq/{id}.dcm"]', 'lq = ["lq/{name}.dcm"]', "groups.g.lq"),
        ('lq = ["lq/{id}.dcm"]', 'lq = ["lq/{id}.dcm"]\nderive_lq = "bicubic_x4"', "groups.g"),
        ('kind = "fixed"', 'kind = "magic"', "groups.g.sam_window.kind"),
        ('unit = "id"', 'unit = "patient"', "defaults.split.unit"),
        ("test_count = 1 }", "test_count = 1, val_count = 1, val_fraction = 0.5 }", "defaults.split"),
        ("test_count = 1 }", "test_count = 1, val = ['a'] }", "defaults.split"),
        ("norm_high = 3072", "norm_high = -2000", "groups.g.norm_high"),
        ('modality = "CT"\n', "", "groups.g.modality"),
        ('name = "mine"', 'name = "mine"\n[groups', "invalid TOML"),
    ],
)
def test_bad_definition_is_one_line_naming_file_and_key(tmp_path, old, new, key):
    path = tmp_path / "bad.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(DefinitionError) as err:
        load_dataset(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and key in message, message


def test_unknown_builtin_and_missing_file(tmp_path):
    with pytest.raises(DefinitionError, match="builtin: aapm, pet, realdata, sample, tma"):
        load_dataset("nosuch")
    with pytest.raises(DefinitionError, match="not found"):
        load_dataset(tmp_path / "nosuch.toml")

