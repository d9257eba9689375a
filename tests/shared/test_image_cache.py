"""The local image cache (`rat-precompute cache`, and `rat-train` on first use): exact values and dtype,
keyed by the files' hashes, resumable, safe for several processes at once, bad items reported."""

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from rat.precompute.cli import main
from rat.shared.datasets import load_dataset
from rat.shared.image_cache import ImageCache, cache_images, exact_dtype, write_images
from rat.shared.index import load_index, read_hq, read_lq
from rat.shared.index.build import ensure_index
from rat.shared.jobs import summarize


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def filled(sample_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    entries = load_index(load_dataset("sample"), sample_root)
    outcomes = cache_images(entries, sample_root, folder, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 16, summarize(outcomes)
    return folder


def test_round_trip_is_exact_in_value_and_dtype(sample_root, filled):
    images = ImageCache(filled)
    for e in load_index(load_dataset("sample"), sample_root):
        arrays = images.arrays(e)
        assert arrays is not None
        store = zarr.storage.LocalStore(images.path(e), read_only=True)
        rec = zarr.open_group(store, mode="r").attrs["rat"]
        assert rec["source_sha256"] == e.sha256 and rec["hq_sha256"] == e.hq_sha256
        assert rec["shape"] == list(e.shape)
        for arr, name, reader in zip(arrays, ("lq", "hq"), (read_lq, read_hq), strict=True):
            want, meta = reader(e, sample_root)
            assert arr.dtype == np.dtype(meta.source_dtype)  # int16 HU, uint8 RGB: never squeezed
            assert rec[f"{name}_dtype"] == meta.source_dtype
            np.testing.assert_array_equal(arr[...].astype(np.float32), want)
            assert arr.chunks == (min(256, e.shape[0]), min(256, e.shape[1]), *e.shape[2:])
        if e.group == "ct":
            assert arrays[1].dtype == np.int16
            assert arrays[1][...].min() < -500 and arrays[1][...].max() > 1000  # > 8-bit range kept
        else:
            assert arrays[0].dtype == np.uint8
    assert not any(p.name.startswith(".") for p in filled.rglob("*"))  # no temporary folders left


def test_rerun_skips_and_changed_or_partial_items_are_redone(sample_copy, tmp_path):
    ds = load_dataset("sample")
    entries = load_index(ds, sample_copy)[:3]
    folder = tmp_path / "cache"
    assert {o.status for o in cache_images(entries, sample_copy, folder, progress=False)} == {"done"}
    assert [o.status for o in cache_images(entries, sample_copy, folder, progress=False)] == ["skipped"] * 3
    # a new HQ file: the cache keeps the pixels of the indexed bytes (keyed by their hashes); an image not
    # cached yet is refused against the old index; once the index is refreshed, it is cached under a new key
    hq = sample_copy / entries[0].hq
    hq.write_bytes((sample_copy / entries[1].hq).read_bytes())
    assert cache_images(entries[:1], sample_copy, folder, progress=False)[0].status == "skipped"
    outcomes = cache_images(entries[:1], sample_copy, tmp_path / "other", progress=False)
    assert outcomes[0].status == "failed" and "changed since the index" in outcomes[0].reason
    fresh = {e.id: e for e in ensure_index(ds, sample_copy, progress=False)[0]}
    renewed = [fresh[e.id] for e in entries]
    assert renewed[0].hq_sha256 != entries[0].hq_sha256
    # a cache whose record was never written (killed) does not exist and is redone
    images = ImageCache(folder)
    group = zarr.open_group(zarr.storage.LocalStore(images.path(renewed[2])), mode="a")
    del group.attrs["rat"]
    outcomes = cache_images(renewed, sample_copy, folder, progress=False)
    assert [o.status for o in outcomes] == ["done", "skipped", "done"]
    np.testing.assert_array_equal(images.arrays(renewed[0])[1][...], read_hq(entries[1], sample_copy)[0])


def test_bad_items_are_reported_and_the_rest_cached(sample_copy, tmp_path):
    entries = load_index(load_dataset("sample"), sample_copy)[:3]
    (sample_copy / entries[0].hq).unlink()
    lq = sample_copy / entries[1].lq
    lq.write_bytes(lq.read_bytes() + b"\0")
    outcomes = cache_images(entries, sample_copy, tmp_path / "cache", progress=False)
    assert [o.status for o in outcomes] == ["failed", "failed", "done"]
    assert entries[0].hq in outcomes[0].reason and "file not found" in outcomes[0].reason
    assert entries[1].lq in outcomes[1].reason and "SHA-256" in outcomes[1].reason
    assert ImageCache(tmp_path / "cache").arrays(entries[0]) is None
    text = summarize(outcomes, done="cached", skipped="skipped (already cached)")
    assert "1 cached, 0 skipped (already cached), 2 failed" in text and f"FAILED {entries[1].id}" in text


def _fill(args):
    root, folder, barrier = args
    barrier.wait()  # start together
    entries = load_index(load_dataset("sample"), root)
    return [o.status for o in cache_images(entries, root, folder, progress=False)]


def test_several_processes_fill_one_cache_at_once(sample_root, tmp_path):
    folder = tmp_path / "cache"
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(3)
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            results = pool.map(_fill, [(sample_root, folder, barrier)] * 3)
    assert all(set(r) <= {"done", "skipped"} for r in results)
    images = ImageCache(folder)
    for e in load_index(load_dataset("sample"), sample_root):
        lq, hq = images.arrays(e)
        np.testing.assert_array_equal(hq[...].astype(np.float32), read_hq(e, sample_root)[0])
    assert not any(p.name.startswith(".") for p in folder.rglob("*"))


def test_command_line_with_a_dataset_or_a_store(sample_copy, tmp_path):
    cache = tmp_path / "cache"
    code, text = run("cache", "--dataset", "sample", "--root", sample_copy, "--cache", cache,
                     "--split", "test", "--chunk", "64", "--no-progress")
    assert code == 0 and "4 cached, 0 skipped" in text, text
    tests = [e for e in load_index(load_dataset("sample"), sample_copy) if e.split == "test"]
    e = next(e for e in tests if e.group == "ct")
    assert ImageCache(cache).arrays(e)[0].chunks == (64, 64)
    store = tmp_path / "s.zarr"
    code, text = run("masks", "--dataset", "sample", "--root", sample_copy, "--masks", store, "--generator",
                     "superpixels", "--no-progress")
    assert code == 0, text
    code, text = run("cache", "--masks", store, "--root", sample_copy, "--cache", cache, "--no-progress")
    assert code == 0 and "12 cached, 4 skipped" in text, text  # the store names the dataset and index
    (sample_copy / "ct/hq/ct_01.dcm").unlink()
    code, text = run("cache", "--masks", store, "--root", sample_copy, "--cache", tmp_path / "c2",
                     "--split", "test", "--no-progress")
    assert code == 1 and "FAILED ct_01: " in text and "ct_01.dcm: file not found" in text
    code, text = run("cache", "--cache", cache, "--no-progress")
    assert code == 1 and "--dataset NAME" in text


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
    g = zarr.open_group(zarr.storage.LocalStore(tmp_path / "c.zarr"), mode="w")
    lq = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    hq = np.round(lq * 1000) - 100  # negative: uint16 cannot hold it, int16 is not wider
    rec = write_images(g, lq, hq, "x" * 64, "y" * 64, "uint16", "uint16", chunk=8)
    assert rec["lq_dtype"] == "float32" and rec["hq_dtype"] == "int32"
    np.testing.assert_array_equal(g["lq"][...], lq)
    np.testing.assert_array_equal(g["hq"][...], hq)
    assert g["lq"].chunks == (8, 8)
