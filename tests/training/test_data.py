"""Patch dataset, loader and whole images (rat.training.data)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr

from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.image_cache import ImageCache, cache_images, write_images
from rat.shared.index import Entry, load_index, read_hq, read_lq
from rat.training.data import PatchDataset, load_full, make_loader
from rat.training.normalisation import denormalise

SHAPES = {"a": (70, 90), "b": (64, 40)}  # "b" is narrower than the patch: padded
P = 48


@pytest.fixture(scope="module")
def coords(tmp_path_factory):
    """A store whose LQ, HQ and labels encode pixel coordinates: labels = y * W + x + 1,
    LQ = (y, x, 0) and HQ = (y, x, 1000) per channel (uint16), over two images of different size."""
    group = replace(load_dataset("sample").groups["pathology"], norm_low=0.0, norm_high=1.0, patch_size=P)
    out = tmp_path_factory.mktemp("coords") / "s.zarr"
    g = st.init_store(out, st.make_provenance("coords", {"name": "synthetic"}, {}, chunk=16))
    entries = []
    for name, (h, w) in SHAPES.items():
        y, x = np.mgrid[:h, :w].astype(np.float32)
        sha = f"{name:0>64}"
        st.write_labels(g, name, (y * w + x + 1).astype(np.uint32), sha, chunk=16)
        entry = Entry(name, "pathology", "train", f"{name}_lq.png", f"{name}_hq.png", None, sha, (h, w, 3))
        cached = zarr.open_group(zarr.storage.LocalStore(ImageCache().path(entry)), mode="w")  # local cache
        write_images(cached, np.stack([y, x, 0 * y], -1), np.stack([y, x, 0 * y + 1000], -1), sha, "h" * 64,
                     "uint16", "uint16", chunk=16)
        entries.append(entry)
    return out, entries, group


def test_patches_are_cropped_rotated_and_flipped_together(coords):
    out, entries, group = coords
    ds = PatchDataset(out, entries, group, seed=3)
    seen = set()
    for i in range(40):
        s = ds[i]
        j, top, left, k, flip = ds.draw(i)
        e = entries[j]
        h, w = e.shape[:2]
        assert s["id"] == e.id and s["lq"].shape == (3, P, P) and s["hq"].shape == (3, P, P)
        assert s["lq"].dtype == torch.float32 and s["labels"].dtype == torch.int64
        lab = s["labels"].numpy() - 1
        y, x = lab // w, lab % w
        np.testing.assert_array_equal(s["lq"][0].numpy(), y)  # LQ, HQ and labels share every pixel
        np.testing.assert_array_equal(s["lq"][1].numpy(), x)
        np.testing.assert_array_equal(s["hq"][:2].numpy(), s["lq"][:2].numpy())
        assert (s["hq"][2] == 1000).all() and (s["lq"][2] == 0).all()
        # the expected window (mirrored past the edge of a small image), rotated k times, then flipped
        yy = np.arange(top, top + P)
        xx = np.arange(left, left + P)
        xx = np.where(xx < w, xx, 2 * w - 1 - xx)
        want = np.rot90(yy[:, None] * w + xx[None, :], k)
        np.testing.assert_array_equal(lab, want[:, ::-1] if flip else want)
        assert yy.max() < h and (e.id == "b") == (xx.max() < left + P - 1)
        seen.add((k, flip))
    assert len(seen) == 8  # all rotations and flips occurred


def test_no_augment_gives_the_plain_windows(coords):
    out, entries, group = coords
    ds = PatchDataset(out, entries, group, seed=3, augment=False)
    for i in range(5):
        j, top, left, _, _ = ds.draw(i)
        w = entries[j].shape[1]
        lab = ds[i]["labels"].numpy() - 1
        assert lab[0, 0] == top * w + left and (lab[0, 1] - lab[0, 0]) == 1 and (lab[1, 0] - lab[0, 0]) == w


def test_samples_are_deterministic_in_seed_and_index(coords):
    out, entries, group = coords
    a, b = PatchDataset(out, entries, group, seed=7), PatchDataset(out, entries, group, seed=7)
    for i in (0, 5, 123_456):
        sa, sb = a[i], b[i]
        assert sa["id"] == sb["id"]
        for key in ("lq", "hq", "labels"):
            assert torch.equal(sa[key], sb[key])
    other = PatchDataset(out, entries, group, seed=8)
    assert [a.draw(i) for i in range(10)] != [other.draw(i) for i in range(10)]
    assert len({a.draw(i) for i in range(10)}) == 10
    with pytest.raises(IndexError):
        PatchDataset(out, entries, group, length=4)[4]


def test_loader_with_spawned_workers_equals_in_process_and_resumes(coords):
    out, entries, group = coords
    ds = PatchDataset(out, entries, group, seed=1, length=24)
    assert ds._store is None  # nothing zarr held by the object handed to workers
    plain = list(make_loader(ds, 4, 0))
    spawned = list(make_loader(ds, 4, 2))
    assert len(plain) == len(spawned) == 6
    for x, y in zip(plain, spawned, strict=True):
        assert x["id"] == y["id"] and all(torch.equal(x[k], y[k]) for k in ("lq", "hq", "labels"))
    resumed = list(make_loader(ds, 4, 0, start=12))
    for x, y in zip(plain[3:], resumed, strict=True):
        assert torch.equal(x["labels"], y["labels"])
    ranks = [list(make_loader(ds, 2, 0, start=8, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(ranks[0][0]["labels"], torch.stack([ds[8]["labels"], ds[10]["labels"]]))
    assert torch.equal(ranks[1][0]["labels"], torch.stack([ds[9]["labels"], ds[11]["labels"]]))


def test_only_label_maps_of_the_same_pixels_are_served(coords, tmp_path):
    out, entries, group = coords
    other = tmp_path / "other.zarr"                       # a store whose map of "a" was made from other bytes
    g = st.init_store(other, st.make_provenance("coords", {"name": "synthetic"}, {}, chunk=16))
    st.write_labels(g, "a", np.ones(SHAPES["a"], np.uint32), "f" * 64, chunk=16)
    with pytest.raises(st.StoreError, match="a: label map made from other LQ bytes than the index's a_lq"):
        PatchDataset(other, entries[:1], group)[0]
    with pytest.raises(st.StoreError, match="a: label map made from other LQ bytes"):
        load_full(st.open_store(other), entries[0], None, group)
    with pytest.raises(ValueError, match="no images of group 'ct'"):
        PatchDataset(out, entries, replace(group, name="ct"))
    with pytest.raises(ValueError, match="a: 3 channel"):
        PatchDataset(out, entries, replace(group, channels=1))
    with pytest.raises(ValueError, match="c: not in the image cache, and no data root"):
        PatchDataset(out, [replace(entries[0], id="c", sha256="c" * 64)], group)


def test_sample_store_without_cache_decodes_sources_and_equals_the_cache(sample_root, sample_store, tmp_path):
    ds = load_dataset("sample")
    entries = [e for e in load_index(ds, sample_root) if e.split == "train"]
    ct = ds.groups["ct"]
    empty, cached = tmp_path / "empty", tmp_path / "cache"
    with pytest.raises(ValueError, match="not in the image cache, and no data root"):
        PatchDataset(sample_store, entries, ct, cache=empty)  # no root, no cache: refused
    slow = PatchDataset(sample_store, entries, ct, root=sample_root, seed=2, cache=empty)
    assert len(slow.entries) == 5 and not any(slow.cached)
    assert all(o.status == "done" for o in cache_images(entries, sample_root, cached, progress=False))
    fast = PatchDataset(sample_store, entries, ct, seed=2, cache=cached)
    assert all(fast.cached)
    for i in range(4):
        a, b = slow[i], fast[i]
        assert all(torch.equal(a[k], b[k]) for k in ("lq", "hq", "labels"))
    e = entries[0]
    full_src = load_full(st.open_store(sample_store), e, sample_root, ct, cache=False)
    full_cache = load_full(st.open_store(sample_store), e, None, ct, cache=cached)
    for x, y in zip(full_src, full_cache, strict=True):
        np.testing.assert_array_equal(x, y)
    lq, hq, labels = full_cache
    assert lq.shape == hq.shape == (1, *e.shape) and labels.shape == e.shape and labels.dtype == np.int64
    np.testing.assert_allclose(denormalise(lq, ct)[0], read_lq(e, sample_root)[0], atol=1e-3)
    np.testing.assert_allclose(denormalise(hq, ct)[0], read_hq(e, sample_root)[0], atol=1e-3)
