"""The design card's commands as written, and a label store as the one thing team members hand over:
data roots, the automatic index, store schema 2 (definition, index, root), checks of a colleague's files,
label bytes verified before training, schema-1 stores, NIfTI export."""

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from helpers import builtin_variant, tiny_train_args, write_schema1_store

from rat.precompute.cli import main as pre
from rat.precompute.runner import compute_labels
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import hash_cache as hashes
from rat.shared.index import load_index
from rat.shared.index.build import ensure_index
from rat.shared.index.locate import DataRootError, resolve_root
from rat.shared.regions import build_generator
from rat.shared.store.checks import source_problems
from rat.shared.store.dataset import store_definition, store_index
from rat.training.cli import main as train

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = tiny_train_args()


def run(cli, *args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def raw_copy(root: Path, to: Path) -> Path:
    """The dataset's own files only: no index, no derived images (what a colleague has)."""
    return Path(shutil.copytree(root, to, ignore=shutil.ignore_patterns(".rat")))


@pytest.fixture
def alice(sample_root, tmp_path, monkeypatch) -> Path:
    """Alice's machine: RAT_DATA_ROOT=<tmp>/alice holding sample/, her store made as the design card says."""
    raw_copy(sample_root, tmp_path / "alice" / "sample")
    monkeypatch.setenv("RAT_DATA_ROOT", str(tmp_path / "alice"))
    monkeypatch.chdir(tmp_path)
    code, text = run(pre, "masks", "--dataset", "sample", "--generator", "superpixels", "--no-progress")
    assert code == 0, text
    assert f"store: {tmp_path / 'sample.zarr'}" in text
    assert "next:  rat-train --masks sample.zarr --group ct --out runs/sample   (groups: ct, pathology)" \
        in text
    return tmp_path / "sample.zarr"


def test_the_design_card_commands_with_only_rat_data_root(alice, tmp_path):
    code, text = run(train, "--masks", alice, "--group", "ct", "--out", tmp_path / "run", *TINY)
    assert code == 0, text
    assert "done: 2 steps" in text
    code, text = run(train, "--masks", alice, "--out", tmp_path / "run2", *TINY)
    assert code == 1 and "dataset sample has several groups (ct, pathology): pass --group" in text
    g = st.open_store(alice)
    assert store_definition(g).text == load_dataset("sample").text
    assert store_index(g) == load_index(load_dataset("sample"), tmp_path / "alice" / "sample")
    assert st.provenance(g)["root"] == str((tmp_path / "alice" / "sample").resolve())


def test_a_colleague_trains_from_the_store_alone(alice, tmp_path, monkeypatch):
    code, text = run(pre, "export", alice, "--zip", tmp_path / "hand.zip")
    assert code == 0, text
    bob = raw_copy(tmp_path / "alice" / "sample", tmp_path / "bob" / "sample")
    shutil.rmtree(tmp_path / "alice")                  # the recorded root does not exist on Bob's machine
    monkeypatch.setenv("RAT_DATA_ROOT", str(tmp_path / "bob"))
    code, text = run(train, "--masks", tmp_path / "hand.zip", "--group", "pathology",
                     "--out", tmp_path / "r", *TINY)
    assert code == 0, text                            # derived LQ (bicubic x4) re-derived from Bob's HQ files
    derived = [p for p in (bob / ".rat" / "derived").rglob("*") if p.suffix in (".png", ".tif")]
    assert len(derived) == 6                           # the 5 training images and the 1 validated
    hq = bob / "pathology" / "hq" / "ihc_03.png"
    hq.write_bytes(hq.read_bytes() + b"\0")            # a changed HQ file (same pixels, other bytes)
    code, text = run(train, "--masks", tmp_path / "hand.zip", "--group", "pathology",
                     "--out", tmp_path / "r2", *TINY)
    assert code == 1 and "ihc_03: HQ file" in text and "differs from the one the store was made with" in text
    assert not (tmp_path / "r2" / "last.pt").exists()


def test_no_root_anywhere_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("RAT_DATA_ROOT", raising=False)
    with pytest.raises(DataRootError) as err:
        resolve_root(load_dataset("tma"))
    text = str(err.value)
    assert "no data root for dataset tma" in text and "`root`" in text and "RAT_DATA_ROOT" in text
    assert "root = " in text and "\n" not in text
    code, text = run(pre, "masks", "--dataset", "tma", "--generator", "superpixels")
    assert code == 1 and "pass --root DIR" in text


def test_data_root_from_argument_environment_definition_or_store(tmp_path, monkeypatch):
    for d in ("arg", "env/sample", "def", "recorded"):
        (tmp_path / d).mkdir(parents=True)
    definition = tmp_path / "mine.toml"
    definition.write_text('root = "def"\n' + load_dataset("sample").source.read_text())
    ds = load_dataset(definition)
    assert ds.root == tmp_path / "def"                 # relative to the definition's folder
    monkeypatch.setenv("RAT_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_root(ds, tmp_path / "arg") == tmp_path / "arg"
    assert resolve_root(ds) == tmp_path / "env" / "sample"
    monkeypatch.setenv("RAT_DATA_ROOT", str(tmp_path / "nowhere"))
    assert resolve_root(ds) == tmp_path / "def"
    plain = load_dataset("sample")
    assert resolve_root(plain, recorded=str(tmp_path / "recorded")) == tmp_path / "recorded"
    with pytest.raises(DataRootError, match=r"RAT_DATA_ROOT/sample = .*nowhere.*not exist.*store's root"):
        resolve_root(plain, recorded=str(tmp_path / "gone"))


def test_the_index_rehashes_only_what_changed(sample_root, tmp_path, monkeypatch):
    root = raw_copy(sample_root, tmp_path / "data")
    ds = load_dataset("sample")
    hashed = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    first, problems = ensure_index(ds, root, progress=False)
    assert len(first) == 16 and not problems and len(hashed) >= 24  # 16 HQ + 8 LQ files + 8 derived
    hashed.clear()
    assert ensure_index(ds, root, progress=False)[0] == first and hashed == []  # nothing changed: no reads
    lq = root / "ct" / "lq" / "ct_02.dcm"
    lq.write_bytes(lq.read_bytes()[:-2] + b"\1\0")       # one file changed
    again, _ = ensure_index(ds, root, progress=False)
    assert hashed == ["ct_02.dcm"]
    changed = [a.id for a, b in zip(first, again, strict=True) if a != b]
    assert changed == ["ct_02"]
    hashed.clear()
    assert not source_problems(ds, again, root) and hashed == []  # the trainer's check: cached hashes


def test_re_derived_lq_that_differs_names_the_images_and_versions(sample_root, tmp_path, monkeypatch):
    root = raw_copy(sample_root, tmp_path / "data")
    ds = load_dataset("sample")
    entries = [e for e in ensure_index(ds, root, progress=False)[0] if e.group == "pathology"][:2]
    shutil.rmtree(root / ".rat" / "derived")          # a colleague without the derived files
    from rat.shared.datasets import degrade

    monkeypatch.setitem(degrade.DERIVE_METHODS, "bicubic_x4", lambda hq: degrade.bicubic_down_up(hq) + 3)
    recorded = [{"Pillow": "0.0-recorded", "numpy": "0.0-recorded"}]
    problems = source_problems(ds, entries, root, recorded)
    assert [p.split(":")[0] for p in problems] == [e.id for e in entries]
    assert "LQ derived here (bicubic_x4) differs from the store's: derived with Pillow 0.0-recorded" \
        in problems[0]
    import PIL

    assert f"Pillow {PIL.__version__}, numpy {np.__version__} here" in problems[0]


def test_a_swapped_label_chunk_is_caught_by_image_id(alice, tmp_path):
    store = Path(shutil.copytree(alice, tmp_path / "swapped.zarr"))
    first, second = sorted(e.id for e in store_index(st.open_store(store)) if e.group == "ct" and
                           e.split == "train")[:2]
    a, b = (store / "labels" / k / "0" / "c" / "0" / "0" for k in (first, second))
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    code, text = run(train, "--masks", store, "--group", "ct", "--out", tmp_path / "r", *TINY)
    assert code == 1
    assert f"{first}: label bytes do not match their recorded SHA-256" in text
    assert f"{second}: label bytes do not match their recorded SHA-256" in text
    code, text = run(pre, "verify", store)
    assert code == 1 and "2 of 16 images have problems" in text


def _schema1(sample_root, url):
    ds = load_dataset("sample")
    gen = build_generator("superpixels")
    labels = {e.id: (compute_labels(e, sample_root, ds, gen)[0], e.sha256)
              for e in load_index(ds, sample_root)}
    from rat.shared.regions.window import sam_windows

    return write_schema1_store(url, "sample", labels, gen.provenance(), sam_windows(ds)), labels


def test_a_schema_1_store_trains_and_upgrades_in_place(sample_root, tmp_path, monkeypatch):
    url, labels = _schema1(sample_root, tmp_path / "v1.zarr")
    code, text = run(train, "--masks", url, "--group", "ct", "--out", tmp_path / "r1", *TINY)
    assert code == 1 and "schema-1 store, which does not carry its dataset" in text
    code, text = run(train, "--masks", url, "--dataset", "sample", "--root", sample_root, "--group", "ct",
                     "--out", tmp_path / "r1", *TINY)
    assert code == 0, text
    code, text = run(pre, "info", url)
    assert "upgrade it in place with `rat-precompute upgrade" in text
    code, text = run(pre, "masks", "--dataset", "sample", "--root", sample_root, "--masks", url,
                     "--generator", "superpixels", "--no-progress")
    assert code == 1 and "schema-1 store" in text
    code, text = run(pre, "upgrade", url, "--dataset", "sample", "--root", sample_root, "--no-progress")
    assert code == 0 and "16 label maps converted" in text, text
    g = st.open_store(url)
    assert st.provenance(g)["schema"] == 2 and len(store_index(g)) == 16
    for image_id, (lab, _) in labels.items():
        np.testing.assert_array_equal(st.read_labels(g, image_id), lab)
    monkeypatch.setenv("RAT_DATA_ROOT", str(sample_root.parent))  # the root is <tmp>/data, not .../sample
    code, text = run(train, "--masks", url, "--group", "ct", "--out", tmp_path / "r2", *TINY)
    assert code == 0, text                             # the store's recorded root exists here


def test_upgrade_leaves_out_changed_label_maps(sample_root, tmp_path):
    url, _ = _schema1(sample_root, tmp_path / "v1.zarr")
    import zarr

    arr = zarr.open_array(zarr.storage.LocalStore(url / "labels" / "ct_04"), mode="r+")
    arr[0, 0] = arr[0, 0] + 1                         # bytes no longer those recorded
    code, text = run(pre, "upgrade", url, "--dataset", "sample", "--root", sample_root, "--no-progress")
    assert "15 label maps converted" in text and "FAILED ct_04: label bytes do not match" in text
    g = st.open_store(url)
    assert st.record(g, "ct_04") is None and st.record(g, "ct_05") is not None


def test_nifti_export_keeps_the_dicom_geometry(alice, tmp_path):
    out = tmp_path / "nifti"
    code, text = run(pre, "export", alice, "--nifti", out, "--no-progress")
    assert code == 0 and "16 written" in text, text
    root = tmp_path / "alice" / "sample"
    g = st.open_store(alice)
    img = nib.load(out / "ct_01.nii.gz")
    labels = st.read_labels(g, "ct_01")
    data = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.uint16 and img.shape == (128, 128, 1)  # a volume of one slice
    np.testing.assert_array_equal(data[:, :, 0].T, labels)  # ITK's (column, row) order
    ds = pydicom.dcmread(root / "ct" / "lq" / "ct_01.dcm")
    ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    for row, col in ((0, 0), (5, 17), (100, 3)):      # the standard's place of pixel (row, col), IPP included
        lps = ipp + col * dc * iop[:3] + row * dr * iop[3:]
        ras = img.affine @ np.array([col, row, 0, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)


def test_nifti_export_reassembles_volumes(tmp_path, monkeypatch):
    root = tmp_path / "pet"
    rng = np.random.default_rng(0)
    affine = np.array([[-2.0, 0, 0, 90], [0, 2.5, 0, -100], [0, 0, 3, -50], [0, 0, 0, 1]])
    for patient in ("P1", "P2"):
        hq = rng.random((20, 6, 16)).astype(np.float32) * 5
        hq[:, 0] = 0                                   # an air-only slice along axis 1: left out
        (root / patient).mkdir(parents=True)
        for name, vol in (("hq", hq), ("lq", hq + rng.random(hq.shape).astype(np.float32))):
            nib.save(nib.Nifti1Image(vol, affine), root / patient / f"{name}.nii.gz")
    definition = builtin_variant(tmp_path, "pet", "test_count = 25", "test_count = 1")
    monkeypatch.chdir(tmp_path)
    code, out = run(pre, "masks", "--dataset", definition, "--root", root, "--generator", "superpixels",
                    "--sp-n-segments", "4", "--no-progress")
    assert code == 0 and "10 done" in out, out          # 2 patients x 5 slices that hold more than air
    code, out = run(pre, "export", "pet.zarr", "--nifti", tmp_path / "nii", "--no-progress")
    assert code == 0 and "2 written" in out, out
    g = st.open_store(tmp_path / "pet.zarr")
    img = nib.load(tmp_path / "nii" / "P1.nii.gz")
    np.testing.assert_allclose(img.affine, affine)
    vol = np.asarray(img.dataobj)
    assert vol.shape == (20, 6, 16) and not vol[:, 0].any()
    for k in range(1, 6):
        np.testing.assert_array_equal(vol[:, k, :], st.read_labels(g, f"P1_{k:04d}"))
    assert os.path.exists(tmp_path / "nii" / "P2.nii.gz")
