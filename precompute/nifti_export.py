"""Label maps as NIfTI files with the geometry of their scans, for ITK-SNAP and 3D Slicer.

One file per scan, as viewers open the scans (the rules are :mod:`rat.shared.io.label_volumes`'):

- DICOM series: the label maps of 2-D DICOM images whose files are slices of one series (one folder, one
  SeriesInstanceUID, positions at two or more places) become one volume ``<out>/<series>_regions.nii.gz`` with
  the series' geometry as ITK reads it. ``<series>`` is the series folder relative to the data root
  (``L001/quarter_dose`` -> ``L001_quarter_dose``), plus the series' description (else its number, else the
  end of its UID) when the folder holds several series. Slices of the series without a label map among the
  exported ones (another split, not computed) are 0 and listed in the outcome's note. A series with several
  orientations, gantry tilt, a gap or uneven spacing fails with one line naming it (and the option
  ``--per-slice``, ``per_slice`` here, which writes one file per slice instead).
- Volumes indexed slice by slice (NIfTI, DICOM series folders, multi-frame DICOM): one
  ``<out>/<volume>.nii.gz`` of the volume's shape (slices the index left out, e.g. air-only, are 0).
- Single 2-D images (a DICOM file that is no slice of a series, PNG, TIFF; every DICOM image with
  ``per_slice``): ``<out>/<id>.nii.gz``, a one-slice volume at the image's place.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from rat.shared import store as st
from rat.shared.errors import one_line
from rat.shared.index import Entry, source_path
from rat.shared.io import ImageReadError, image_affine, volume_affine, volume_shape
from rat.shared.io.formats import NIFTI
from rat.shared.io.label_volumes import (
    Series,
    SeriesStack,
    folder_series,
    is_dicom_file,
    safe_stem,
    series_stack,
    write_label_nifti,
)
from rat.shared.jobs import Outcome, run_each

_ERRORS = (st.StoreError, ImageReadError, ValueError, OSError)


@dataclass(frozen=True)
class Export:
    """One file to write: ``kind`` "image" (one 2-D entry), "volume" (the indexed slices of one volume file)
    or "series" (the entries of one DICOM series, stacked as ``stack``, or ``refused`` with one line)."""

    name: str
    kind: str
    entries: tuple[Entry, ...]
    stack: SeriesStack | None = None
    refused: str = ""


def volume_name(entry: Entry) -> str:
    """Output name of an entry: its id, or for a volume slice the id of its volume (without ``_<slice>``)."""
    return entry.id if entry.slice is None else entry.id.rsplit("_", 1)[0]


def plan_exports(entries: list[Entry], root: str | Path, per_slice: bool = False) -> list[Export]:
    """The files to write for ``entries`` (see the module doc), sorted by name. Reads the DICOM headers of the
    folders that hold 2-D DICOM entries (pixels not read)."""
    volumes: dict[str, list[Entry]] = defaultdict(list)
    dicom: dict[PurePosixPath, list[Entry]] = defaultdict(list)
    plan: list[Export] = []
    for e in entries:
        if e.slice is not None:
            volumes[volume_name(e)].append(e)
        elif not per_slice and is_dicom_file(source_path(root, e.lq)):
            dicom[PurePosixPath(e.lq).parent].append(e)
        else:
            plan.append(Export(e.id, "image", (e,)))
    plan += [Export(name, "volume", tuple(members)) for name, members in volumes.items()]
    for folder, members in dicom.items():
        plan += _series_exports(folder, members, root)
    return sorted(plan, key=lambda x: x.name)


def _series_exports(folder: PurePosixPath, entries: list[Entry], root: str | Path) -> list[Export]:
    """Exports of the 2-D DICOM entries of one folder: one per series that is a volume, one per image else."""
    hq = {source_path(root, e.hq) for e in entries if e.hq}  # HQ files beside the LQ: slices of none
    try:
        found = folder_series(source_path(root, folder.as_posix()), exclude=hq)
    except OSError:  # a missing folder: each image fails on its own
        found = []
    series_by_file = {f: s for s in found for f in s.files}
    by_series: dict[str, list[Entry]] = defaultdict(list)
    plan = []
    for e in entries:
        s = series_by_file.get(source_path(root, e.lq))
        if s is None:  # unreadable or missing: fails with its own reason
            plan.append(Export(e.id, "image", (e,)))
        else:
            by_series[s.uid].append(e)
    used = [s for s in found if s.uid in by_series]
    names = _series_names(folder, used)
    for s in used:
        members = tuple(by_series[s.uid])
        label = folder.as_posix() if len(used) == 1 else f"{folder.as_posix()} (series {s.uid})"
        try:
            stack = series_stack(s, label)
        except ImageReadError as err:
            refused = f"{one_line(err)}; --per-slice writes its slices one file each"
            plan.append(Export(names[s.uid], "series", members, refused=refused))
            continue
        if stack is None:  # separate images (all at one place, or no positions)
            plan += [Export(e.id, "image", (e,)) for e in members]
        else:
            plan.append(Export(names[s.uid], "series", members, stack))
    return plan


def _series_names(folder: PurePosixPath, series: list[Series]) -> dict[str, str]:
    """Output names of the series of one folder: the folder's path, joined by "_"; with several series, each
    adds its description, else number, else UID (the UID's end when descriptions or numbers repeat)."""
    base = "_".join(safe_stem(p) for p in folder.parts if p not in ("", ".", "/")) or "series"
    if len(series) == 1:
        return {series[0].uid: base}
    tags = {}
    for s in series:
        ds = s.headers[0]
        number = ds.get("SeriesNumber")
        tag = str(ds.get("SeriesDescription", "") or (f"series{number}" if number is not None else s.uid))
        tags[s.uid] = safe_stem(tag) or "series"
    if len(set(tags.values())) < len(tags):
        tags = {uid: f"{tag}_{uid.rsplit('.', 1)[-1]}" for uid, tag in tags.items()}
    return {uid: f"{base}_{tag}" for uid, tag in tags.items()}


def export_one(store, job: Export, root: str | Path, out_dir: str | Path) -> Outcome:
    """Write the file of one :class:`Export`; an Outcome ("done" with the path and, for series with slices
    left at 0, a note; or "failed" with one line)."""
    if job.refused:
        return Outcome(job.name, "failed", job.refused)
    try:
        if job.kind == "series":
            return _write_series(store, job, root, Path(out_dir) / f"{job.name}_regions{NIFTI.suffix}")
        target = Path(out_dir) / f"{job.name}{NIFTI.suffix}"
        first = job.entries[0]
        source = source_path(root, first.lq)
        if not source.exists():
            raise ImageReadError(source, "file not found (the geometry comes from the source image)")
        if job.kind == "image":
            labels, affine = st.read_labels(store, first.id), image_affine(source)
        else:
            labels = np.zeros(volume_shape(source)[:3], dtype=np.uint32)
            for e in job.entries:
                index = [slice(None)] * 3
                index[e.axis % 3] = e.slice
                labels[tuple(index)] = st.read_labels(store, e.id)
            affine = volume_affine(source)
        write_label_nifti(target, labels, affine, source)
    except _ERRORS as err:
        return Outcome(job.name, "failed", one_line(err))
    return Outcome(job.name, "done", path=str(target))


def _write_series(store, job: Export, root: str | Path, target: Path) -> Outcome:
    stack = job.stack
    by_file = {source_path(root, e.lq): e for e in job.entries}
    labels = np.zeros(stack.shape, dtype=np.uint32)
    missing = []
    for k, f in enumerate(stack.files):
        e = by_file.get(f)
        if e is None or st.record(store, e.id) is None:
            missing.append(f.name)
            continue
        labels[:, :, k] = st.read_labels(store, e.id)
    write_label_nifti(target, labels, stack.affine, stack.files[0])
    note = ""
    if missing:
        note = (f"slices without a label map here (0 in the volume), {len(missing)} of {len(stack.files)}: "
                + ", ".join(missing))
    return Outcome(job.name, "done", note, path=str(target))


def export_nifti(store, entries: list[Entry], root: str | Path, out_dir: str | Path, progress: bool = True,
                 per_slice: bool = False) -> list[Outcome]:
    """One NIfTI file per scan of ``entries`` (see the module doc); one Outcome each, sorted by name."""
    plan = plan_exports(entries, root, per_slice)
    return run_each(plan, lambda job: export_one(store, job, root, out_dir), "NIfTI", progress)
