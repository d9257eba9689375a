"""What `rat-train restore` is asked to restore (rat.training.inference.inputs): files, folders and globs as
scans; DICOM files that hold no image skipped with the reason, unreadable files failed in one line."""

import shutil
from pathlib import Path

import pydicom
from helpers import DICOM_FILES

from rat.training.inference.inputs import collect_scans


def series(folder: Path, n: int = 3) -> str:
    """n CT slices of one series (pydicom's CT_small at 5 mm steps) in ``folder``; returns the series' UID."""
    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid(entropy_srcs=["inputs test"])
    for k in range(n):
        ds = pydicom.dcmread(DICOM_FILES / "CT_small.dcm")
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["inputs test", str(k)])
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.save_as(folder / f"{k:04d}.dcm")
    return uid


def test_a_series_folder_is_its_image_files_and_the_rest_is_skipped_or_failed(tmp_path):
    uid = series(tmp_path / "study" / "series")
    folder = tmp_path / "study" / "series"
    (folder / "tiny.dcm").write_bytes(b"\0" * 60)                                   # a 60-byte .dcm
    shutil.copy(DICOM_FILES / "dicomdirtests" / "DICOMDIR", folder / "DICOMDIR")   # no suffix, DICM preamble
    report = pydicom.dcmread(DICOM_FILES / "test-SR.dcm")
    report.SeriesInstanceUID = uid                                                 # an SR in the series
    report.save_as(folder / "report.dcm")
    scans, others = collect_scans([str(folder)])
    assert [(s.name, s.kind, s.series) for s in scans] == [(f"series/{k:04d}.dcm", "image", "series")
                                                          for k in range(3)]
    by = {o.image_id: (o.status, o.reason) for o in others}
    assert by["series/DICOMDIR"] == ("skipped", "a DICOMDIR (the directory of a DICOM medium), not an image")
    assert by["series/report.dcm"] == ("skipped", "no image in it (Comprehensive SR Storage)")
    status, reason = by["series/tiny.dcm"]
    assert status == "failed" and reason.startswith(("not a DICOM file", "corrupt or truncated DICOM"))
    assert len(others) == 3


def test_a_model_that_cuts_volumes_across_slices_reads_a_series_folder_as_one_volume(tmp_path):
    series(tmp_path / "s")
    scans, others = collect_scans([str(tmp_path / "s")], volume_axis=1)
    assert [(s.name, s.kind, s.axis) for s in scans] == [("s", "volume", 1)] and others == []
