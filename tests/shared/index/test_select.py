"""Choosing entries (rat.shared.index.select): one selection for every command, and the validation split of
indexes made before there was one."""

from dataclasses import replace

import pytest

from rat.shared.datasets import load_dataset, split_units
from rat.shared.errors import ParamError
from rat.shared.index import Entry, load_index, select_entries
from rat.shared.index.select import entry_unit, parse_shard, with_val_split


def entry(i: int, group: str = "g", split: str = "train") -> Entry:
    return Entry(f"e{i:02d}", group, split, f"lq/{i}.png", f"hq/{i}.png", None, "a" * 64, (4, 4))


def test_split_group_shard_and_limit_mean_the_same_everywhere():
    entries = [entry(i, "g" if i % 3 else "h", ("train", "val", "test")[i % 2 * 2]) for i in range(12)]
    chosen = select_entries(entries[::-1], "train", group="g")
    assert [e.id for e in chosen] == sorted(e.id for e in entries if e.split == "train" and e.group == "g")
    assert select_entries(entries, shard="1/3") == sorted(entries, key=lambda e: e.id)[1::3]
    assert select_entries(entries, "all", limit=2) == sorted(entries, key=lambda e: e.id)[:2]
    assert parse_shard((1, 4)) == (1, 4) and parse_shard(None) is None
    with pytest.raises(ParamError, match="shard: '4/4': need 0 <= i < n"):
        select_entries(entries, shard="4/4")
    with pytest.raises(ParamError, match="split: 'dev' is not one of train, val, test or all"):
        select_entries(entries, "dev")


def test_an_index_without_val_gets_the_units_the_rule_would_give(sample_root):
    ds = load_dataset("sample")
    now = load_index(ds, sample_root)
    assert {e.split for e in now} == {"train", "val", "test"}
    old = [replace(e, split="train") if e.split == "val" else e for e in now]   # an index of an older version
    carved, note = with_val_split(ds, old)
    assert carved == now and "no validation split" in note and "ct: 1 of 6 training ids" in note
    assert with_val_split(ds, now) == (now, None)                                 # nothing to carve
    group = ds.groups["ct"]
    units = {entry_unit(group, e): e.split for e in now if e.group == "ct"}
    assert units == split_units(group.split, units)                                # unit of an entry: its id


def test_the_unit_of_an_entry_comes_from_its_hq_path():
    aapm = load_dataset("aapm").groups["ct"]
    e = replace(entry(0), hq="L067/full_dose/0001.dcm", id="L067_0001")
    assert entry_unit(aapm, e) == "L067"
    assert entry_unit(aapm, replace(e, hq="elsewhere/x.dcm")) == "L067_0001"      # no pattern: its own unit
