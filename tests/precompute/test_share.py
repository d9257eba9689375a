"""`export` to one zip file and `merge` of stores: raw bytes copied, refusals, readers read-only."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import store_files, tiny_train_args

from rat.precompute.cli import main
from rat.precompute.runner import run_masks
from rat.precompute.share import export_zip, merge_stores
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.image_cache import write_images
from rat.shared.index import load_index, read_hq, read_lq
from rat.shared.regions import build_generator
from rat.shared.regions.window import sam_windows
from rat.shared.store.dataset import store_definition, store_index
from rat.shared.store.legacy import image_items
from rat.training.cli import main as train_main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def files(root: Path) -> dict[str, bytes]:
    return store_files(root)


@pytest.fixture(scope="module")
def stores(sample_root, tmp_path_factory):
    """A whole superpixel store of the sample dataset and two shard stores of it (made once)."""
    ds = load_dataset("sample")
    entries = load_index(ds, sample_root)
    base = tmp_path_factory.mktemp("stores")
    gen = build_generator("superpixels", n_segments=16)
    for name, part in (("full", entries), ("a", entries[0::2]), ("b", entries[1::2])):
        run_masks(ds, part, sample_root, base / f"{name}.zarr", gen, progress=False, index=entries)
    return base


def test_export_zip_is_a_read_only_store_that_verify_reads(stores, sample_root, tmp_path):
    full = tmp_path / "full.zarr"
    shutil.copytree(stores / "full.zarr", full)
    ds = load_dataset("sample")
    entry = load_index(ds, sample_root)[0]
    g = st.open_store(full, mode="a")
    lq, hq = read_lq(entry, sample_root)[0], read_hq(entry, sample_root)[0]   # a cache as schema 1 kept it
    write_images(g.require_group(f"images/{entry.id}"), lq, hq, entry.sha256, entry.hq_sha256, "uint8",
                 "uint8")
    g.create_group("labels/half_done").create_array("0", shape=(4, 4), dtype="uint16")  # no record
    before = files(full)
    out = tmp_path / "hand" / "over.zip"
    code, text = run("export", full, "--zip", out)
    assert code == 0, text
    assert "16 label maps, 0 image caches; left out 1 incomplete: half_done" in text
    assert files(full) == before                                           # the source is untouched
    before = {rel: (full / rel).read_bytes() for rel in before}            # raw, root record included
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        for rel, data in before.items():                                   # raw bytes, not recomputed
            if not rel.startswith(("labels/half_done", "images/", "records-")):  # records: a local cache
                assert zf.read(rel) == data, rel
    assert not any(n.startswith(("labels/half_done", "images/")) for n in names)  # images only if asked
    assert not list(out.parent.glob("*.partial"))
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text
    z = st.open_store(out)
    assert np.array_equal(st.read_labels(z, entry.id), st.read_labels(g, entry.id))
    assert store_index(z) == load_index(ds, sample_root) and store_definition(z).text == ds.text
    code, text = run("verify", out, "--root", sample_root)            # the zip alone names the dataset
    assert code == 0 and "ok: 16 label maps" in text, text
    with_images = tmp_path / "with_images.zip"
    code, text = run("export", full, "--zip", with_images, "--with-images")
    assert code == 0 and "16 label maps, 1 image caches" in text
    assert image_items(st.open_store(with_images)) == image_items(g) and len(image_items(g)) == 1
    with pytest.raises(st.StoreError, match="zip stores are read-only"):
        st.open_store(out, mode="a")
    with pytest.raises(ValueError, match="read-only"):
        z["labels"].create_array("x", shape=(2, 2), dtype="uint8")
    code, text = run("export", full, "--zip", out)
    assert code != 0 and "exists; pass --overwrite" in text
    assert run("export", full, "--zip", out, "--overwrite")[0] == 0
    code, text = run("export", full, "--zip", tmp_path / "over.tar")
    assert code != 0 and "name the file *.zip" in text


def test_merge_of_shards_equals_the_whole_store(stores, sample_root, tmp_path):
    a_before, b_before = files(stores / "a.zarr"), files(stores / "b.zarr")
    out = tmp_path / "m.zarr"
    code, text = run("merge", stores / "a.zarr", stores / "b.zarr", "--out", out)
    assert code == 0, text
    assert "16 label maps" in text
    assert files(out) == files(stores / "full.zarr")                  # byte for byte, root record too
    assert files(stores / "a.zarr") == a_before and files(stores / "b.zarr") == b_before
    code, text = run("verify", out, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text


def test_merge_into_an_existing_store_and_from_a_zip(stores, tmp_path):
    out = tmp_path / "m.zarr"
    shutil.copytree(stores / "a.zarr", out)
    export_zip(stores / "full.zarr", tmp_path / "full.zip")
    report = merge_stores([tmp_path / "full.zip", stores / "b.zarr"], out)
    assert (report.label_maps, report.duplicates) == (8, 16)            # a's 8 were there; b's 8 twice
    assert files(out) == files(stores / "full.zarr")


def _fake_store(url, generator, labels, image_id="ct_00"):
    ds = load_dataset("sample")
    g = st.init_store(url, st.make_provenance("sample", generator, sam_windows(ds)))
    st.write_labels(g, image_id, labels, "f" * 64)
    return url


SAM = {"name": "sam", "params": {"points_per_side": 32}, "model_type": "vit_b", "checkpoint_sha256": "a" * 64}


@pytest.mark.parametrize(("other", "named"), [
    ({**SAM, "checkpoint_sha256": "b" * 64}, "generator.checkpoint_sha256: 'aaaa"),
    ({**SAM, "params": {"points_per_side": 16}}, "generator.params.points_per_side: 32 -> 16"),
    ({"name": "superpixels", "params": {"points_per_side": 32}}, "generator.name: 'sam' -> 'superpixels'"),
])
def test_merge_refuses_other_configurations(tmp_path, other, named):
    lab = np.ones((4, 4), np.uint16)
    a = _fake_store(tmp_path / "a.zarr", SAM, lab)
    b = _fake_store(tmp_path / "b.zarr", other, lab, image_id="ct_01")
    code, text = run("merge", a, b, "--out", tmp_path / "m.zarr")
    assert code != 0
    assert f"{b}: made with another configuration than {a}" in text and named in text
    assert "nothing merged" in text and not (tmp_path / "m.zarr").exists()
    code, text = run("merge", b, "--out", a)                            # nor into a store of another kind
    assert code != 0 and named.split(":")[0] in text


def test_merge_refuses_duplicates_with_other_content_naming_them(tmp_path):
    lab = np.arange(16, dtype=np.uint16).reshape(4, 4) % 3
    a = _fake_store(tmp_path / "a.zarr", SAM, lab)
    b = _fake_store(tmp_path / "b.zarr", SAM, lab)                      # same image, same bytes: fine
    c = _fake_store(tmp_path / "c.zarr", SAM, lab[::-1].copy())         # same image, other bytes
    report = merge_stores([a, b], tmp_path / "ab.zarr")
    assert (report.label_maps, report.duplicates) == (1, 1)
    code, text = run("merge", a, b, c, "--out", tmp_path / "m.zarr")
    assert code != 0
    assert f"1 image(s) differ between the stores: ct_00 (labels: {a} vs {c}); nothing merged" in text
    assert not (tmp_path / "m.zarr").exists()


@pytest.mark.usefixtures("one_thread")
def test_training_reads_an_exported_zip(stores, sample_root, tmp_path):
    z = tmp_path / "hand.zip"
    export_zip(stores / "full.zarr", z)
    before = z.read_bytes()
    result = CliRunner().invoke(train_main, [str(a) for a in (
        "--masks", z, "--dataset", "sample", "--root", sample_root, "--group", "pathology",
        "--out", tmp_path / "run", *tiny_train_args(workers=1))])
    assert result.exit_code == 0, result.output
    assert "done: 2 steps" in result.output
    assert z.read_bytes() == before

