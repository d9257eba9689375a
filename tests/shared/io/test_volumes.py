"""NIfTI writing (rat.shared.io.write_nifti): round trips through nibabel and our own readers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import CT_SMALL

from rat.shared.io import (
    ImageReadError,
    image_affine,
    read_image,
    read_volume,
    volume_affine,
    write_nifti,
)

AFFINE = np.array(
    [[0.0, -0.8, 0.1, 12.5], [-0.6, 0.0, 0.0, -40.0], [0.0, 0.05, 2.5, 7.25], [0, 0, 0, 1]]
)


def _ct_like(path: Path, *, unit: str = "mm", codes=(1, 2)) -> nib.Nifti1Image:
    """An int16 CT-like volume stored with scl_slope 0.5, scl_inter -1000."""
    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.integers(-300, 3000, (7, 6, 5)).astype(np.int16), None)
    img.set_qform(AFFINE, code=codes[0])
    img.set_sform(AFFINE, code=codes[1])
    img.header.set_xyzt_units(unit, "msec")
    img.header.set_slope_inter(0.5, -1000.0)
    nib.save(img, path)
    return nib.load(path)


def test_restored_volume_keeps_source_type_scaling_affine_units_and_codes(tmp_path):
    like = _ct_like(tmp_path / "ct.nii.gz")
    source, _ = read_volume(tmp_path / "ct.nii.gz")
    restored = source + np.float32(0.3)  # off the 0.5 grid: rounded to the stored type
    write_nifti(tmp_path / "out.nii.gz", restored, like=tmp_path / "ct.nii.gz")
    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == like.shape and out.get_data_dtype() == np.int16
    assert (out.dataobj.slope, out.dataobj.inter) == (0.5, -1000.0)
    assert out.header.get_xyzt_units() == ("mm", "msec")
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(out.affine, like.affine, atol=1e-6)
    back, meta = read_volume(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back, restored, atol=0.25 + 1e-4)
    assert meta.source_dtype == "int16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    # values beyond int16 under that scaling: float32 instead of clipping
    write_nifti(tmp_path / "hot.nii", restored + 20000, like=tmp_path / "ct.nii.gz")
    hot = nib.load(tmp_path / "hot.nii")
    assert hot.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(hot.dataobj), restored + 20000)


def test_units_of_the_template_are_kept_and_the_affine_stays_in_mm(tmp_path):
    _ct_like(tmp_path / "m.nii", unit="meter")
    values, _ = read_volume(tmp_path / "m.nii")
    write_nifti(tmp_path / "out.nii", values, volume_affine(tmp_path / "m.nii"), like=tmp_path / "m.nii")
    out = nib.load(tmp_path / "out.nii")
    assert out.header.get_xyzt_units()[0] == "meter"
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-6)  # stored in metres, as the source
    np.testing.assert_allclose(volume_affine(tmp_path / "out.nii"), volume_affine(tmp_path / "m.nii"))
    # a template without qform/sform codes would lose the affine: the defaults take over
    _ct_like(tmp_path / "bare.nii", codes=(0, 0))
    write_nifti(tmp_path / "coded.nii", values, AFFINE, like=tmp_path / "bare.nii")
    coded = nib.load(tmp_path / "coded.nii")
    assert (int(coded.header["qform_code"]), int(coded.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(coded.affine, AFFINE, atol=1e-6)


def test_label_maps_are_uint16_or_uint32_with_label_intent(tmp_path):
    labels = np.zeros((128, 128), dtype=np.int64)
    labels[10:40, 20:90] = 3
    labels[50:, :] = 700
    affine = image_affine(CT_SMALL)
    write_nifti(tmp_path / "labels.nii.gz", labels, affine, like=None)
    img = nib.load(tmp_path / "labels.nii.gz")
    assert img.get_data_dtype() == np.uint16 and img.shape == (128, 128)
    assert img.header.get_intent()[0] == "label"
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    back, meta = read_image(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(back, labels)
    assert meta.source_dtype == "uint16"
    big = labels.astype(np.uint32)
    big[0, 0] = 70000
    write_nifti(tmp_path / "big.nii", big[:, :, None], affine)
    assert nib.load(tmp_path / "big.nii").get_data_dtype() == np.uint32
    write_nifti(tmp_path / "mask.nii", labels > 0, affine, like=tmp_path / "labels.nii.gz")
    assert nib.load(tmp_path / "mask.nii").get_data_dtype() == np.uint16


def test_float_without_template_is_float32(tmp_path):
    volume = np.linspace(-1, 1, 60).reshape(3, 4, 5)
    write_nifti(tmp_path / "f.nii", volume, AFFINE)
    img = nib.load(tmp_path / "f.nii")
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(img.dataobj), volume.astype(np.float32))


def test_write_nifti_errors_are_one_line(tmp_path):
    _ct_like(tmp_path / "ct.nii")
    cases = [
        ("x.nrrd", dict(array=np.zeros((2, 2)), affine=AFFINE), "x.nrrd: a NIfTI file name ends"),
        ("x.nii", dict(array=np.zeros((2, 2))), "x.nii: write_nifti needs an affine"),
        ("x.nii", dict(array=np.zeros((2, 2)), affine=np.eye(3)), "is not a finite 4x4"),
        ("x.nii", dict(array=np.zeros((2, 2)), affine=np.zeros((4, 4))), "affine is singular"),
        ("x.nii", dict(array=np.zeros((2, 2, 2, 2)), affine=AFFINE), "is not a non-empty"),
        ("x.nii", dict(array=np.zeros((2, 2)), like=CT_SMALL), "CT_small.dcm: like= must be"),
        ("x.nii", dict(array=np.zeros((2, 2)), like=tmp_path / "ct.nii"), "does not match"),
        ("x.nii", dict(array=np.full((2, 2), -(2**40)), affine=AFFINE), "do not fit"),
    ]
    for name, kwargs, needle in cases:
        with pytest.raises(ImageReadError) as err:
            write_nifti(tmp_path / name, **kwargs)
        assert needle in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii"]  # nothing half-written
