"""Restoring scans and writing them in their own standard formats.

- DICOM: one new derived series per input series, in the same study (new Series and SOP Instance UIDs,
  ImageType DERIVED\\SECONDARY, descriptions naming the model and its weights' SHA-256, geometry kept, pixel
  data in the source's representation; :func:`rat.shared.io.write_derived_series`). Single DICOM files of one
  series are written together as one series.
- NIfTI: a volume of the source's shape, affine and units (slices the model did not restore, e.g. the
  air-only slices a dataset leaves out, keep their input values).
- PNG/TIFF: the source's bit depth and channels.

With ``save_regions`` the label map the model saw is written beside each output: NIfTI for volumes and DICOM
(:mod:`rat.shared.io.label_volumes`: in the geometry ITK reads the source in), 16-bit PNG otherwise. The
restored files of a DICOM series that is one volume (its image files at two or more places) get one label
volume of the whole source series: ``<folder>_regions.nii.gz`` beside the derived series' folder when the
series folder was the input, else ``<PatientID>_<source folder>_regions.nii.gz`` in the derived series'
folder; its slices that were not restored are 0 and listed in a note, and slices of another size than the
restored ones are left out of it and listed; a series with several orientations, gantry tilt, a gap or uneven
spacing gets no volume, one line saying why (the restored series is written). Other DICOM files get one
``<name>_regions.nii.gz`` each, a one-slice volume at the slice's place.

A scan that fails is reported and the others go on. The outcomes count what was written: one per scan
(restored and written, or failed), and one failed outcome more for each label map or volume that could not be
written although its scan was.
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
    volume_affine,
    write_derived_series,
    write_image,
    write_nifti,
)
from rat.shared.io.dicom import dicom_slice_files
from rat.shared.io.formats import FORMATS, NIFTI, Format, by_suffix, labels_name, output_name
from rat.shared.io.label_volumes import safe_stem, same_size, series_of, series_stack, write_label_nifti
from rat.shared.jobs import Outcome, Reporter
from rat.training.inference.inputs import Scan
from rat.training.inference.region_source import RegionSource
from rat.training.inference.restorer import Restorer

_ERRORS = (RatError, ValueError, OSError, RuntimeError)


def output_path(out_dir: Path, scan: Scan) -> Path:
    """Where a restored image goes: ``<out>/<name>``, JPEG as PNG (no lossy re-encoding)."""
    return output_name(out_dir / scan.name)


def regions_path(target: Path) -> Path:
    """Where the label map of an output goes: beside it, ``<stem>_regions`` with the suffix of its format's
    label maps (NIfTI for DICOM, NIfTI and series folders; PNG for the others)."""
    return labels_name(target, "_regions")


def _restore_image(scan: Scan, restorer: Restorer, regions: RegionSource
                   ) -> tuple[np.ndarray, np.ndarray, Format]:
    image, meta = read_image(scan.path)
    restorer.check(image, meta, scan.path)
    labels = regions.labels(scan, None, image)
    return restorer(image, labels), labels, FORMATS[meta.format]


def _restore_volume(scan: Scan, restorer: Restorer, regions: RegionSource, progress: bool
                    ) -> tuple[np.ndarray, np.ndarray, Format]:
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
    return out, labels, FORMATS[meta.format]


def _regions_failed(name: str, err: Exception, what: str = "scan") -> Outcome:
    return Outcome(name, "failed", f"regions not written (the restored {what} is): {one_line(err)}")


def restore_scans(restorer: Restorer, scans: Iterable[Scan], regions: RegionSource, out_dir: str | Path,
                  save_regions: bool = False, progress: bool = True) -> list[Outcome]:
    """Restore every scan and write it (see the module doc): one Outcome per scan, in order, then one failed
    outcome for each label map (volume) not written although its scan was."""
    out_dir = Path(out_dir)
    scans = list(scans)
    outcomes: dict[int, Outcome] = {}
    extra: list[Outcome] = []
    series: dict[tuple[str, str], list[tuple[int, Scan, np.ndarray, np.ndarray]]] = defaultdict(list)
    was_training = restorer.model.training
    restorer.model.eval()
    with Reporter(len(scans), "restore", progress) as reporter:
        for i, scan in enumerate(scans):
            try:
                target = output_path(out_dir, scan)
                if scan.kind == "image":
                    restored, labels, fmt = _restore_image(scan, restorer, regions)
                    if fmt.series:  # a DICOM file: written with the other files of its series, below
                        header = pydicom.dcmread(scan.path, stop_before_pixels=True)
                        uid = str(header.get("SeriesInstanceUID", ""))
                        series[(str(Path(scan.name).parent), uid)].append((i, scan, restored, labels))
                        continue
                    write_image(target, restored, like=scan.path)    # in its own format

                    def write_regions(target=target, labels=labels, scan=scan) -> None:
                        path = regions_path(target)
                        if by_suffix(path) is NIFTI:      # a NIfTI image's: in its geometry
                            write_label_nifti(path, labels, image_affine(scan.path), scan.path)
                        else:
                            write_image(path, labels, dtype="uint16")
                else:
                    restored, labels, fmt = _restore_volume(scan, restorer, regions, progress)
                    if fmt.series and fmt.folder:  # a DICOM-series folder: a derived series
                        target = out_dir / scan.name
                        write_derived_series(target, dicom_slice_files(scan.path),
                                             [restored[:, :, k] for k in range(restored.shape[2])],
                                             description=restorer.description, derivation=restorer.derivation)
                    else:  # other volumes as NIfTI (multi-frame DICOM too), a NIfTI like its source
                        if by_suffix(target) is not NIFTI:
                            target = target.with_name(f"{target.stem}{NIFTI.suffix}")
                        like = scan.path if fmt is NIFTI else None
                        write_nifti(target, restored, volume_affine(scan.path), like=like)

                    def write_regions(target=target, labels=labels, scan=scan) -> None:
                        write_label_nifti(regions_path(target), labels, volume_affine(scan.path), scan.path)
            except _ERRORS as err:
                outcomes[i] = reporter.add(Outcome(scan.name, "failed", one_line(err)))
                continue
            outcomes[i] = reporter.add(Outcome(scan.name, "done", path=str(target)))
            if save_regions:
                try:
                    write_regions()
                except _ERRORS as err:
                    extra.append(_regions_failed(f"{scan.name} regions", err))
        for (parent, _), members in series.items():
            _write_series(out_dir, parent, members, restorer, save_regions, reporter, outcomes, extra,
                          several=sum(p == parent for p, _ in series) > 1)
    restorer.model.train(was_training)
    return [outcomes[i] for i in range(len(scans))] + extra


def _write_series(out_dir: Path, parent: str, members: list, restorer: Restorer, save_regions: bool,
                  reporter: Reporter, outcomes: dict[int, Outcome], extra: list[Outcome], several: bool
                  ) -> None:
    """One derived series of the restored single DICOM files of one source series."""
    folder = out_dir / parent
    if several:  # other series from the same folder: one subfolder each
        uid = str(pydicom.dcmread(members[0][1].path, stop_before_pixels=True).SeriesInstanceUID)
        folder = folder / f"series-{uid.rsplit('.', 1)[-1]}"
    try:
        written = write_derived_series(folder, [m[1].path for m in members], [m[2] for m in members],
                                       description=restorer.description, derivation=restorer.derivation)
    except _ERRORS as err:
        for i, scan, _, _ in members:
            outcomes[i] = reporter.add(Outcome(scan.name, "failed", one_line(err)))
        return
    note = ""
    if save_regions:
        try:
            note = _write_series_regions(members, written, out_dir)
        except _ERRORS as err:
            first = members[0][1]
            name = first.series or (parent if parent not in ("", ".") else first.name)
            extra.append(_regions_failed(f"{name} regions", err, "series"))
    for k, ((i, scan, _, _), path) in enumerate(zip(members, written, strict=True)):
        outcomes[i] = reporter.add(Outcome(scan.name, "done", note if k == 0 else "", path=str(path)))


def _write_series_regions(members: list, written: list[Path], out_dir: Path) -> str:
    """The label maps of restored files of one DICOM series: one volume of the whole source series (its image
    files in one source folder of the restored ones' size) when it is one (see the module doc), else one file
    each. Returns a note on the volumes written, their slices left at 0 and those left out, or ""."""
    by_folder: dict[Path, list] = defaultdict(list)
    for member, path in zip(members, written, strict=True):
        by_folder[member[1].path.parent].append((member, path))
    notes = []
    for pairs in by_folder.values():
        source = series_of(pairs[0][0][1].path)
        other_size: list[str] = []
        if source is not None:
            source, other_size = same_size(source, pairs[0][0][3].shape)
        stack = None if source is None else series_stack(source, source.folder)
        if stack is None:
            for (_, scan, _, labels), path in pairs:
                write_label_nifti(regions_path(path), labels, image_affine(scan.path), scan.path)
            continue
        restored = {m[1].path.resolve(): m[3] for m, _ in pairs}
        volume = np.zeros(stack.shape, dtype=np.uint32)
        missing = []
        for k, f in enumerate(stack.files):
            if f.resolve() in restored:
                volume[:, :, k] = restored[f.resolve()]
            else:
                missing.append(f.name)
        patient = str(source.headers[0].get("PatientID", "") or "")
        name = safe_stem(f"{patient}_{source.folder.name}") or "series"
        given = pairs[0][0][1].series
        target = (regions_path(out_dir / given) if given is not None
                  else pairs[0][1].parent / f"{name}_regions{NIFTI.suffix}")
        write_label_nifti(target, volume, stack.affine, stack.files[0])
        notes.append(f"regions of the series in {target}")
        if missing:
            notes[-1] += (f"; slices not restored (0 in the volume), {len(missing)} of {len(stack.files)}: "
                          + ", ".join(missing))
        if other_size:
            notes[-1] += f"; slices of another size, not in the volume: {', '.join(other_size)}"
    return "; ".join(notes)
