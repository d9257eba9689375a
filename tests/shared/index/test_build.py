"""Dataset definitions, pairing, splits, derived LQ and the index (rat.shared.index.build, degrade)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import GOOD

from rat.shared import datasets as mf
from rat.shared.datasets import DefinitionError, load_dataset
from rat.shared.datasets.degrade import derive_lq
from rat.shared.index import (
    DataRootError,
    read_hq,
    read_lq,
)
from rat.shared.index import build as manifest
from rat.shared.index.build import build_index
from rat.shared.io import read_image, write_image

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def with_split(ds: mf.DatasetDef, group: str, **changes) -> mf.DatasetDef:
    """ds with some fields of one group's split changed (tiny data cannot hold the paper's 113)."""
    g = ds.groups[group]
    groups = {**ds.groups, group: dataclasses.replace(g, split=dataclasses.replace(g.split,
                                                                                   **changes))}
    return dataclasses.replace(ds, groups=groups)


# ----------------------------------------------------------------------------- definitions


# ----------------------------------------------------------------------------- TMA derive


def tma_root(tmp_path: Path) -> Path:
    root = tmp_path / "tma"
    rng = np.random.default_rng(0)
    for i, ext in enumerate([".tif", ".png", ".png", ".jpg"]):
        write_image(root / "HQ" / f"core{i}{ext}", rng.integers(0, 256, (40, 48, 3)), dtype="uint8")
    return root


def test_tma_derived_lq_written_once_and_equal_to_degrade(tmp_path, monkeypatch):
    root = tma_root(tmp_path)
    ds = with_split(load_dataset("tma"), "tma", test_count=1)
    entries, problems = build_index(ds, root, progress=False)
    assert problems == [] and [e.id for e in entries] == ["core0", "core1", "core2", "core3"]
    for e in entries:
        assert e.lq == f".rat/derived/tma/{e.hq}".replace(".jpg", ".png")  # JPEG: lossless PNG
        assert e.shape == (40, 48, 3)
        hq, meta = read_hq(e, root)
        lq, lq_meta = read_lq(e, root)
        assert lq_meta.format == meta.format.replace("jpeg", "png")
        assert lq_meta.source_dtype == "uint8"
        np.testing.assert_array_equal(lq, derive_lq(hq, "bicubic_x4", "uint8"))
    assert [e.split for e in entries].count("test") == 1

    written = []
    real_write = write_image
    def counting_write(path, *args, **kwargs):
        written.append(path)
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(manifest, "write_image", counting_write)
    again, _ = build_index(ds, root, progress=False)
    assert again == entries and written == []  # up to date: nothing derived again
    write_image(root / "HQ" / "core1.png", np.zeros((40, 48, 3)), dtype="uint8")  # HQ changed
    third, _ = build_index(ds, root, progress=False)
    assert [Path(p).name for p in written] == ["core1.png"]
    changed = {e.id: e.sha256 for e in third}
    assert changed["core1"] != entries[1].sha256 and changed["core0"] == entries[0].sha256


def test_seeded_split_too_big_for_the_data_is_a_clear_error(tmp_path):
    with pytest.raises(DefinitionError, match=r"tma.toml: groups.tma.split.test_count: 113"):
        build_index(load_dataset("tma"), tma_root(tmp_path), progress=False)


# ----------------------------------------------------------------------------- AAPM-like layout


def test_aapm_layout_pairs_by_patient_and_slice_and_splits_by_patient(tmp_path):
    root = tmp_path / "aapm"
    for patient in ("L067", "L096", "L333", "L506", "L999"):
        for n in (1, 2):
            # the challenge's names: series and time stamps differ between doses
            fd = root / patient / "full_1mm" / f"{patient}_FD_1_1.CT.0001.{n:04d}.2015.{n}.IMA"
            qd = root / patient / "quarter_1mm" / f"{patient}_QD_1_1.CT.0004.{n:04d}.2016.{n}.IMA"
            for f in (fd, qd):
                f.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(CT_SMALL, f)
    next((root / "L096" / "quarter_1mm").glob("*.0002.*")).unlink()
    entries, problems = build_index(load_dataset("aapm"), root, progress=False)
    splits = {e.id: e.split for e in entries}
    assert splits == {"L067_0001": "train", "L067_0002": "train", "L096_0001": "train",
                      "L333_0001": "val", "L333_0002": "val", "L506_0001": "test", "L506_0002": "test"}
    assert all(e.shape == (128, 128) and e.lq.startswith(e.id[:4] + "/quarter_1mm/")
               for e in entries)
    assert [p.path.split("/")[0] for p in problems] == ["L096", "L999", "L999"]
    assert problems[0].reason == (
        "no LQ file pairs with it (e.g. L096/quarter_1mm/*.CT.*.0002.*.IMA)")
    assert problems[1].reason == (
        "patient 'L999' is in no split list (test, val, train) of the definition")
    hu, meta = read_lq(entries[0], root)
    assert meta.modality == "CT" and hu.min() < -800  # HU through the rescale tags


# ----------------------------------------------------------------------------- PET-like volumes

PET_DEF = """
name = "petlike"
description = "two tiny volumes per patient"
[groups.pet]
modality = "PET"
channels = 1
hq = ["{patient}/hq.nii.gz"]
lq = ["{patient}/lq.nii.gz"]
norm_low = 0
norm_high = 20
sam_window = { kind = "percentile", low = 0.5, high = 99.5 }
patch_size = 192
volume = { slice_axis = 1, air_threshold = 0.05 }
split = { rule = "seeded", unit = "patient", seed = 0, test_count = 1 }
"""

def test_pet_volumes_give_one_entry_per_non_air_slice(tmp_path):
    root = tmp_path / "pet"
    rng = np.random.default_rng(0)
    for patient in ("P001", "P002"):
        hq = rng.uniform(0.5, 5.0, (6, 5, 4)).astype(np.float32)
        hq[:, [0, 4], :] = 0.01  # slices 0 and 4 along axis 1 are air (below 0.05)
        lq = hq + rng.normal(0, 0.1, hq.shape).astype(np.float32)
        (root / patient).mkdir(parents=True)
        nib.save(nib.Nifti1Image(hq, np.eye(4)), root / patient / "hq.nii.gz")
        nib.save(nib.Nifti1Image(lq, np.eye(4)), root / patient / "lq.nii.gz")
    definition = tmp_path / "petlike.toml"
    definition.write_text(PET_DEF)
    ds = load_dataset(definition)  # a user definition from a path
    assert ds.name == "petlike" and ds.source == definition.resolve()
    entries, problems = build_index(ds, root, progress=False)
    assert problems == []
    assert [e.id for e in entries] == [f"{p}_{k:04d}" for p in ("P001", "P002") for k in (1, 2, 3)]
    assert {e.shape for e in entries} == {(6, 4)} and {e.axis for e in entries} == {1}
    assert sorted({e.id[:4]: e.split for e in entries}.values()) == ["test", "train"]
    e = entries[1]
    lq, _ = read_lq(e, root)
    want = np.asarray(nib.load(root / "P001" / "lq.nii.gz").dataobj)[:, 2, :]
    np.testing.assert_allclose(lq, want, rtol=1e-6)


# ----------------------------------------------------------------------------- index files


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(DataRootError, match="nowhere: data root is not a directory"):
        build_index(load_dataset("sample"), tmp_path / "nowhere", progress=False)


def test_read_image_of_ct_lq_matches_template_tags(tmp_path):
    """An HQ and an LQ in different formats still pair; a channel mismatch is a problem."""
    root = tmp_path / "r"
    hu, _ = read_image(CT_SMALL)
    write_image(root / "hq" / "x.dcm", hu, like=CT_SMALL)
    write_image(root / "lq" / "x.tif", hu, dtype="float32")
    write_image(root / "hq" / "y.dcm", hu, like=CT_SMALL)
    write_image(root / "lq" / "y.png", np.stack([hu * 0 + 1] * 3, -1), dtype="uint8")
    definition = tmp_path / "d.toml"
    definition.write_text(GOOD.replace('["lq/{id}.dcm"]', '["lq/{id}.tif", "lq/{id}.png"]'))
    entries, problems = build_index(load_dataset(definition), root, progress=False)
    assert [e.lq for e in entries] == ["lq/x.tif"]
    assert [(p.path, p.reason) for p in problems] == [
        ("lq/y.png", "has 3 channel(s), group 'g' expects 1")]


def test_derive_from_dicom_hq_writes_dicom_with_the_hq_tags(tmp_path):
    root = tmp_path / "r"
    hu, _ = read_image(CT_SMALL)
    write_image(root / "hq" / "s1.dcm", hu, like=CT_SMALL)
    definition = tmp_path / "d.toml"
    definition.write_text(GOOD.replace('lq = ["lq/{id}.dcm"]', 'derive_lq = "bicubic_x4"'))
    (entry,), problems = build_index(load_dataset(definition), root, progress=False)
    assert problems == [] and entry.lq == ".rat/derived/mine/hq/s1.dcm"
    lq, meta = read_lq(entry, root)
    assert meta.format == "dicom" and meta.modality == "CT"
    np.testing.assert_array_equal(lq, derive_lq(hu, "bicubic_x4", "int16"))  # slope 1: exact
