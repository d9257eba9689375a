"""The store contract: provenance, atomic root creation, records written last, readers read-only,
OME-Zarr label images, retried reads, schema-1 stores."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from conftest import write_schema1_store

from rat.shared import store as st


def prov(**params):
    return st.make_provenance("sample", {"name": "superpixels", "params": {"n_segments": 8, **params}},
                              {"ct": {"kind": "fixed", "low": -160.0, "high": 240.0}})


def entry(image_id, sha="a" * 64, shape=(5, 7)):
    return SimpleNamespace(id=image_id, sha256=sha, shape=shape, lq=f"{image_id}.png")


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
    info = st.summarize(r)
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


def test_other_configuration_is_refused_unless_overwrite(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "x", np.ones((5, 7), np.uint16), "a" * 64)
    with pytest.raises(st.StoreError, match=r"n_segments: 8 -> 9.*`overwrite`"):
        st.init_store(url, prov(n_segments=9))
    g2 = st.init_store(url, prov(n_segments=9), overwrite=True)
    assert st.record(g2, "x") is None                # made under the old configuration: not done
    assert st.init_store(url, prov(n_segments=9)) is not None


def test_verify_reports_every_kind_of_problem(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "ok", np.ones((5, 7), np.uint16), "a" * 64)
    st.write_labels(g, "other", np.ones((5, 7), np.uint16), "b" * 64)
    st.write_labels(g, "tampered", np.ones((5, 7), np.uint16), "a" * 64)
    g["labels/tampered/0"][0, 0] = 2                # bytes changed after the record
    problems = st.verify(st.open_store(url), [entry("ok"), entry("other"), entry("tampered"),
                                              entry("missing"), entry("ok", shape=(6, 7))])
    assert problems[0].startswith("other: label map made from other LQ bytes")
    assert problems[1].startswith("tampered: label bytes do not match their recorded SHA-256")
    assert problems[2] == "missing: missing or incomplete label map"
    assert "shape" in problems[3]
    assert len(problems) == 4


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


def test_image_ids_that_cannot_be_keys():
    assert st.image_key("a/b") == "a~b" and st.image_id("a~b") == "a/b"
    for bad in ("a~b", "__x", ""):
        with pytest.raises(st.StoreError):
            st.image_key(bad)


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


def test_label_maps_are_ome_zarr_label_images(tmp_path):
    """ome-zarr-py's own reader opens a label map as an NGFF label image and lists its regions."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Reader

    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    lab = np.zeros((40, 50), np.uint16)
    lab[:10, :20], lab[20:, 30:], lab[5:8, 40:45] = 1, 2, 7
    st.write_labels(g, "ct_01", lab, "a" * 64, chunk=16, spacing=(0.7, 0.5))
    from rat.shared.store_dataset import refresh_labels_list

    refresh_labels_list(g)
    (node, *_) = Reader(parse_url(str(url / "labels" / "ct_01")))()
    assert any(isinstance(spec, Label) for spec in node.specs)
    np.testing.assert_array_equal(np.asarray(node.data[0]), lab)
    assert node.metadata["properties"] == {1: {"area (pixels)": 200}, 2: {"area (pixels)": 400},
                                           7: {"area (pixels)": 15}}
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [0.7, 0.5]
    nodes = list(Reader(parse_url(str(url / "labels")))())  # the labels group lists the label images
    assert any(isinstance(spec, Labels) for n in nodes for spec in n.specs)
    assert sum(isinstance(spec, Label) for n in nodes for spec in n.specs) == 1


class Flaky(zarr.storage.WrapperStore):
    """A store whose reads fail `failures` times (as an object store's connection resets) before working."""

    def __init__(self, store, failures):
        super().__init__(store)
        self.failures = failures

    async def get(self, key, prototype, byte_range=None):
        if key.startswith("labels/x") and self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("connection reset by peer")
        return await super().get(key, prototype, byte_range)


def test_transient_read_errors_are_retried_not_taken_for_missing(tmp_path, monkeypatch):
    url = tmp_path / "s.zarr"
    st.write_labels(st.init_store(url, prov()), "x", np.ones((5, 7), np.uint16), "a" * 64)
    monkeypatch.setattr(st, "RETRY_WAIT", 0.001)
    local = zarr.storage.LocalStore(url, read_only=True)
    flaky = zarr.open_group(Flaky(local, failures=2), mode="r")
    assert st.record(flaky, "x")["complete"]          # two resets, then the record
    dead = zarr.open_group(Flaky(local, failures=10**6), mode="r")
    with pytest.raises(st.StoreError, match=r"labels/x: cannot read \(ConnectionResetError.*after 4 attempt"):
        st.record(dead, "x")                          # not None: `masks` must not recompute it
    assert st.record(zarr.open_group(local, mode="r"), "absent") is None


def test_schema_1_stores_still_read_and_are_refused_for_writing(tmp_path):
    generator = {"name": "superpixels", "params": {"n_segments": 8}}
    lab = (np.arange(35).reshape(5, 7) % 3).astype(np.uint16)
    url = write_schema1_store(tmp_path / "v1.zarr", "sample", {"a/b": (lab, "a" * 64)}, generator, {})
    r = st.open_store(url)
    assert st.provenance(r)["schema"] == 1
    assert st.record(r, "a/b")["regions"] == 2
    np.testing.assert_array_equal(st.read_labels(r, "a/b"), lab)
    assert st.label_ids(r) == ["a/b"]
    assert st.verify(r, [entry("a/b")]) == []
    with pytest.raises(st.StoreError, match="schema-1 store: upgrade it in place with `rat-precompute"):
        st.init_store(url, st.make_provenance("sample", generator, {}))
