"""Where the regions of a scan to restore come from: a label store, or the model's own region generator.

In order: a dataset split's label maps by id; else, with a store given, the label map made from the same
LQ bytes (SHA-256, and slice for volumes); else computed on the fly with the generator, parameters and SAM
window recorded with the model. SAM's weights must then be the ones it was trained with (their SHA-256 is
checked). Another generator is used only when asked for, with a note that the model was trained on other
regions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rat.shared import store as st
from rat.shared.errors import ParamError
from rat.shared.index.hash_cache import source_sha256
from rat.shared.regions import Generator, GeneratorError, build_generator, describe, image_labels
from rat.shared.regions.options import generator_kwargs
from rat.shared.regions.sam_config import SamError
from rat.training.inference.inputs import Scan
from rat.training.inference.restorer import Restorer


def trained_generator(recorded: dict[str, Any] | None, *, name: str | None = None,
                      sam_checkpoint: str | Path | None = None, device: str = "auto"
                      ) -> tuple[Generator, str]:
    """The region generator a model was trained with (provenance ``recorded``), or ``name`` when asked for.

    Returns (generator, note): the note says when the regions differ from the training ones. Weights of a
    generator that takes a checkpoint (``sam_checkpoint`` or RAT_SAM_CHECKPOINT) whose SHA-256 is not the
    recorded one are refused.
    """
    if recorded is None and name is None:
        raise ParamError("generator", "the model records no region generator: name one (and a label store or "
                         "dataset for its window)")
    if name is not None and (recorded is None or name != recorded.get("name")):
        trained = recorded.get("name") if recorded else "unknown"
        note = f"note: regions from {name}, but the model was trained on {trained} regions"
        return build_generator(name, **generator_kwargs(name, checkpoint=sam_checkpoint, device=device)), note
    name, checkpoint = recorded["name"], None
    if "checkpoint_sha256" in recorded:
        info = describe(name)
        checkpoint = info.checkpoint_path(sam_checkpoint)
        if checkpoint is None:
            raise GeneratorError(f"the model's regions come from {name}, which needs the "
                                 f"{info.weights_label} weights the model was trained with: pass them")
        digest = source_sha256(checkpoint)
        if digest != recorded["checkpoint_sha256"]:
            raise SamError(f"{checkpoint}: SHA-256 {digest} is not that of the {info.weights_label} weights "
                           f"the model was trained with ({recorded['checkpoint_sha256']})")
    kwargs = generator_kwargs(name, checkpoint=checkpoint, device=device if checkpoint else None,
                              model_type=recorded.get("model_type") if checkpoint else None,
                              params=recorded.get("params", {}))
    return build_generator(name, **kwargs), ""


class RegionSource:
    """Label maps of the scans to restore (see the module doc)."""

    def __init__(self, restorer: Restorer, store: Any = None, generator: str | None = None,
                 sam_checkpoint: str | Path | None = None, device: str = "auto", save: bool = False) -> None:
        self.restorer, self.store = restorer, store
        #: whether label maps are made at all: for a model that takes them, or to be saved (a region-free
        #: model otherwise gets none, and no generator is built)
        self.needed = restorer.uses_labels or save
        self.name, self.sam_checkpoint, self.device = generator, sam_checkpoint, device
        self._generator: Generator | None = None
        self.notes: list[str] = []
        self._by_source: dict[tuple[str, int | None, int | None], str] = {}
        if store is not None:
            for e in st.store_index(store) or []:
                self._by_source[(e.sha256, e.slice, None if e.slice is None else e.axis % 3)] = e.id

    def generator(self) -> Generator:
        """The generator, built on first use (loading SAM takes seconds)."""
        if self._generator is None:
            self._generator, note = trained_generator(self.restorer.generator, name=self.name,
                                                      sam_checkpoint=self.sam_checkpoint, device=self.device)
            if note:
                self.notes.append(note)
        return self._generator

    def labels(self, scan: Scan, index: int | None, image: np.ndarray) -> np.ndarray:
        """The (H, W) label map of ``image``: slice ``index`` of ``scan`` (None for a 2-D image); all 0 (no
        region) when none is :attr:`needed`."""
        if not self.needed:
            return np.zeros(image.shape[:2], dtype=np.uint32)
        image_id = scan.ids.get(index)
        if image_id is None and self._by_source:
            key = (source_sha256(scan.path), index, None if index is None else scan.axis % 3)
            image_id = self._by_source.get(key)
            if image_id is not None and st.record(self.store, image_id) is None:
                image_id = None
        if image_id is not None:
            labels = st.read_labels(self.store, image_id)
            if labels.shape != image.shape[:2]:
                raise st.StoreError(f"{image_id}: label map {labels.shape} does not fit image {image.shape}")
            return labels
        window = self.restorer.window or self.restorer.group.sam_window
        return image_labels(self.generator(), image, window, scan.name if index is None else
                            f"{scan.name} slice {index}")
