"""Opening stores (rat.shared.store.access): one configuration per store, created once, readers read-only."""

import json

import numpy as np
import pytest
from helpers import entry, prov

from rat.shared import store as st


def test_other_configuration_is_refused_unless_overwrite(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "x", np.ones((5, 7), np.uint16), "a" * 64)
    with pytest.raises(st.StoreError, match=r"n_segments: 8 -> 9.*`overwrite`"):
        st.init_store(url, prov(n_segments=9))
    g2 = st.init_store(url, prov(n_segments=9), overwrite=True)
    assert st.record(g2, "x") is None                # made under the old configuration: not done
    again = st.init_store(url, prov(n_segments=9))   # the replaced configuration is now the store's
    assert st.provenance(again)["fingerprint"] == prov(n_segments=9)["fingerprint"]
    with pytest.raises(st.StoreError, match=r"n_segments: 9 -> 8"):
        st.init_store(url, prov())


def test_readers_open_read_only(tmp_path):
    url = tmp_path / "s.zarr"
    st.write_labels(st.init_store(url, prov()), "x", np.ones((5, 7), np.uint16), "a" * 64)
    before = {p: p.stat().st_mtime_ns for p in url.rglob("*")}
    r = st.open_store(url)
    with pytest.raises(Exception):  # noqa: B017 - zarr raises its own read-only error type
        r["labels/x/0"][0, 0] = 5
    assert {p: p.stat().st_mtime_ns for p in url.rglob("*")} == before
    with pytest.raises(st.StoreError, match="no such store"):
        st.open_store(tmp_path / "nope.zarr")


def test_root_metadata_is_created_once(tmp_path):
    url = tmp_path / "s.zarr"
    st.init_store(url, prov())
    first = (url / "zarr.json").read_bytes()
    st.init_store(url, prov())                       # a second process with the same configuration
    assert (url / "zarr.json").read_bytes() == first
    assert json.loads(first)["attributes"]["rat"]["fingerprint"] == prov()["fingerprint"]


def test_a_writer_of_a_replaced_configuration_is_never_read(tmp_path):
    """--overwrite while another shard still computes under the old configuration: what that shard writes
    afterwards records the old fingerprint, so readers of the new configuration never take it."""
    url = tmp_path / "s.zarr"
    old = prov()
    writer = st.init_store(url, old)                  # shard A opens the store (old configuration)
    new = prov(n_segments=9)
    st.init_store(url, new, overwrite=True)          # shard B replaces the configuration
    st.write_labels(writer, "x", np.ones((5, 7), np.uint16), "a" * 64, fingerprint=old["fingerprint"])
    reader = st.open_store(url)
    assert st.provenance(reader)["fingerprint"] == new["fingerprint"]
    assert st.record(reader, "x") is None            # computed under the old one: recomputed, not read
    assert st.verify(reader, [entry("x")]) == ["x: missing or incomplete label map"]

