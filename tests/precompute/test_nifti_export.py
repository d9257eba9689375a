"""`rat-precompute export --nifti` on an AAPM-like layout (rat.precompute.nifti_export): one label volume per
DICOM series, with the series' geometry as ITK reads it, checked against the DICOM standard's formula and an
independent reader (SimpleITK); gaps and tilted slices refused with one line; --per-slice."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from helpers import CT_SERIES, CT_SMALL
from pydicom.uid import generate_uid

from rat.precompute.cli import main as pre
from rat.precompute.nifti_export import plan_exports
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import Entry, load_index

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
#: A plane turned 0.3 rad about z, then 0.2 rad about its row direction (as written by scanners: 8 decimals).
OBLIQUE = [0.95533649, 0.29552021, 0.0, -0.28962948, 0.93629336, 0.19866933]
PIXELS = [(0, 0), (5, 17), (100, 3), (127, 127)]



def run(*args):
    result = CliRunner().invoke(pre, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def normal_of(orient) -> np.ndarray:
    iop = np.array(orient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def write_patient(root: Path, patient: str, slices: list[tuple[str, int, list[float], list[float]]]) -> None:
    """Quarter- and full-dose series of one patient: (file stem, InstanceNumber, position, orientation) per
    slice; slice k holds CT_small turned k quarter turns (flipped from k = 4), so label maps differ."""
    template = pydicom.dcmread(CT_SMALL)
    for dose in ("quarter_dose", "full_dose"):
        (root / patient / dose).mkdir(parents=True)
        uid = generate_uid()
        for k, (stem, number, position, orient) in enumerate(slices):
            ds = pydicom.dcmread(CT_SMALL)
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID, ds.InstanceNumber = patient, number
            ds.ImagePositionPatient = [round(float(v), 6) for v in position]
            ds.ImageOrientationPatient = orient
            ds.PixelSpacing = [0.5, 0.8]                # rows 0.5 mm apart, columns 0.8 mm: a swap would show
            pixels = np.rot90(template.pixel_array, k % 4)
            ds.PixelData = np.ascontiguousarray(pixels[:, ::-1] if k >= 4 else pixels).tobytes()
            ds.save_as(root / patient / dose / f"{stem}.dcm")


@pytest.fixture
def layout(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """{patient}/quarter_dose/{slice}.dcm: L001 a good oblique series (file names and InstanceNumbers in
    neither the slice order nor each other's), L002 one with a gap, L003 one with a tilted slice."""
    root = tmp_path / "data"
    start, normal = np.array([-60.0, 15.0, 40.0]), normal_of(OBLIQUE)
    places = [3, 0, 4, 1, 2]                            # slice k of the files lies at places[k] steps
    write_patient(root, "L001", [(f"{10 * (k + 1):03d}", [3, 1, 5, 2, 4][k],
                                  list(start - 2.5 * places[k] * normal), OBLIQUE) for k in range(5)])
    write_patient(root, "L002", [(f"{10 * (k + 1):03d}", k + 1, [0.0, 0.0, z], AXIAL)
                                 for k, z in enumerate([0.0, 2.5, 5.0, 10.0])])
    write_patient(root, "L003", [(f"{10 * (k + 1):03d}", k + 1, [0.0, 0.0, 2.5 * k],
                                  AXIAL if k != 1 else [1.0, 0.0, 0.0, 0.0, 0.99500417, 0.09983342])
                                 for k in range(4)])
    definition = tmp_path / "mini.toml"
    definition.write_text(CT_SERIES)
    monkeypatch.chdir(tmp_path)
    return root, definition


def dicom_world(ds, row: float, col: float) -> np.ndarray:
    """DICOM PS3.3 C.7.6.2.1.1: pixel (row, col) at IPP + col * dc * X + row * dr * Y (LPS), in RAS."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return (ipp + col * dc * iop[:3] + row * dr * iop[3:]) * [-1, -1, 1]


def test_one_label_volume_per_series_in_the_series_geometry(layout, tmp_path):
    root, definition = layout
    code, text = run("masks", "--dataset", definition, "--root", root, "--generator", "superpixels",
                     "--sp-n-segments", "4", "--split", "train", "--no-progress")
    assert code == 0, text
    entries = {e.id: e for e in load_index(load_dataset(definition), root)}
    computed = {i for i, e in entries.items() if e.split == "train"}
    assert 0 < len(computed) < len(entries)

    code, text = run("export", "mini.zarr", "--nifti", tmp_path / "nii", "--no-progress")
    assert code == 1, text                              # two series refused, the other written
    lines = text.splitlines()
    gap = [line for line in lines if line.startswith("  FAILED L002_quarter_dose: L002/quarter_dose: ")]
    assert len(gap) == 1 and "slices are not evenly spaced (030.dcm and 040.dcm lie 5 mm apart, the median " \
        "step is 2.5 mm" in gap[0]
    tilt = [line for line in lines if line.startswith("  FAILED L003_quarter_dose: L003/quarter_dose: ")]
    assert len(tilt) == 1 and "020.dcm is oriented otherwise than 010.dcm" in tilt[0]
    assert "--per-slice" in gap[0] and "--per-slice" in tilt[0]
    assert sorted(p.name for p in (tmp_path / "nii").iterdir()) == ["L001_quarter_dose_regions.nii.gz"]
    missing = sorted(f"{i.split('_')[1]}.dcm" for i in entries if i.startswith("L001") and i not in computed)
    note = f"slices without a label map here (0 in the volume), {len(missing)} of 5: {', '.join(missing)}"
    assert f"  note L001_quarter_dose: {note}" in lines
    check_volume(tmp_path / "nii" / "L001_quarter_dose_regions.nii.gz", root / "L001" / "quarter_dose",
                 st.open_store("mini.zarr"), computed)

    code, text = run("masks", "--dataset", definition, "--root", root, "--generator", "superpixels",
                     "--sp-n-segments", "4", "--no-progress")
    assert code == 0, text
    code, text = run("export", "mini.zarr", "--nifti", tmp_path / "all", "--no-progress")
    assert "1 written" in text and "note" not in text
    check_volume(tmp_path / "all" / "L001_quarter_dose_regions.nii.gz", root / "L001" / "quarter_dose",
                 st.open_store("mini.zarr"), set(entries))


def check_volume(path: Path, series: Path, group, computed: set[str]) -> None:
    """The label volume against the DICOM files, sorted along the normal by this test: the world position of
    voxels (standard's formula), ITK's reading of both (SimpleITK), and each slice's label map."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert img.shape == (128, 128, 5) and img.get_data_dtype() == np.uint16
    files = sorted(series.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    along = [np.dot([float(v) for v in ds.ImagePositionPatient], normal_of(OBLIQUE)) for ds in headers]
    order = np.argsort(along)
    numbers = [int(headers[i].InstanceNumber) for i in order]
    assert [files[i].stem for i in order] == ["030", "010", "050", "040", "020"]  # not the names' order
    assert numbers == [5, 3, 4, 2, 1]                                      # nor InstanceNumber's
    for k, i in enumerate(order):
        for row, col in PIXELS:                          # ITK's (column, row) voxel order
            np.testing.assert_allclose((img.affine @ [col, row, k, 1])[:3], dicom_world(headers[i], row, col),
                                       atol=1e-4)
        image_id = f"{series.parent.name}_{files[i].stem}"
        want = st.read_labels(group, image_id) if image_id in computed else np.zeros((128, 128))
        np.testing.assert_array_equal(data[:, :, k].T, want)
        assert want.any() == (image_id in computed)
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    scan, labels = reader.Execute(), sitk.ReadImage(str(path))
    assert labels.GetSize() == scan.GetSize()
    np.testing.assert_allclose(labels.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetSpacing(), scan.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(labels.GetDirection(), scan.GetDirection(), atol=1e-5)


def test_per_slice_files_keep_each_slice_place(layout, tmp_path):
    root, definition = layout
    code, text = run("masks", "--dataset", definition, "--root", root, "--generator", "superpixels",
                     "--sp-n-segments", "4", "--no-progress")
    assert code == 0, text
    code, text = run("export", "mini.zarr", "--nifti", tmp_path / "nii", "--per-slice", "--no-progress")
    assert code == 0 and "13 written" in text, text
    g = st.open_store("mini.zarr")
    for stem in ("010", "040"):
        img = nib.load(tmp_path / "nii" / f"L002_{stem}.nii.gz")
        ds = pydicom.dcmread(root / "L002" / "quarter_dose" / f"{stem}.dcm")
        assert img.shape == (128, 128, 1)              # a 3-D volume of one slice
        for row, col in PIXELS:                         # the origin includes the slice position
            np.testing.assert_allclose((img.affine @ [col, row, 0, 1])[:3], dicom_world(ds, row, col),
                                       atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 0].T, st.read_labels(g, f"L002_{stem}"))


def test_separate_images_of_one_series_are_not_stacked(tmp_path):
    """Files of one series at one position (or without positions) are images, not slices of a volume."""
    folder = tmp_path / "data" / "p" / "lq"
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k, stem in enumerate(("a", "b", "c")):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID, ds.InstanceNumber = uid, k + 1
        if stem == "c":
            del ds.ImagePositionPatient
        ds.save_as(folder / f"{stem}.dcm")
    entries = [Entry(f"p_{s}", "ct", "train", f"p/lq/{s}.dcm", "", None, "", (128, 128)) for s in "ab"]
    plan = plan_exports(entries, tmp_path / "data")
    assert [(x.name, x.kind) for x in plan] == [("p_a", "image"), ("p_b", "image")]
    entries.append(Entry("p_c", "ct", "train", "p/lq/c.dcm", "", None, "", (128, 128)))
    ds = pydicom.dcmread(folder / "b.dcm")
    ds.ImagePositionPatient = [0.0, 0.0, 50.0]          # now two places, and c without one: refused
    ds.save_as(folder / "b.dcm")
    (refused,) = plan_exports(entries, tmp_path / "data")
    assert refused.name == "p_lq" and refused.kind == "series"
    assert refused.refused.startswith("p/lq: c.dcm has no ImagePositionPatient")


def test_hq_files_beside_the_lq_files_are_no_slices(tmp_path):
    """Simulated low-dose data often copies the full-dose tags: LQ and HQ of one series UID in one folder."""
    folder = tmp_path / "data" / "p"
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(3):
        for kind in ("ld", "fd"):
            ds = pydicom.dcmread(CT_SMALL)
            ds.SeriesInstanceUID, ds.ImageOrientationPatient = uid, AXIAL
            ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
            ds.save_as(folder / f"{k}_{kind}.dcm")
    entries = [Entry(f"p_{k}", "ct", "train", f"p/{k}_ld.dcm", f"p/{k}_fd.dcm", None, "", (128, 128))
               for k in range(3)]
    (job,) = plan_exports(entries, tmp_path / "data")
    assert (job.name, job.kind) == ("p", "series")
    assert [f.name for f in job.stack.files] == ["0_ld.dcm", "1_ld.dcm", "2_ld.dcm"]
