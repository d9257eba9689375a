"""`rat-precompute cache`: LQ and HQ images in the store, exact values and dtype, resumable, bad items."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rat.precompute.cli import main
from rat.shared import store as st
from rat.shared.batch import summarize
from rat.shared.cache import cache_images, exact_dtype, image_record, write_images
from rat.shared.datasets import load_dataset
from rat.shared.index import load_index, read_hq, read_lq


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def make_labels(root: Path, out: Path, *extra) -> None:
    code, text = run("masks", "--dataset", "sample", "--root", root, "--out", out, "--generator",
                     "superpixels", "--no-progress", *extra)
    assert code == 0, text


@pytest.fixture(scope="module")
def cached_store(sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "s.zarr"
    make_labels(sample_root, out)
    outcomes = cache_images(load_index(load_dataset("sample"), sample_root), sample_root, out,
                            progress=False)
    assert [o.status for o in outcomes] == ["done"] * 16, summarize(outcomes)
    return out


def test_round_trip_is_exact_in_value_and_dtype(sample_root, cached_store):
    g = st.open_store(cached_store)
    for e in load_index(load_dataset("sample"), sample_root):
        node = g[f"images/{st.image_key(e.id)}"]
        rec = image_record(g, e.id)
        assert rec["source_sha256"] == e.sha256 and rec["shape"] == list(e.shape)
        for name, reader in (("lq", read_lq), ("hq", read_hq)):
            want, meta = reader(e, sample_root)
            got = node[name][...]
            assert got.dtype == np.dtype(meta.source_dtype)  # int16 HU, uint8 RGB: never squeezed
            assert rec[f"{name}_dtype"] == meta.source_dtype
            np.testing.assert_array_equal(got.astype(np.float32), want)
            assert node[name].chunks == (min(256, e.shape[0]), min(256, e.shape[1]), *e.shape[2:])
        if e.group == "ct":
            assert node["hq"].dtype == np.int16
            assert node["hq"][...].min() < -500 and node["hq"][...].max() > 1000  # > 8-bit range kept
        else:
            assert node["lq"].dtype == np.uint8


def test_rerun_skips_and_changed_or_partial_items_are_redone(sample_copy, tmp_path):
    out = tmp_path / "s.zarr"
    make_labels(sample_copy, out, "--limit", "3")
    entries = load_index(load_dataset("sample"), sample_copy)[:3]
    assert {o.status for o in cache_images(entries, sample_copy, out, progress=False)} == {"done"}
    assert [o.status for o in cache_images(entries, sample_copy, out, progress=False)] == ["skipped"] * 3
    # a new HQ file (same LQ) and a cache whose record was never written are both redone
    hq = sample_copy / entries[0].hq
    hq.write_bytes((sample_copy / entries[1].hq).read_bytes())
    g = st.open_store(out, mode="a")
    del g[f"images/{st.image_key(entries[2].id)}"].attrs[st.ATTR]
    outcomes = cache_images(entries, sample_copy, out, progress=False)
    assert [o.status for o in outcomes] == ["done", "skipped", "done"]
    np.testing.assert_array_equal(st.open_store(out)[f"images/{entries[0].id}/hq"][...],
                                  read_hq(entries[1], sample_copy)[0])
    outcomes = cache_images(entries, sample_copy, out, overwrite=True, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 3


def test_bad_items_are_reported_and_the_rest_cached(sample_copy, tmp_path):
    out = tmp_path / "s.zarr"
    make_labels(sample_copy, out, "--limit", "3")
    entries = load_index(load_dataset("sample"), sample_copy)[:3]
    (sample_copy / entries[0].hq).unlink()
    lq = sample_copy / entries[1].lq
    lq.write_bytes(lq.read_bytes() + b"\0")
    outcomes = cache_images(entries, sample_copy, out, progress=False)
    assert [o.status for o in outcomes] == ["failed", "failed", "done"]
    assert entries[0].hq in outcomes[0].reason and "file not found" in outcomes[0].reason
    assert entries[1].lq in outcomes[1].reason and "SHA-256" in outcomes[1].reason
    assert image_record(st.open_store(out), entries[0].id) is None
    text = summarize(outcomes, done="cached", skipped="skipped (already cached)")
    assert "1 cached, 0 skipped (already cached), 2 failed" in text and f"FAILED {entries[1].id}" in text


def test_command_line_uses_the_store_chunk_and_exits_nonzero_on_failure(sample_copy, tmp_path):
    out = tmp_path / "s.zarr"
    make_labels(sample_copy, out, "--chunk", "64", "--split", "test")
    code, text = run("cache", "--dataset", "sample", "--root", sample_copy, "--out", out, "--split", "test",
                     "--no-progress")
    assert code == 0 and "4 cached, 0 skipped" in text, text
    g = st.open_store(out)
    assert g["images/ihc_04/lq"].chunks == (64, 64, 3) and g["images/ct_01/hq"].chunks == (64, 64)
    code, text = run("cache", "--dataset", "sample", "--root", sample_copy, "--out", out, "--split", "test",
                     "--shard", "0/2", "--no-progress")
    assert code == 0 and "0 cached, 2 skipped" in text
    (sample_copy / "ct/hq/ct_01.dcm").unlink()
    code, text = run("cache", "--dataset", "sample", "--root", sample_copy, "--out", out, "--split", "test",
                     "--overwrite", "--no-progress")
    assert code == 1 and "FAILED ct_01: " in text and "ct_01.dcm: file not found" in text


def test_missing_store_is_refused_and_not_created(sample_root, tmp_path):
    out = tmp_path / "none.zarr"
    code, text = run("cache", "--dataset", "sample", "--root", sample_root, "--out", out, "--no-progress")
    assert code == 1 and "no such store" in text and str(out) in text
    assert not out.exists()
    Path(tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(st.StoreError, match="not a RAT label store"):
        cache_images([], sample_root, tmp_path / "plain", progress=False)


def test_exact_dtype_is_the_smallest_exact_one():
    assert exact_dtype(np.array([0, 255], np.float32), "uint8") == np.uint8
    assert exact_dtype(np.array([0, 65535], np.float32), "uint16") == np.uint16  # 16-bit PNG stays 16-bit
    assert exact_dtype(np.array([-1024, 3071], np.float32), "int16") == np.int16
    assert exact_dtype(np.array([-1024, 64511], np.float32), "uint16") == np.int32  # rescale intercept
    assert exact_dtype(np.array([-1024, 1000], np.float32), "uint8") == np.int16
    assert exact_dtype(np.array([0.5, 2], np.float32), "uint16") == np.float32  # rescale slope 0.5
    assert exact_dtype(np.array([0, 1], np.float32), "float64") == np.float32
    assert exact_dtype(np.array([0, 1], np.float32), "bool") == np.uint8


def test_float_values_round_trip(tmp_path):
    g = st.init_store(tmp_path / "s.zarr", st.make_provenance("t", {"name": "t"}, {}, chunk=8))
    lq = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    hq = np.round(lq * 1000) - 100  # negative: uint16 cannot hold it, int16 is not wider
    rec = write_images(g, "a/b", lq, hq, "x" * 64, "y" * 64, "uint16", "uint16", chunk=8)
    assert rec["lq_dtype"] == "float32" and rec["hq_dtype"] == "int32"
    node = st.open_store(tmp_path / "s.zarr")["images/a~b"]
    np.testing.assert_array_equal(node["lq"][...], lq)
    np.testing.assert_array_equal(node["hq"][...], hq)
    assert node["lq"].chunks == (8, 8)
