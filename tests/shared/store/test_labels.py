"""Label maps in a store (rat.shared.store.labels): written with their record last, read, listed."""

import json

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


def test_a_write_killed_before_its_record_is_listed_as_incomplete_and_left_out(tmp_path, monkeypatch):
    """The record is the last object written: a writer killed before it leaves a node that is listed (one
    listing of labels/), counted as incomplete by `info`, kept out of the consolidated table and of NGFF's
    list, and replaced by the next write."""
    from rat.shared.store import labels as store_labels

    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "a", np.ones((5, 7), np.uint16), "a" * 64)
    real = store_labels.os.replace

    def killed(src, dst):
        if str(dst).endswith("labels/b/zarr.json"):
            raise KeyboardInterrupt                  # the process dies before the record is in place
        return real(src, dst)

    monkeypatch.setattr(store_labels.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        st.write_labels(g, "b", np.full((5, 7), 2, np.uint16), "b" * 64)
    monkeypatch.setattr(store_labels.os, "replace", real)
    node = url / "labels" / "b"
    assert (node / "0" / "zarr.json").is_file() and not (node / "zarr.json").exists()
    r = st.open_store(url)
    assert st.label_ids(r) == ["a", "b"]
    assert st.store_summary(r)["incomplete"] == ["b"] and st.store_summary(r)["complete"] == 1
    st.consolidate(g)
    r = st.open_store(url)
    table = json.loads(r[r.attrs[st.ATTR]["records"]["array"]][...].tobytes())["rows"]
    assert list(table) == ["labels/a/zarr.json"]
    assert r["labels"].attrs["ome"]["labels"] == ["a"]
    st.write_labels(g, "b", np.full((5, 7), 2, np.uint16), "b" * 64)
    assert st.store_summary(st.open_store(url))["complete"] == 2


def test_corrupt_metadata_reads_as_missing(tmp_path):
    url = tmp_path / "s.zarr"
    g = st.init_store(url, prov())
    st.write_labels(g, "x", np.ones((5, 7), np.uint16), "a" * 64)
    meta = url / "labels" / "x" / "zarr.json"
    meta.write_text(meta.read_text()[:40])          # truncated mid-write
    assert st.record(st.open_store(url), "x") is None




@pytest.mark.parametrize("shape, chunk, dtype", [((5, 7), 256, np.uint16), ((300, 170), 128, np.uint16),
                                                 ((64, 64), 32, np.uint32)])
def test_a_label_map_is_written_as_zarr_writes_it_byte_for_byte(tmp_path, shape, chunk, dtype):
    """The batched writer against zarr's own: a group with the NGFF and record attributes (the same document)
    and an array "0" written through zarr's API (byte for byte; empty chunks left out by zarr as well)."""
    from pathlib import Path

    import zarr

    from rat.shared.store.ngff import label_image_attrs

    rng = np.random.default_rng(1)
    lab = rng.integers(0, 70, shape).astype(dtype)
    lab[: shape[0] // 2, : shape[1] // 2] = 0                       # some chunks equal the fill value
    ours = st.init_store(tmp_path / "ours.zarr", prov())
    rec = st.write_labels(ours, "p1/s3", lab, "a" * 64, chunk=chunk, spacing=(0.5, 0.7))
    theirs = st.init_store(tmp_path / "zarr.zarr", prov())
    counts = np.bincount(lab.ravel())
    ome = label_image_attrs("p1~s3", counts, (0.5, 0.7))
    node = theirs.create_group("labels/p1~s3", attributes={"ome": ome})
    chunks = (min(chunk, shape[0]), min(chunk, shape[1]))
    arr = node.create_array("0", shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                            compressors=zarr.codecs.ZstdCodec(level=5), dimension_names=("y", "x"))
    arr[...] = lab
    node.attrs["rat"] = rec

    def files(root: Path) -> dict[str, bytes]:
        base = root / "labels" / "p1~s3"
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    ours_files, zarr_files = files(tmp_path / "ours.zarr"), files(tmp_path / "zarr.zarr")
    group_docs = [json.loads(f.pop("zarr.json")) for f in (ours_files, zarr_files)]  # compact JSON: same doc
    assert group_docs[0] == group_docs[1] and ours_files == zarr_files and len(ours_files) >= 2
    np.testing.assert_array_equal(st.read_labels(st.open_store(tmp_path / "ours.zarr"), "p1/s3"), lab)
    st.write_labels(ours, "p1/s3", np.ones((4, 4), dtype), "b" * 64, chunk=chunk)   # replaces the node whole
    assert st.read_labels(st.open_store(tmp_path / "ours.zarr"), "p1/s3").shape == (4, 4)
    assert set(files(tmp_path / "ours.zarr")) == {"zarr.json", "0/zarr.json", "0/c/0/0"}
