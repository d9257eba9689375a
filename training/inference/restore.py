"""Restoration of a dataset split: whole images restored and written in their source format and dtype."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from rat.shared.batch import Outcome, run_each
from rat.shared.datasets import Group
from rat.shared.errors import one_line
from rat.shared.index import Entry
from rat.shared.locate import source_path
from rat.training.inference.scores import to_source
from rat.training.inference.tiling import model_labels, predict
from rat.training.options import OVERLAP, TILE


def restored_path(entry: Entry, out_dir: str | Path) -> Path:
    """Where :func:`restore` writes an entry: ``<out>/<group>/<id><LQ suffix>`` for 2-D files (JPEG
    as PNG: no lossy re-encoding); volume slices (NIfTI, DICOM series, multi-frame) as ``<id>.tif``."""
    suffix = Path(entry.lq).suffix.lower()
    if entry.slice is not None or suffix not in (".png", ".tif", ".tiff", ".dcm", ".jpg", ".jpeg"):
        suffix = ".tif"
    elif suffix in (".jpg", ".jpeg"):
        suffix = ".png"
    return Path(out_dir) / entry.group / f"{entry.id}{suffix}"


def restore_entry(model: nn.Module, entry: Entry, root: str | Path, store, group: Group, out_dir: str | Path,
                  tile: int = TILE, overlap: int = OVERLAP, autocast: torch.dtype | None = None,
                  cache: str | Path | None | bool = None) -> Outcome:
    """Restore one entry and write it (see :func:`restored_path`); a failure is an Outcome, not raised."""
    from rat.shared.io import write_image
    from rat.training.data import load_full

    try:
        lq, _, labels = load_full(store, entry, root, group, cache)
        restored = predict(model, torch.as_tensor(lq), model_labels(model, labels), tile, overlap,
                           autocast=autocast)
        target = restored_path(entry, out_dir)
        if entry.slice is None:  # the LQ file is the template: format, dtype, DICOM tags
            write_image(target, to_source(restored, group), like=source_path(root, entry.lq))
        else:  # a slice of a volume: float32 TIFF in source units
            write_image(target, to_source(restored, group), dtype="float32")
    except (ValueError, OSError, RuntimeError) as err:
        return Outcome(entry.id, "failed", one_line(err))
    return Outcome(entry.id, "done", path=str(target))


def restore(model: nn.Module, entries: Iterable[Entry], root: str | Path, store, group: Group,
            out_dir: str | Path, tile: int = TILE, overlap: int = OVERLAP,
            autocast: torch.dtype | None = None, progress: bool = True) -> list[Outcome]:
    """Restore every entry and write it in its source format and dtype (see :func:`restored_path`).

    DICOM keeps the LQ file's tags with new pixel data; PNG/TIFF keep the LQ file's bit depth.
    Values are clipped to the group's normalisation range. A failing image is reported in its
    :class:`~rat.shared.batch.Outcome` and the others go on.
    """
    was_training = model.training
    model.eval()
    try:
        return run_each(list(entries), lambda e: restore_entry(model, e, root, store, group, out_dir, tile,
                                                               overlap, autocast), "restore", progress)
    finally:
        model.train(was_training)
