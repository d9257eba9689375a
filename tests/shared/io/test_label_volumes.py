"""DICOM series found by folder and SeriesInstanceUID, stacked only when their files lie at several places,
and label maps written as NIfTI in the voxel order ITK reads their sources in
(rat.shared.io.label_volumes)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import CT_SMALL
from pydicom.uid import generate_uid

from rat.shared.io import ImageReadError, image_affine
from rat.shared.io.label_volumes import folder_series, series_of, series_stack, write_label_nifti


def write(path: Path, uid: str, z: float | None) -> Path:
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=False)
    ds.SeriesInstanceUID = uid
    if z is None:
        del ds.ImagePositionPatient
    else:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def test_series_by_folder_and_uid_stacked_when_at_several_places(tmp_path):
    a, b = generate_uid(), generate_uid()
    for name, uid, z in (("3.dcm", a, 5.0), ("1.dcm", a, 0.0), ("2.dcm", a, 2.5), ("x.dcm", b, 0.0)):
        write(tmp_path / "s" / name, uid, z)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\0" * 64)
    found = folder_series(tmp_path / "s")
    assert {(s.uid, tuple(f.name for f in s.files)) for s in found} == {(a, ("1.dcm", "2.dcm", "3.dcm")),
                                                                         (b, ("x.dcm",))}
    assert series_of(tmp_path / "s" / "3.dcm").uid == a and series_of(tmp_path / "s" / "notes.txt") is None
    stack = series_stack(series_of(tmp_path / "s" / "3.dcm"), "s")
    assert [f.name for f in stack.files] == ["1.dcm", "2.dcm", "3.dcm"] and stack.shape == (128, 128, 3)
    np.testing.assert_allclose(stack.affine[:3, 2:], [[0, 0], [0, 0], [2.5, 0]])
    assert series_stack(series_of(tmp_path / "s" / "x.dcm"), "x") is None            # one file: an image


def test_files_at_one_place_or_without_positions_are_images(tmp_path):
    uid = generate_uid()
    for k in range(3):
        write(tmp_path / "same" / f"{k}.dcm", uid, 7.0)
        write(tmp_path / "none" / f"{k}.dcm", uid, None)
    assert series_stack(folder_series(tmp_path / "same")[0], "same") is None
    assert series_stack(folder_series(tmp_path / "none")[0], "none") is None
    write(tmp_path / "mixed" / "0.dcm", uid, 0.0)
    write(tmp_path / "mixed" / "1.dcm", uid, 2.0)
    write(tmp_path / "mixed" / "2.dcm", uid, None)
    with pytest.raises(ImageReadError, match=r"^mixed: 2\.dcm has no ImagePositionPatient"):
        series_stack(folder_series(tmp_path / "mixed")[0], "mixed")
    write(tmp_path / "mixed" / "2.dcm", uid, 2.0)
    with pytest.raises(ImageReadError, match=r"^mixed: slices 1\.dcm and 2\.dcm share one position"):
        series_stack(folder_series(tmp_path / "mixed")[0], "mixed")


def test_label_maps_are_one_slice_volumes_in_itk_order(tmp_path):
    labels = np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) * 5  # past uint16: uint32
    affine = image_affine(CT_SMALL)
    write_label_nifti(tmp_path / "d.nii.gz", labels, affine, CT_SMALL)
    img = nib.load(tmp_path / "d.nii.gz")
    assert img.shape == (128, 128, 1) and img.get_data_dtype() == np.uint32
    assert img.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, labels)
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(img.affine[:3, 3], ipp * [-1, -1, 1])                  # the slice position
    small = labels[:4, :6] % 5
    write_label_nifti(tmp_path / "n.nii.gz", small, np.eye(4), tmp_path / "scan.nii.gz")  # NIfTI: as stored
    out = nib.load(tmp_path / "n.nii.gz")
    assert out.shape == (4, 6) and out.get_data_dtype() == np.uint16              # the source's shape
    np.testing.assert_array_equal(np.asarray(out.dataobj), small)
    with pytest.raises(ImageReadError, match="label maps are integer arrays"):
        write_label_nifti(tmp_path / "f.nii.gz", small.astype(np.float32), np.eye(4), CT_SMALL)
