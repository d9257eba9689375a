"""Readers and writer in rat.shared.io, on real files shipped with pydicom and scikit-image."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import skimage
import tifffile
from helpers import CT_SMALL, DICOM_FILES
from PIL import Image, ImageFile

from rat.shared import io
from rat.shared.hashes import sha256_file
from rat.shared.io import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    ImageReadError,
    read_image,
    read_volume,
    volume_shape,
    write_image,
)

SKIMAGE_DIR = Path(skimage.__file__).parent / "data"


def _stored_hu(path: Path) -> np.ndarray:
    """HU computed directly from the tags: stored * RescaleSlope + RescaleIntercept."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _assert_one_line_error(err: pytest.ExceptionInfo, name: str) -> str:
    text = str(err.value)
    assert "\n" not in text
    assert name in text
    assert isinstance(err.value, ImageReadError) and err.value.path.endswith(name)
    return text


# ----------------------------------------------------------------------------- DICOM


def test_ct_small_in_hounsfield_units_with_meta():
    ds = pydicom.dcmread(CT_SMALL)
    assert float(ds.RescaleIntercept) != 0  # the test means something only with a rescale
    array, meta = read_image(CT_SMALL)
    assert array.dtype == np.float32 and array.shape == (128, 128)
    np.testing.assert_array_equal(array, _stored_hu(CT_SMALL).astype(np.float32))
    assert meta.format == "dicom" and meta.modality == "CT" and meta.source_dtype == "int16"
    assert meta.spacing == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    assert meta.value_range == (float(array.min()), float(array.max()))
    assert meta.shape == (128, 128) and meta.path == str(CT_SMALL)


def test_rle_dicom_decodes_natively_and_equals_uncompressed():
    rle, meta = read_image(DICOM_FILES / "MR_small_RLE.dcm")
    plain, _ = read_image(DICOM_FILES / "MR_small.dcm")
    np.testing.assert_array_equal(rle, plain)
    assert meta.modality == "MR"


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("pylibjpeg", "jpeg_ls", "gdcm")),
    reason="a JPEG-LS decoder plugin is installed",
)
@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm"])
def test_compressed_dicom_without_decoder_names_syntax_and_extra(name):
    with pytest.raises(ImageReadError) as err:
        read_image(DICOM_FILES / name)
    text = _assert_one_line_error(err, name)
    assert "compressed transfer syntax JPEG-LS" in text
    assert text.endswith("needs a decoder: pip install rat-restore[dicom]")
    assert volume_shape(DICOM_FILES / name)  # the header alone still reads


def test_dicom_without_pixel_data(tmp_path):
    with pytest.raises(ImageReadError) as err:
        read_image(DICOM_FILES / "rtplan.dcm")
    assert _assert_one_line_error(err, "rtplan.dcm").endswith(": no pixel data")
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    stripped = tmp_path / "ct_no_pixels.dcm"
    ds.save_as(stripped)
    with pytest.raises(ImageReadError, match=r"ct_no_pixels\.dcm: no pixel data$"):
        read_image(stripped)


@pytest.mark.parametrize("cut", [1200, 20000, 39000])
def test_truncated_dicom_copy_is_one_line(tmp_path, cut):
    short = tmp_path / "ct_cut.dcm"
    short.write_bytes(CT_SMALL.read_bytes()[:cut])
    with pytest.raises(ImageReadError) as err:
        read_image(short)
    assert "corrupt or truncated DICOM" in _assert_one_line_error(err, "ct_cut.dcm")


