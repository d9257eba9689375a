"""Dataset definitions, pairing, splits, derived LQ and the index (rat.shared.index.build, degrade)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import CT_SMALL, EIGHT_BIT, GOOD, PET_DEF

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


# ----------------------------------------------------------------------------- values and channels




def slides(tmp_path: Path, extra: str = "") -> tuple[mf.DatasetDef, Path]:
    """Three 8-bit RGB pairs and one whose LQ is a 16-bit TIFF with values up to 59,976."""
    root = tmp_path / "slides"
    rng = np.random.default_rng(0)
    for i in range(3):
        for kind in ("hq", "lq"):
            write_image(root / kind / f"s{i}.png", rng.integers(0, 256, (20, 24, 3)), dtype="uint8")
    write_image(root / "hq" / "s3.png", rng.integers(0, 256, (20, 24, 3)), dtype="uint8")
    wide = rng.integers(0, 256, (20, 24, 3)).astype(np.uint16) * 235   # 0..59,925
    wide[0, 0, 0] = 59_976
    write_image(root / "lq" / "s3.tif", wide, dtype="uint16")
    (tmp_path / "slides.toml").write_text(EIGHT_BIT + extra)
    return load_dataset(tmp_path / "slides.toml"), root


def test_a_16_bit_image_in_an_8_bit_group_is_left_out_naming_its_values(tmp_path):
    """The group's declared range (0..255: its images are 8-bit, SAM sees them as they are) is checked at
    indexing: a 16-bit TIFF is named with its values and the group's range, the others indexed."""
    ds, root = slides(tmp_path)
    entries, problems = build_index(ds, root, progress=False)
    assert sorted(e.id for e in entries) == ["s0", "s1", "s2"]
    assert [(p.path, p.reason) for p in problems] == [(
        "lq/s3.tif", "values 0..59976 outside group 'g''s range 0..255 (a 16-bit image in an 8-bit group?); "
        "set the group's value_range, or clip_values = true to clip them on purpose")]


def test_clip_values_indexes_the_image_and_training_units_are_clipped(tmp_path):
    from rat.training.normalisation import normalise

    ds, root = slides(tmp_path, "clip_values = true\n")
    entries, problems = build_index(ds, root, progress=False)
    assert problems == [] and sorted(e.id for e in entries) == ["s0", "s1", "s2", "s3"]
    image = read_lq(next(e for e in entries if e.id == "s3"), root)[0]
    units = normalise(image, ds.groups["g"])
    np.testing.assert_allclose(units, np.minimum(image, 255) / 255, rtol=1e-6)
    assert image.max() == 59_976 and units.max() == 1.0


def test_value_range_bounds_any_group(tmp_path):
    """A CT group declares no range by default (padding and metal are real); value_range sets one."""
    assert load_dataset("aapm").groups["ct"].declared_range is None
    assert load_dataset("tma").groups["tma"].declared_range == (0.0, 255.0)
    ds, root = slides(tmp_path, "value_range = [0, 65535]\n")
    entries, problems = build_index(ds, root, progress=False)
    assert problems == [] and len(entries) == 4


def test_an_rgba_image_is_named_with_the_channels_its_file_holds(tmp_path):
    """RGBA is read as RGB (alpha dropped); a 1-channel group's refusal says 4 channels (RGBA), not 3."""
    from PIL import Image

    root = tmp_path / "gray"
    rng = np.random.default_rng(0)
    for kind in ("hq", "lq"):
        write_image(root / kind / "a.png", rng.integers(0, 256, (20, 24)), dtype="uint8")
        write_image(root / kind / "b.png", rng.integers(0, 256, (20, 24)), dtype="uint8")
    Image.fromarray(rng.integers(0, 256, (20, 24, 4)).astype(np.uint8), "RGBA").save(root / "lq" / "c.png")
    write_image(root / "hq" / "c.png", rng.integers(0, 256, (20, 24)), dtype="uint8")
    text = EIGHT_BIT.replace("channels = 3", "channels = 1").replace(".tif", ".tiff")
    (tmp_path / "gray.toml").write_text(text)
    ds = load_dataset(tmp_path / "gray.toml")
    entries, problems = build_index(ds, root, progress=False)
    assert sorted(e.id for e in entries) == ["a", "b"]
    assert [(p.path, p.reason) for p in problems] == [
        ("lq/c.png", "has 4 channels (RGBA, read as 3), group 'g' expects 1")]
