"""What `rat-train restore` is asked to restore: scans from the command line or from a dataset split.

A :class:`Scan` is one 2-D image file (PNG, JPEG, TIFF, a single-frame DICOM, a 2-D NIfTI) or one volume
(a NIfTI volume, a multi-frame DICOM, a dataset's DICOM-series folder) restored slice by slice along ``axis``.
Command-line inputs may be files, folders (searched recursively) or glob patterns.

The series-folder rule: the DICOM files of a folder are restored one by one and written back grouped by
their series (:mod:`rat.training.inference.restore_scans`), so a file that cannot be restored (unreadable,
truncated) is named and the rest of its series is restored and written as one derived series. Files that hold
no image (a DICOMDIR, structured reports and other documents) are skipped with a note. Only a model that cuts
volumes along another axis than the slices (``axis`` 0 or 1) reads a one-series folder as one volume, which
needs all its image slices. Inputs that cannot be used are returned as failed or skipped outcomes (one line
each), not raised: the others go on.
"""

from __future__ import annotations

import glob
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rat.shared.errors import one_line
from rat.shared.index import Entry
from rat.shared.index.locate import source_path
from rat.shared.io import ImageReadError, is_volume
from rat.shared.io.dicom import dicom_survey
from rat.shared.io.formats import detect, is_image, suffix_of
from rat.shared.jobs import Outcome

_GLOB = set("*?[")


@dataclass
class Scan:
    """One input. name: its output path relative to the output folder; ids: label-map ids in a store by
    slice (None for a 2-D image), for a dataset split; slices: the slices to restore (None: all); series: the
    name of the series folder given as input that this DICOM file belongs to (its regions volume is named
    after it), else None."""

    path: Path
    kind: str  # "image" | "volume"
    name: str
    axis: int = 2
    ids: dict[int | None, str] = field(default_factory=dict)
    slices: list[int] | None = None
    series: str | None = None


def _kind(path: Path) -> str:
    """"volume" for 3-D NIfTI, multi-frame DICOM and DICOM-series folders, else "image" (headers only)."""
    return "volume" if is_volume(path) else "image"


def collect_scans(inputs: list[str], volume_axis: int = 2) -> tuple[list[Scan], list[Outcome]]:
    """Scans of command-line inputs (see the module doc), and a failed outcome for each input that cannot be
    used, a skipped one (with the reason) for each DICOM file that holds no image."""
    scans: list[Scan] = []
    others: list[Outcome] = []

    def survey(path: Path, base: Path) -> str | None:
        """A DICOM image file's SeriesInstanceUID; None, with its outcome, for the others."""
        name = path.relative_to(base).as_posix()
        try:
            skip, uid = dicom_survey(path)
        except (ImageReadError, OSError) as err:
            others.append(Outcome(name, "failed", one_line(getattr(err, "reason", err))))
            return None
        if skip is not None:
            others.append(Outcome(name, "skipped", skip))
            return None
        return uid

    def add_file(path: Path, base: Path, series: str | None = None, surveyed: bool = False) -> None:
        if _is_dicom_member(path) and not surveyed and survey(path, base) is None:
            return
        name = path.relative_to(base).as_posix()
        try:
            kind = _kind(path)
        except (ImageReadError, OSError, ValueError) as err:
            others.append(Outcome(name, "failed", one_line(getattr(err, "reason", err))))
            return
        scans.append(Scan(path, kind, name, volume_axis, series=series))

    def add_folder(folder: Path, base: Path) -> None:
        files = [f for f in sorted(folder.iterdir()) if not f.name.startswith(".") and is_image(f)]
        uids = {f: survey(f, base) for f in files if _is_dicom_member(f)}
        images = [f for f in files if f not in uids or uids[f] is not None]
        dicoms = [f for f in images if f in uids]
        series = folder.relative_to(base).as_posix() if len({uids[f] for f in dicoms}) == 1 else None
        if series is not None and volume_axis != 2 and len(dicoms) > 1:   # cut across the slices: a volume
            scans.append(Scan(folder, "volume", series, volume_axis))
            images = [f for f in images if f not in dicoms]
        for f in images:
            add_file(f, base, series if f in uids else None, surveyed=True)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            add_folder(sub, base)

    for text in inputs:
        if _GLOB & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            base = Path(text.split("*")[0].split("?")[0].split("[")[0]).parent if matches else Path(".")
            if not matches:
                others.append(Outcome(text, "failed", "no file matches this pattern"))
        else:
            matches, base = [Path(text)], Path(text).parent
        for path in matches:
            if not path.exists():
                others.append(Outcome(str(path), "failed", "no such file or directory"))
            elif path.is_dir():
                add_folder(path, base)
            else:
                add_file(path, base)
    return scans, others


def _is_dicom_member(path: Path) -> bool:
    """Whether ``path`` is a file of a DICOM series (restored with the other files of its series)."""
    fmt = detect(path)
    return fmt is not None and fmt.series and not fmt.folder


def scans_of_entries(entries: list[Entry], root: str | Path) -> list[Scan]:
    """Scans of a dataset split: one per 2-D entry, one per volume (its indexed slices), named
    ``<group>/<id><suffix>`` (volumes: the id of the volume, without the slice number)."""
    scans: list[Scan] = []
    volumes: dict[tuple[str, int], list[Entry]] = defaultdict(list)
    for e in entries:
        path = source_path(root, e.lq)
        if e.slice is None:
            scans.append(Scan(path, "image", f"{e.group}/{e.id}{suffix_of(path)}", ids={None: e.id}))
        else:
            volumes[(e.lq, e.axis)].append(e)
    for (lq, axis), members in volumes.items():
        path = source_path(root, lq)
        base = members[0].id.rsplit("_", 1)[0]
        ids = {e.slice: e.id for e in members}
        scans.append(Scan(path, "volume", f"{members[0].group}/{base}{suffix_of(path)}", axis, ids,
                          sorted(ids)))
    return scans
