"""Label maps as NIfTI files with the geometry of their source images, for ITK-SNAP and 3D Slicer.

A 2-D image gives one ``<out>/<id>.nii.gz``; the slices of one volume (NIfTI, DICOM series) are put back
together into one ``<out>/<volume>.nii.gz`` of the volume's shape (slices the index left out, e.g. air-only,
are 0). The affine is that of the source image (:mod:`rat.shared.io.geometry`), so the label map lies on
the image in a viewer. NIfTI sources keep their voxel order; DICOM, PNG and TIFF sources are written in
the (column, row) order ITK reads those files in, so ITK-SNAP accepts the label map as a segmentation of
the source image. Label values are uint16 (ITK-SNAP's label type) or uint32.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from rat.shared import store as st
from rat.shared.errors import one_line
from rat.shared.index import Entry, source_path
from rat.shared.io import ImageReadError, image_affine, to_itk_order, volume_affine, volume_shape, write_nifti
from rat.shared.jobs import Outcome, run_each


def _itk_order(path: Path) -> bool:
    """Whether ITK reads this format with rows and columns swapped relative to our arrays (all but NIfTI)."""
    return not path.name.lower().endswith((".nii", ".nii.gz"))


def volume_name(entry: Entry) -> str:
    """Output name of an entry: its id, or for a volume slice the id of its volume (without ``_<slice>``)."""
    return entry.id if entry.slice is None else entry.id.rsplit("_", 1)[0]


def export_one(group, name: str, entries: list[Entry], root: str | Path, out_dir: str | Path) -> Outcome:
    """Write the label map (2-D) or the reassembled label volume of ``entries`` (one source file)."""
    first = entries[0]
    target = Path(out_dir) / f"{name}.nii.gz"
    try:
        source = source_path(root, first.lq)
        if not source.exists():
            raise ImageReadError(source, "file not found (the geometry comes from the source image)")
        if first.slice is None:
            labels = st.read_labels(group, first.id)
            affine = image_affine(source)
        else:
            shape = volume_shape(source)[:3]
            labels = np.zeros(shape, dtype=np.uint32)
            for e in entries:
                index = [slice(None)] * 3
                index[e.axis % 3] = e.slice
                labels[tuple(index)] = st.read_labels(group, e.id)
            affine = volume_affine(source)
        if _itk_order(source):
            labels, affine = to_itk_order(labels, affine)
        write_nifti(target, labels, affine)
    except (st.StoreError, ImageReadError, ValueError, OSError) as err:
        return Outcome(name, "failed", one_line(err))
    return Outcome(name, "done", path=str(target))


def export_nifti(group, entries: list[Entry], root: str | Path, out_dir: str | Path,
                 progress: bool = True) -> list[Outcome]:
    """One NIfTI file per 2-D image and per volume of ``entries`` (see the module doc); one Outcome each."""
    by_name: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_name[volume_name(e)].append(e)
    return run_each(sorted(by_name), lambda n: export_one(group, n, by_name[n], root, out_dir), "NIfTI",
                    progress)