def test_shipped_truncated_dicom():
    with pytest.raises(ImageReadError) as err:
        read_image(DICOM_FILES / "MR_truncated.dcm")
    text = _assert_one_line_error(err, "MR_truncated.dcm")
    assert "corrupt or truncated DICOM (PixelData" in text


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted_path = tmp_path / "mono1.dcm"
    ds.save_as(inverted_path)
    normal, _ = read_image(CT_SMALL)
    inverted, _ = read_image(inverted_path)
    # high stays bright: values are mirrored within the storable HU range
    bits, slope, icpt = int(ds.BitsStored), float(ds.RescaleSlope), float(ds.RescaleIntercept)
    lo = -(2 ** (bits - 1)) * slope + icpt
    hi = (2 ** (bits - 1) - 1) * slope + icpt
    np.testing.assert_allclose(inverted, (lo + hi) - normal, atol=1e-3)
    assert np.argmax(inverted) == np.argmin(normal) and np.argmin(inverted) == np.argmax(normal)


def test_multiframe_dicom_needs_index_and_selects_frames():
    path = DICOM_FILES / "rtdose.dcm"
    frames = pydicom.dcmread(path).pixel_array  # (15, 10, 10)
    with pytest.raises(ImageReadError, match="pass index"):
        read_image(path)
    frame, meta = read_image(path, index=3)
    np.testing.assert_array_equal(frame, frames[3].astype(np.float32))
    volume, vmeta = read_volume(path)
    assert volume.shape == (10, 10, 15) == volume_shape(path)
    np.testing.assert_array_equal(volume[:, :, 3], frame)
    np.testing.assert_array_equal(read_image(path, index=4, axis=0)[0], volume[4])


def test_colour_dicom_frame_is_rgb():
    frame, meta = read_image(DICOM_FILES / "SC_rgb_rle_2frame.dcm", index=1)
    assert frame.shape == (100, 100, 3)
    expected = pydicom.dcmread(DICOM_FILES / "SC_rgb_rle_2frame.dcm").pixel_array[1]
    np.testing.assert_array_equal(frame, expected.astype(np.float32))


# ----------------------------------------------------------------------------- PNG / JPEG / TIFF


def test_png_rgb_gray_and_rgba(tmp_path):
    ihc, meta = read_image(SKIMAGE_DIR / "ihc.png")
    assert ihc.shape == (512, 512, 3) and meta.format == "png" and meta.source_dtype == "uint8"
    np.testing.assert_array_equal(ihc, np.asarray(Image.open(SKIMAGE_DIR / "ihc.png")))
    camera, _ = read_image(SKIMAGE_DIR / "camera.png")
    assert camera.shape == (512, 512)
    rgba = np.dstack([ihc[:8, :8].astype(np.uint8), np.full((8, 8), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(rgb, ihc[:8, :8])
    palette = Image.fromarray(ihc[:8, :8].astype(np.uint8)).convert("P")
    palette.save(tmp_path / "pal.png")
    pal_rgb, pal_meta = read_image(tmp_path / "pal.png")
    assert pal_rgb.shape == (8, 8, 3) and pal_meta.source_dtype == "uint8"
    np.testing.assert_array_equal(pal_rgb, np.asarray(palette.convert("RGB")))


def test_jpeg_reads(tmp_path):
    array, meta = read_image(SKIMAGE_DIR / "retina.jpg")
    assert meta.format == "jpeg" and array.shape == (1411, 1411, 3)


def test_16bit_png_keeps_values_above_255(tmp_path):
    values = np.linspace(0, 60000, 12 * 16).reshape(12, 16).round().astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    array, meta = read_image(tmp_path / "deep.png")
    assert meta.source_dtype == "uint16" and array.max() == 60000
    np.testing.assert_array_equal(array, values.astype(np.float32))


def test_oversized_png_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("L", (2000, 2000)).save(tmp_path / "big.png")

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "big.png", max_pixels=1000)
    text = _assert_one_line_error(err, "big.png")
    assert text.endswith("big.png: 2000x2000 pixels exceed the limit of 1000 (max_pixels)")


def test_oversized_tiff_and_dicom_refused_before_decoding(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((100, 100), np.uint8))

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decoding)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", no_decoding)
    with pytest.raises(ImageReadError, match=r"big\.tif: 100x100 pixels exceed the limit of 99"):
        read_image(tmp_path / "big.tif", max_pixels=99)
    with pytest.raises(ImageReadError, match=r"CT_small\.dcm: 128x128 pixels exceed"):
        read_image(CT_SMALL, max_pixels=128 * 128 - 1)


def test_pillow_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    Image.new("L", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow errors above 2x this
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "bomb.png")
    assert "MAX_IMAGE_PIXELS" in _assert_one_line_error(err, "bomb.png")


def test_multipage_tiff_needs_page():
    path = SKIMAGE_DIR / "multipage.tif"
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert "multi-page TIFF with 2 pages" in _assert_one_line_error(err, "multipage.tif")
    with tifffile.TiffFile(path) as tif:
        pages = [p.asarray() for p in tif.pages]
    for i, expected in enumerate(pages):
        array, meta = read_image(path, page=i)
        assert meta.format == "tiff"
        np.testing.assert_array_equal(array, expected.astype(np.float32))
    assert not np.array_equal(pages[0], pages[1])
    with pytest.raises(ImageReadError, match="page 2 out of range"):
        read_image(path, page=2)
    stack, _ = read_volume(path)
    assert stack.shape == volume_shape(path) == pages[0].shape + (2,)


def test_tiff_resolution_gives_spacing(tmp_path):
    data = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5)
    tifffile.imwrite(tmp_path / "res.tif", data, resolution=(4.0, 2.0), resolutionunit="CENTIMETER")
    array, meta = read_image(tmp_path / "res.tif")
    np.testing.assert_array_equal(array, data)
    assert meta.spacing == pytest.approx((5.0, 2.5))  # (row, col) mm from 2 and 4 px/cm


