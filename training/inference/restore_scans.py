"""Restoring scans and writing them in their own standard formats.

- DICOM: one new derived series per input series, in the same study (new Series and SOP Instance UIDs,
  ImageType DERIVED\\SECONDARY, descriptions naming the model and its weights' SHA-256, geometry kept, pixel
  data in the source's representation; :func:`rat.shared.io.write_derived_series`). Single DICOM files of one
  series are written together as one series.
- NIfTI: a volume of the source's shape, affine and units (slices the model did not restore, e.g. the
  air-only slices a dataset leaves out, keep their input values).
- PNG/TIFF: the source's bit depth and channels.

With ``save_regions`` the label map the model saw is written beside each output: NIfTI for volumes and DICOM
(in the source geometry), 16-bit PNG otherwise. A scan that fails is reported and the others go on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
from tqdm import tqdm

from rat.shared.errors import RatError, one_line
from rat.shared.io import (
    image_affine,
    read_image,
    read_volume,
    to_itk_order,
    volume_affine,
    write_derived_series,
    write_image,
    write_nifti,
)
from rat.shared.io.dicom import dicom_slice_files
from rat.shared.jobs import Outcome, Reporter
from rat.training.inference.inputs import Scan
from rat.training.inference.region_source import RegionSource
from rat.training.inference.restorer import Restorer

_ERRORS = (RatError, ValueError, OSError, RuntimeError)


def output_path(out_dir: Path, scan: Scan) -> Path:
    """Where a restored image goes: ``<out>/<name>``, JPEG as PNG (no lossy re-encoding)."""
    target = out_dir / scan.name
    return target.with_suffix(".png") if target.suffix.lower() in (".jpg", ".jpeg") else target


def regions_path(target: Path) -> Path:
    """Where the label map of an output goes: beside it, ``<stem>_regions.nii.gz`` or ``.png``."""
    stem = target.name.removesuffix(".nii.gz").rsplit(".", 1)[0] if "." in target.name else target.name
    name = target.name.lower()
    nifti = name.endswith((".nii", ".nii.gz", ".dcm", ".dicom", ".ima")) or target.suffix == ""
    return target.with_name(f"{stem}_regions.nii.gz" if nifti else f"{stem}_regions.png")


def _write_regions_nifti(path: Path, labels: np.ndarray, source: Path, affine: np.ndarray) -> None:
    if not source.name.lower().endswith((".nii", ".nii.gz")):  # ITK reads DICOM and rasters (col, row)
        labels, affine = to_itk_order(labels, affine)
    write_nifti(path, labels.astype(np.uint32), affine)


def _restore_image(scan: Scan, restorer: Restorer, regions: RegionSource
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    image, meta = read_image(scan.path)
    restorer.check(image, meta, scan.path)
    labels = regions.labels(scan, None, image)
    return restorer(image, labels), labels, meta.format


def _restore_volume(scan: Scan, restorer: Restorer, regions: RegionSource, progress: bool
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    volume, meta = read_volume(scan.path)  # (H, W, N)
    axis = scan.axis % 3
    out = volume.copy()
    labels = np.zeros(volume.shape[:3], dtype=np.uint32)
    indices = scan.slices if scan.slices is not None else range(volume.shape[axis])
    for k in tqdm(indices, desc=scan.name, unit="slice", leave=False, disable=not progress):
        where: list = [slice(None)] * 3
        where[axis] = k
        image = volume[tuple(where)]
        if k == indices[0]:
            restorer.check(image, meta, scan.path)
        lab = regions.labels(scan, k, image)
        out[tuple(where)] = restorer(image, lab)
        labels[tuple(where)] = lab
    return out, labels, meta.format


def restore_scans(restorer: Restorer, scans: Iterable[Scan], regions: RegionSource, out_dir: str | Path,
                  save_regions: bool = False, progress: bool = True) -> list[Outcome]:
    """Restore every scan and write it (see the module doc); one Outcome per scan, in order."""
    out_dir = Path(out_dir)
    scans = list(scans)
    outcomes: dict[int, Outcome] = {}
    series: dict[tuple[str, str], list[tuple[int, Scan, np.ndarray, np.ndarray]]] = defaultdict(list)
    was_training = restorer.model.training
    restorer.model.eval()
    with Reporter(len(scans), "restore", progress) as reporter:
        for i, scan in enumerate(scans):
            try:
                target = output_path(out_dir, scan)
                if scan.kind == "image":
                    restored, labels, fmt = _restore_image(scan, restorer, regions)
                    if fmt == "dicom":  # written with the other files of its series, below
                        header = pydicom.dcmread(scan.path, stop_before_pixels=True)
                        uid = str(header.get("SeriesInstanceUID", ""))
                        series[(str(Path(scan.name).parent), uid)].append((i, scan, restored, labels))
                        continue
                    if fmt == "nifti":
                        write_nifti(target, restored, like=scan.path)
                    else:
                        write_image(target, restored, like=scan.path)
                    if save_regions:
                        write_image(regions_path(target), labels, dtype="uint16")
                else:
                    restored, labels, fmt = _restore_volume(scan, restorer, regions, progress)
                    if fmt == "dicom-series":
                        target = out_dir / scan.name
                        write_derived_series(target, dicom_slice_files(scan.path),
                                             [restored[:, :, k] for k in range(restored.shape[2])],
                                             description=restorer.description, derivation=restorer.derivation)
                    else:
                        if not target.name.lower().endswith((".nii", ".nii.gz")):
                            target = target.with_name(f"{target.stem}.nii.gz")  # multi-frame DICOM
                        like = scan.path if fmt == "nifti" else None
                        write_nifti(target, restored, volume_affine(scan.path), like=like)
                    if save_regions:
                        affine = volume_affine(scan.path)
                        _write_regions_nifti(regions_path(target), labels, scan.path, affine)
                outcomes[i] = reporter.add(Outcome(scan.name, "done", path=str(target)))
            except _ERRORS as err:
                outcomes[i] = reporter.add(Outcome(scan.name, "failed", one_line(err)))
        for (parent, _), members in series.items():
            _write_series(out_dir, parent, members, restorer, save_regions, reporter, outcomes,
                          several=sum(p == parent for p, _ in series) > 1)
    restorer.model.train(was_training)
    return [outcomes[i] for i in range(len(scans))]


def _write_series(out_dir: Path, parent: str, members: list, restorer: Restorer, save_regions: bool,
                  reporter: Reporter, outcomes: dict[int, Outcome], several: bool) -> None:
    """One derived series of the restored single DICOM files of one source series."""
    folder = out_dir / parent
    if several:  # other series from the same folder: one subfolder each
        uid = str(pydicom.dcmread(members[0][1].path, stop_before_pixels=True).SeriesInstanceUID)
        folder = folder / f"series-{uid.rsplit('.', 1)[-1]}"
    try:
        written = write_derived_series(folder, [m[1].path for m in members], [m[2] for m in members],
                                       description=restorer.description, derivation=restorer.derivation)
        if save_regions:
            for (_, scan, _, labels), path in zip(members, written, strict=True):
                _write_regions_nifti(regions_path(path), labels, scan.path, image_affine(scan.path))
    except _ERRORS as err:
        for i, scan, _, _ in members:
            outcomes[i] = reporter.add(Outcome(scan.name, "failed", one_line(err)))
        return
    for (i, scan, _, _), path in zip(members, written, strict=True):
        outcomes[i] = reporter.add(Outcome(scan.name, "done", path=str(path)))
