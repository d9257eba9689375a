"""Affines of the arrays the readers return (rat.shared.io.geometry; DICOM files and series in
rat.shared.io.dicom_geometry), checked against the DICOM standard's pixel-position formula, each slice file's
own ImagePositionPatient, and nibabel."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import skimage
import tifffile
from helpers import CT_SMALL, DICOM_FILES, MR_SMALL
from pydicom.uid import generate_uid

from rat.shared.io import (
    ImageReadError,
    image_affine,
    read_image,
    read_volume,
    slice_affine,
    to_itk_order,
    volume_affine,
)


def _oblique(a: float, b: float) -> list[float]:
    """ImageOrientationPatient of a plane turned by a about z, then b about the new row axis."""
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    rot = rz @ rx
    return [round(float(v), 8) for v in np.concatenate([rot[:, 0], rot[:, 1]])]


def _dicom_lps(ds, r: float, c: float) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: pixel (column i, row j) at S + i * dc * X + j * dr * Y (LPS)."""
    s = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)  # PixelSpacing = (row spacing, column spacing)
    return s + c * dc * iop[:3] + r * dr * iop[3:]


def _ras(lps: np.ndarray) -> np.ndarray:
    return lps * np.array([-1.0, -1.0, 1.0])


def _apply(affine: np.ndarray, *index: float) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


PIXELS = [(0, 0), (0, 5), (7, 0), (31, 17), (127, 127)]


def _write_series(folder: Path, positions: np.ndarray, orient: list[float], spacing=(0.5, 0.8)):
    """Slices of CT_small at ``positions`` (LPS), slice k's pixels raised by 10 k; file names
    deliberately out of position order. Returns the files in writing order."""
    folder.mkdir()
    src = pydicom.dcmread(CT_SMALL)
    series = generate_uid()
    files = []
    for k, position in enumerate(positions):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.ImageOrientationPatient = orient
        ds.PixelSpacing = list(spacing)
        ds.InstanceNumber = k + 1
        ds.PixelData = (src.pixel_array + 10 * k).astype(np.int16).tobytes()
        files.append(folder / f"im{(7 * k + 3) % 10}.dcm")
        ds.save_as(files[-1])
    return files


# ----------------------------------------------------------------------------- single DICOM files


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_file_affine_follows_the_standard_formula(name):
    ds = pydicom.dcmread(DICOM_FILES / name)
    affine = image_affine(DICOM_FILES / name)
    for r, c in PIXELS:
        np.testing.assert_allclose(_apply(affine, r, c, 0), _ras(_dicom_lps(ds, r, c)), atol=1e-6)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:]) * float(ds.SliceThickness)
    np.testing.assert_allclose(affine[:3, 2], _ras(normal), atol=1e-9)


def test_oblique_anisotropic_dicom_file(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.ImageOrientationPatient = _oblique(0.4, -0.7)
    ds.PixelSpacing = [0.5, 0.8]  # rows 0.5 mm apart, columns 0.8 mm: a swap would show
    del ds.SliceThickness
    ds.SpacingBetweenSlices = 2.5
    ds.save_as(tmp_path / "oblique.dcm")
    affine = image_affine(tmp_path / "oblique.dcm")
    for r, c in PIXELS:
        np.testing.assert_allclose(_apply(affine, r, c, 0), _ras(_dicom_lps(ds, r, c)), atol=1e-6)
    assert np.linalg.norm(affine[:3, 2]) == pytest.approx(2.5)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :2], axis=0), [0.5, 0.8])