# ----------------------------------------------------------------------------- volumes


def test_nifti_volume_slices_along_each_axis(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.9, 2.5, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "vol.nii.gz"
    nib.save(img, path)
    scaled = data.astype(np.float32) * 0.5 - 10.0
    with pytest.raises(ImageReadError, match="pass index"):
        read_image(path)
    volume, meta = read_volume(path)
    np.testing.assert_allclose(volume, scaled)
    assert meta.format == "nifti" and meta.source_dtype == "int16"
    assert meta.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert volume_shape(path) == (6, 5, 4)
    for axis, expected_spacing in [(0, (0.9, 2.5)), (1, (0.8, 2.5)), (-1, (0.8, 0.9))]:
        sl, smeta = read_image(path, index=2, axis=axis)
        np.testing.assert_allclose(sl, np.take(scaled, 2, axis=axis))
        assert smeta.spacing == pytest.approx(expected_spacing)
    np.testing.assert_allclose(read_image(path, index=-1)[0], scaled[:, :, -1])
    with pytest.raises(ImageReadError, match="index 4 out of range"):
        read_image(path, index=4)
    with pytest.raises(ImageReadError, match="max_pixels"):
        read_volume(path, max_pixels=6 * 5 * 4 - 1)


def test_nifti_two_d_and_singleton_time(tmp_path):
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii")
    image, meta = read_image(tmp_path / "flat.nii")
    np.testing.assert_array_equal(image, flat)
    assert meta.spacing == (1.0, 1.0) and meta.source_dtype == "float32"
    timed = np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(timed, np.eye(4)), tmp_path / "timed.nii")
    assert volume_shape(tmp_path / "timed.nii") == (2, 3, 4)
    np.testing.assert_array_equal(read_image(tmp_path / "timed.nii", index=1)[0], timed[:, :, 1, 0])
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.uint8), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ImageReadError, match=r"4d\.nii: 4-D NIfTI"):
        read_volume(tmp_path / "4d.nii")


