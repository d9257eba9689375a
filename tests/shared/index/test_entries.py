"""The index CSV (rat.shared.index.entries): round trips and one-line errors."""

from __future__ import annotations

import pytest

from rat.shared.datasets import load_dataset
from rat.shared.index import (
    Entry,
    IndexFileError,
    load_index,
    read_index,
    write_index,
)

# ----------------------------------------------------------------------------- definitions


# ----------------------------------------------------------------------------- TMA derive


# ----------------------------------------------------------------------------- AAPM-like layout


# ----------------------------------------------------------------------------- PET-like volumes


def test_index_round_trip_and_errors(tmp_path):
    entries = [
        Entry("b", "g", "test", "lq/b.png", "hq/b.png", None, "ab" * 32, (4, 5, 3)),
        Entry("a_0001", "v", "train", "a/lq.nii", "a/hq.nii", 1, "cd" * 32, (6, 4), 2, "ef" * 32),
    ]
    path = tmp_path / "idx.csv"
    write_index(entries, path)
    text = path.read_text()
    assert text.splitlines()[0] == "id,group,split,lq,hq,slice,sha256,shape,axis,hq_sha256"
    assert text.splitlines()[1].startswith("a_0001,") and "\r" not in text  # sorted by id
    assert text.splitlines()[1].endswith(f",{'ef' * 32}")
    assert read_index(path) == sorted(entries, key=lambda e: e.id)
    v1 = tmp_path / "v1.csv"  # an index written by version 1 (no HQ hash, no stamps) still reads
    v1.write_text("id,group,split,lq,hq,slice,sha256,shape,axis\n"
                  f"b,g,test,lq/b.png,hq/b.png,,{'ab' * 32},4x5x3,\n")
    assert read_index(v1) == entries[:1]
    path.write_text(text.replace(",test,", ",dev,"))
    with pytest.raises(IndexFileError, match=r"idx.csv: line 3: .*'dev'"):
        read_index(path)
    ds = load_dataset("sample")
    with pytest.raises(IndexFileError, match=r"run `rat-precompute index --dataset sample"):
        load_index(ds, tmp_path / "nowhere")