def test_dicom_without_patient_geometry_is_diagonal(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.save_as(tmp_path / "flat.dcm")
    spacing = float(ds.PixelSpacing[0])
    np.testing.assert_array_equal(image_affine(tmp_path / "flat.dcm"), np.diag([spacing, spacing, 1, 1]))


# ----------------------------------------------------------------------------- DICOM series


@pytest.mark.parametrize(
    ("orient", "step"),
    [
        ([1, 0, 0, 0, 1, 0], 2.5),  # axial
        (_oblique(0.4, -0.7), -3.0),  # oblique, written top to bottom
    ],
)
def test_series_affine_matches_each_slice_position(tmp_path, orient, step):
    iop = np.array(orient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    k = np.arange(5)[:, None]
    positions = np.array([-100.0, 20.5, 33.0]) + k * step * normal
    files = _write_series(tmp_path / "series", positions, orient)
    order = np.argsort(positions @ normal)  # our convention: ascending along the normal
    affine = volume_affine(tmp_path / "series")
    volume, _ = read_volume(tmp_path / "series")
    for slot, k in enumerate(order):
        ds = pydicom.dcmread(files[k])
        np.testing.assert_array_equal(volume[:, :, slot], read_image(files[k])[0])
        for r, c in PIXELS:
            np.testing.assert_allclose(
                _apply(affine, r, c, slot), _ras(_dicom_lps(ds, r, c)), atol=1e-4
            )
        sliced = image_affine(tmp_path / "series", index=slot)
        np.testing.assert_allclose(_apply(sliced, 3, 4, 0), _apply(affine, 3, 4, slot), atol=1e-9)


def test_one_file_series_and_uneven_or_mixed_series(tmp_path):
    _write_series(tmp_path / "one", np.array([[1.0, 2.0, 3.0]]), [1, 0, 0, 0, 1, 0])
    one = volume_affine(tmp_path / "one")
    np.testing.assert_allclose(one[:3, 2], [0, 0, 5.0])  # the normal times SliceThickness
    uneven = np.array([[0, 0, z] for z in (0.0, 2.0, 4.0, 9.0)])
    _write_series(tmp_path / "gap", uneven, [1, 0, 0, 0, 1, 0])
    with pytest.raises(ImageReadError, match=r"gap: slices are not evenly spaced") as err:
        volume_affine(tmp_path / "gap")
    assert "\n" not in str(err.value)
    files = _write_series(tmp_path / "turned", uneven[:3], [1, 0, 0, 0, 1, 0])
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = _oblique(0.0, 0.2)
    ds.save_as(files[1])
    with pytest.raises(ImageReadError, match=rf"turned: {files[1].name} is oriented otherwise than .*several "
                                             "orientations"):
        volume_affine(tmp_path / "turned")


def test_series_tolerances_and_gantry_tilt(tmp_path):
    """Even spacing within max(1e-3 of the step, 0.01 mm); slices off the normal (gantry tilt) are refused:
    ITK stacks series along the normal, so no NIfTI lies on both ITK's reading and the true positions."""
    z = np.array([0.0, 2.5, 5.0, 7.5])
    jitter = np.array([0, 0.008, -0.006, 0])  # DICOM decimal rounding: accepted
    _write_series(tmp_path / "rounded", np.stack([0 * z, 0 * z, z + jitter], 1), [1, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(volume_affine(tmp_path / "rounded")[:3, 2], [0, 0, 2.5])
    uneven = np.stack([0 * z, 0 * z, z + [0, 0, 0.02, 0]], 1)  # 0.02 mm: more than 0.01 mm and 1e-3 * 2.5
    _write_series(tmp_path / "uneven", uneven, [1, 0, 0, 0, 1, 0])
    with pytest.raises(ImageReadError, match=r"uneven: slices are not evenly spaced \(im0\.dcm and im7\.dcm "
                                             r"lie 2\.52 mm apart, the median step is 2\.5 mm"):
        volume_affine(tmp_path / "uneven")
    _write_series(tmp_path / "tilt", np.stack([0 * z, 0.4 * z, z], 1), [1, 0, 0, 0, 1, 0])
    with pytest.raises(ImageReadError, match=r"tilt: im\d\.dcm lies .* mm off the slice normal .*tilt"):
        volume_affine(tmp_path / "tilt")


def test_series_geometry_is_what_itk_reads(tmp_path):
    """An independent reader: ITK (SimpleITK's GDCM series reader) opens the series; the NIfTI affine of
    our array in ITK's (column, row) order is ITK's origin, spacing and direction (LPS -> RAS)."""
    sitk = pytest.importorskip("SimpleITK")
    orient = _oblique(0.3, 0.2)
    iop = np.array(orient)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([5.0, -7.0, 12.0]) + np.arange(4)[:, None] * -2.0 * normal
    _write_series(tmp_path / "s", positions, orient)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    image = reader.Execute()
    volume, _ = read_volume(tmp_path / "s")
    array, affine = to_itk_order(volume, volume_affine(tmp_path / "s"))
    assert image.GetSize() == array.shape
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    np.testing.assert_allclose(lps[:, 3], image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(lps[:, :3], axis=0), image.GetSpacing(), atol=1e-4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(lps[:, :3] / np.linalg.norm(lps[:, :3], axis=0), direction, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), array)


def test_multiframe_positions_from_grid_offsets_and_functional_groups(tmp_path):
    rtdose = DICOM_FILES / "rtdose.dcm"
    ds = pydicom.dcmread(rtdose)
    affine = volume_affine(rtdose)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    for k, offset in enumerate(float(v) for v in ds.GridFrameOffsetVector):
        corner = _dicom_lps(ds, 2, 3) + offset * normal
        np.testing.assert_allclose(_apply(affine, 2, 3, k), _ras(corner), atol=1e-6)
    # the same frames as an enhanced multi-frame file: positions per frame, orientation shared
    frames = []
    for offset in (float(v) for v in ds.GridFrameOffsetVector):
        position = pydicom.Dataset()
        position.ImagePositionPatient = list(np.array(ds.ImagePositionPatient, float) + offset * normal)
        item = pydicom.Dataset()
        item.PlanePositionSequence = [position]
        frames.append(item)
    orientation, shared = pydicom.Dataset(), pydicom.Dataset()
    orientation.ImageOrientationPatient = ds.ImageOrientationPatient
    shared.PlaneOrientationSequence = [orientation]
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.SharedFunctionalGroupsSequence = [shared]
    del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.GridFrameOffsetVector
    ds.save_as(tmp_path / "enhanced.dcm")
    np.testing.assert_allclose(volume_affine(tmp_path / "enhanced.dcm"), affine, atol=1e-9)


# ----------------------------------------------------------------------------- NIfTI


def _nifti(path: Path, shape=(6, 5, 4), unit="mm") -> np.ndarray:
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    affine[:3, :3] = np.array(_oblique(0.3, 0.5) + [0, 0, 1]).reshape(3, 3).T * [0.7, 0.9, 2.0]
    affine[:3, 3] = [10.0, -20.0, 5.0]
    img = nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine)
    img.header.set_xyzt_units(unit)
    nib.save(img, path)
    return nib.load(path).affine


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_nifti_volume_and_slice_affines_agree_with_nibabel(tmp_path, axis):
    path = tmp_path / "v.nii.gz"
    reference = _nifti(path)
    np.testing.assert_allclose(volume_affine(path), reference)
    volume, _ = read_volume(path)
    ax = axis % 3
    stacked_affine = volume_affine(path, axis=axis)
    for k in range(volume.shape[ax]):
        sliced, _ = read_image(path, index=k, axis=axis)
        affine = image_affine(path, index=k, axis=axis)
        for i, j in [(0, 0), (1, 2), (sliced.shape[0] - 1, sliced.shape[1] - 1)]:
            voxel = [i, j]
            voxel.insert(ax, k)  # where slice pixel (i, j) sits in the volume
            assert sliced[i, j] == volume[tuple(voxel)]
            np.testing.assert_allclose(_apply(affine, i, j, 0), _apply(reference, *voxel), atol=1e-9)
            np.testing.assert_allclose(_apply(stacked_affine, i, j, k), _apply(reference, *voxel))


def test_nifti_in_metres_is_converted_to_mm(tmp_path):
    reference = _nifti(tmp_path / "m.nii", unit="meter")
    expected = reference.copy()
    expected[:3] *= 1000.0
    np.testing.assert_allclose(volume_affine(tmp_path / "m.nii"), expected)


# ----------------------------------------------------------------------------- raster, helpers, errors


def test_png_and_tiff_affines_are_the_reader_spacing(tmp_path):
    camera = Path(skimage.__file__).parent / "data" / "camera.png"
    np.testing.assert_array_equal(image_affine(camera), np.eye(4))
    tifffile.imwrite(tmp_path / "r.tif", np.zeros((4, 6), np.uint8), resolution=(10, 4), resolutionunit=3)
    spacing = read_image(tmp_path / "r.tif")[1].spacing  # (row, col) = (10/4, 10/10) mm
    np.testing.assert_allclose(image_affine(tmp_path / "r.tif"), np.diag([*spacing, 1, 1]))
    assert spacing == pytest.approx((2.5, 1.0))


def test_slice_affine_and_itk_order_keep_world_positions():
    rng = np.random.default_rng(3)
    affine = np.eye(4)
    affine[:3] = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(slice_affine(affine, 0, 2), affine)
    moved = slice_affine(affine, 3, 0)  # slice 3 along axis 0: (j, k) -> (i=3, j, k)
    np.testing.assert_allclose(_apply(moved, 1, 2, 0), _apply(affine, 3, 1, 2))
    array = rng.normal(size=(3, 5, 2))
    swapped, swapped_affine = to_itk_order(array, affine)
    assert swapped.shape == (5, 3, 2) and swapped[4, 1, 1] == array[1, 4, 1]
    np.testing.assert_allclose(_apply(swapped_affine, 4, 1, 1), _apply(affine, 1, 4, 1))


def test_geometry_errors_are_one_line(tmp_path):
    cases = [
        (lambda: image_affine(CT_SMALL, index=0), "CT_small.dcm: index=0 given but this is a 2-D"),
        (lambda: image_affine(DICOM_FILES / "rtdose.dcm"), "rtdose.dcm: volume of shape"),
        (lambda: image_affine(DICOM_FILES / "rtdose.dcm", index=99), "out of range"),
        (lambda: volume_affine(DICOM_FILES / "rtdose.dcm", axis=3), "axis 3 is not one of"),
        (lambda: volume_affine(MR_SMALL, axis=0), "MR_small.dcm: 2-D image of shape"),
        (lambda: image_affine(tmp_path / "missing.nii"), "missing.nii: no such file"),
    ]
    for call, needle in cases:
        with pytest.raises(ImageReadError) as err:
            call()
        assert needle in str(err.value) and "\n" not in str(err.value)
    np.testing.assert_array_equal(volume_affine(MR_SMALL), image_affine(MR_SMALL))