def _write_series(directory: Path, z_positions: list[float], names: list[str]) -> np.ndarray:
    """Copies of CT_small at the given z, each with distinct pixels; returns HU sorted by z."""
    directory.mkdir()
    template = pydicom.dcmread(CT_SMALL)
    by_z = {}
    for z, name in zip(z_positions, names, strict=True):
        ds = pydicom.dcmread(CT_SMALL)
        stored = (template.pixel_array.astype(np.int32) + int(z) * 10).astype(np.int16)
        ds.PixelData = stored.tobytes()
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = len(by_z) + 1  # deliberately not the z order
        ds.save_as(directory / name)
        by_z[z] = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.stack([by_z[z] for z in sorted(by_z)], axis=-1)


def test_dicom_series_sorted_by_position(tmp_path):
    series = tmp_path / "series"
    expected = _write_series(series, [7.5, -2.5, 12.5, 2.5], ["a.dcm", "b.dcm", "c.dcm", "d.dcm"])
    volume, meta = read_volume(series)
    assert volume.shape == (128, 128, 4) == volume_shape(series)
    np.testing.assert_array_equal(volume, expected.astype(np.float32))
    assert meta.format == "dicom-series" and meta.modality == "CT"
    assert meta.spacing[2] == pytest.approx(5.0)
    sl, smeta = read_image(series, index=1)
    np.testing.assert_array_equal(sl, expected[:, :, 1].astype(np.float32))
    assert smeta.spacing == pytest.approx(meta.spacing[:2])
    np.testing.assert_array_equal(read_image(series, index=5, axis=0)[0], volume[5])
    with pytest.raises(ImageReadError, match="pass index"):
        read_image(series)


def test_dicom_series_falls_back_to_instance_number(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    template = pydicom.dcmread(CT_SMALL)
    for number, name in [(3, "a.dcm"), (1, "b.dcm"), (2, "c.dcm")]:
        ds = pydicom.dcmread(CT_SMALL)
        del ds.ImagePositionPatient
        ds.InstanceNumber = number
        ds.PixelData = (template.pixel_array + number).astype(np.int16).tobytes()
        ds.save_as(series / name)
    volume, meta = read_volume(series)
    base = _stored_hu(CT_SMALL).astype(np.float32)
    for i in range(3):
        np.testing.assert_array_equal(volume[:, :, i], base + (i + 1))
    assert meta.spacing[2] == pytest.approx(float(template.SliceThickness))


def test_dicom_series_duplicate_position_is_refused(tmp_path):
    series = tmp_path / "dups"
    _write_series(series, [0.0, 5.0, 5.0], ["a.dcm", "b.dcm", "c.dcm"])
    with pytest.raises(ImageReadError, match=r"dups: slices b\.dcm and c\.dcm share one position"):
        volume_shape(series)


def test_dicom_series_errors_name_the_culprit(tmp_path):
    series = tmp_path / "series"
    _write_series(series, [0.0, 5.0], ["a.dcm", "b.dcm"])
    (series / "c.dcm").write_bytes(CT_SMALL.read_bytes()[:20000])
    with pytest.raises(ImageReadError) as err:
        read_volume(series)
    _assert_one_line_error(err, "c.dcm")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="empty: directory holds no DICOM files"):
        read_image(empty, index=0)


