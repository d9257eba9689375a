"""Label maps in a store (rat.shared.store.labels): written with their record last, read, listed."""

import numpy as np
import pytest
from helpers import entry, prov

from rat.shared import store as st


def test_write_then_read_with_record(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    lab = np.arange(35, dtype=np.uint16).reshape(5, 7) % 4
    rec = st.write_labels(g, "p1/slice3", lab, "a" * 64, chunk=4)
    assert rec["complete"] and rec["regions"] == 3 and rec["shape"] == [5, 7]
    r = st.open_store(url)
    assert (st.read_labels(r, "p1/slice3") == lab).all()
    assert list(st.label_ids(r)) == ["p1/slice3"]
    arr = r["labels/p1~slice3/0"]
    assert arr.chunks == (4, 4) and arr.dtype == np.uint16
    assert st.verify(r, [entry("p1/slice3")]) == []
    info = st.store_summary(r)
    assert info["complete"] == 1 and info["regions"]["max"] == 3
    assert info["provenance"]["generator"]["params"]["n_segments"] == 8


def test_label_map_without_complete_record_does_not_exist(tmp_path):
    g = st.init_store(tmp_path / "s.zarr", prov())
    arr = g.create_group("labels/x").create_array("0", shape=(5, 7), dtype="uint16")
    arr[...] = 1                                     # data written, record never (killed before it)
    assert st.record(g, "x") is None
    with pytest.raises(st.StoreError, match="x: no complete label map"):
        st.read_labels(g, "x")
    assert st.verify(g, [entry("x")]) == ["x: missing or incomplete label map"]
    st.write_labels(g, "x", np.zeros((5, 7), np.uint16), "a" * 64)   # a rerun replaces it
    assert st.record(g, "x") is not None


def test_corrupt_metadata_reads_as_missing(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "x", np.ones((5, 7), np.uint16), "a" * 64)
    meta = url / "labels" / "x" / "zarr.json"
    meta.write_text(meta.read_text()[:40])          # truncated mid-write
    assert st.record(st.open_store(url), "x") is None