def test_sha256_of_files_and_series(tmp_path):
    assert sha256_file(CT_SMALL) == hashlib.sha256(CT_SMALL.read_bytes()).hexdigest()
    series = tmp_path / "series"
    _write_series(series, [0.0, 5.0], ["a.dcm", "b.dcm"])
    lines = b"".join(
        f"{n}\0{hashlib.sha256((series / n).read_bytes()).hexdigest()}\n".encode()
        for n in ["a.dcm", "b.dcm"]
    )
    first = sha256_file(series)
    assert first == hashlib.sha256(lines).hexdigest()
    (series / "b.dcm").rename(series / "z.dcm")
    assert sha256_file(series) != first
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        sha256_file(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- writing


def test_write_png_8_and_16_bit_round_trip(tmp_path):
    values = np.array([[-3.0, 0.4, 0.6, 254.5], [255.4, 300.0, 17.0, 128.0]])
    write_image(tmp_path / "eight.png", values)
    back, meta = read_image(tmp_path / "eight.png")
    assert meta.source_dtype == "uint8"
    np.testing.assert_array_equal(back, [[0, 0, 1, 254], [255, 255, 17, 128]])
    deep = np.array([[0.0, 255.0, 256.0], [40000.2, 60000.0, 70000.0]])
    write_image(tmp_path / "deep.png", deep, dtype=np.uint16)
    back16, meta16 = read_image(tmp_path / "deep.png")
    assert meta16.source_dtype == "uint16"
    np.testing.assert_array_equal(back16, [[0, 255, 256], [40000, 60000, 65535]])
    # `like` carries the dtype over
    write_image(tmp_path / "again.png", back16, like=tmp_path / "deep.png")
    assert read_image(tmp_path / "again.png")[1].source_dtype == "uint16"
    rgb, _ = read_image(SKIMAGE_DIR / "ihc.png")
    write_image(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png")[0], rgb)


def test_write_tiff_float32_and_uint16(tmp_path):
    rng = np.random.default_rng(1)
    floats = rng.normal(size=(9, 7)).astype(np.float32)
    write_image(tmp_path / "f.tif", floats)
    back, meta = read_image(tmp_path / "f.tif")
    assert meta.source_dtype == "float32"
    np.testing.assert_array_equal(back, floats)
    write_image(tmp_path / "u.tif", floats * 1000 + 30000, dtype="uint16")
    back16, meta16 = read_image(tmp_path / "u.tif")
    assert meta16.source_dtype == "uint16"
    np.testing.assert_array_equal(back16, np.rint(floats * 1000 + 30000))
    rgb = rng.integers(0, 255, (5, 4, 3)).astype(np.float32)
    write_image(tmp_path / "rgb.tif", rgb, dtype=np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif")[0], rgb)


def test_write_dicom_round_trip_keeps_tags_and_hu(tmp_path):
    hu, _ = read_image(CT_SMALL)
    restored = hu[::-1] + 0.3  # new content in HU, off the integer grid
    out = tmp_path / "out.dcm"
    write_image(out, restored, like=CT_SMALL)
    back, meta = read_image(out)
    slope = float(pydicom.dcmread(CT_SMALL).RescaleSlope)
    np.testing.assert_allclose(back, restored, atol=slope / 2 + 1e-4)
    assert meta.modality == "CT" and meta.source_dtype == "int16"
    src, dst = pydicom.dcmread(CT_SMALL), pydicom.dcmread(out)
    for keyword in (
        "PatientName",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
        "BitsStored",
        "PixelRepresentation",
    ):
        assert dst[keyword].value == src[keyword].value, keyword
    assert dst.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert dst.SOPInstanceUID != src.SOPInstanceUID
    assert dst.file_meta.MediaStorageSOPInstanceUID == dst.SOPInstanceUID
    # deterministic: the same write again gives the same UID and the same bytes
    again = tmp_path / "again" / "out.dcm"
    write_image(again, restored, like=CT_SMALL)
    assert pydicom.dcmread(again).SOPInstanceUID == dst.SOPInstanceUID
    assert again.read_bytes() == out.read_bytes()
    # values beyond the stored range are clipped, not wrapped
    write_image(tmp_path / "hot.dcm", np.full((4, 6), 1e9), like=CT_SMALL)
    hot, hot_meta = read_image(tmp_path / "hot.dcm")
    assert hot.shape == (4, 6) and hot_meta.shape == (4, 6)
    assert hot.max() == (2**15 - 1) * slope + float(src.RescaleIntercept)


def test_write_dicom_from_compressed_and_monochrome1_templates(tmp_path):
    mr, _ = read_image(DICOM_FILES / "MR_small_RLE.dcm")
    write_image(tmp_path / "mr.dcm", mr, like=DICOM_FILES / "MR_small_RLE.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "mr.dcm")[0], mr)
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    inverted, _ = read_image(tmp_path / "mono1.dcm")
    write_image(tmp_path / "mono1_out.dcm", inverted, like=tmp_path / "mono1.dcm")
    np.testing.assert_array_equal(read_image(tmp_path / "mono1_out.dcm")[0], inverted)
    np.testing.assert_array_equal(
        pydicom.dcmread(tmp_path / "mono1_out.dcm").pixel_array, ds.pixel_array
    )


def test_write_dicom_from_implicit_template_and_refusals(tmp_path):
    implicit = DICOM_FILES / "MR_small_implicit.dcm"
    mr, _ = read_image(implicit)
    write_image(tmp_path / "mr.dcm", mr + 1, like=implicit)
    np.testing.assert_array_equal(read_image(tmp_path / "mr.dcm")[0], mr + 1)
    for name, reason in [
        ("MR_small_bigendian.dcm", "big-endian"),
        ("rtdose.dcm", "multi-frame"),
        ("rtplan.dcm", "no (integer) pixel data"),
    ]:
        with pytest.raises(ImageReadError) as err:
            write_image(tmp_path / "x.dcm", mr, like=DICOM_FILES / name)
        assert reason in _assert_one_line_error(err, name)
    with pytest.raises(ImageReadError, match=r"x\.dcm: gray template CT_small\.dcm needs"):
        write_image(tmp_path / "x.dcm", np.zeros((4, 4, 3)), like=CT_SMALL)


def test_write_errors_are_one_line(tmp_path):
    with pytest.raises(ImageReadError, match=r"x\.dcm: writing DICOM needs like="):
        write_image(tmp_path / "x.dcm", np.zeros((4, 4)))
    with pytest.raises(ImageReadError, match=r"x\.png: array holds NaN"):
        write_image(tmp_path / "x.png", np.full((4, 4), np.nan))
    with pytest.raises(ImageReadError, match=r"x\.png: PNG cannot hold float32"):
        write_image(tmp_path / "x.png", np.zeros((4, 4)), dtype=np.float32)
    with pytest.raises(ImageReadError, match=r"x\.bmp: cannot write"):
        write_image(tmp_path / "x.bmp", np.zeros((4, 4)))
    with pytest.raises(ImageReadError, match=r"x\.png: 16-bit colour PNG"):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 3)), dtype=np.uint16)
    assert not any(tmp_path.iterdir())  # nothing half-written left behind


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "notes.xyz").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    good = (SKIMAGE_DIR / "camera.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    (tmp_path / "fake.tif").write_bytes(b"plain text, not a TIFF")
    cases = {
        "notes.xyz": "unknown image format",
        "broken.png": "",
        "cut.png": "truncated",
        "junk.nii.gz": "NIfTI",
        "fake.tif": "",
        "missing.dcm": "no such file",
    }
    for name, needle in cases.items():
        with pytest.raises(ImageReadError) as err:
            read_image(tmp_path / name)
        assert needle in _assert_one_line_error(err, name)
    with pytest.raises(ImageReadError, match="2-D image"):
        read_image(CT_SMALL, index=0)
    with pytest.raises(ImageReadError, match="not a TIFF"):
        read_image(CT_SMALL, page=0)
    with pytest.raises(ImageReadError, match="not a volume"):
        read_volume(SKIMAGE_DIR / "camera.png")


def test_dicom_without_extension_is_sniffed(tmp_path):
    shutil.copy(CT_SMALL, tmp_path / "IM0001")
    array, meta = read_image(tmp_path / "IM0001")
    assert meta.format == "dicom"
    np.testing.assert_array_equal(array, read_image(CT_SMALL)[0])


def test_error_pickles_and_meta_is_frozen():
    err = ImageReadError("a/b.png", "bad\nthing")
    assert str(err) == "a/b.png: bad thing"
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))
    meta = read_image(CT_SMALL)[1]
    assert isinstance(meta, ImageMeta)
    with pytest.raises(AttributeError):
        meta.path = "x"  # type: ignore[misc]
    assert io.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS == 400_000_000
