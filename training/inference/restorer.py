"""A trained model ready to restore whole images in source units, with what it knows about its data.

:func:`load_restorer` reads a checkpoint (a run's, an exported model folder, or a bare state dict with
``dataset``/``group`` named) and returns a :class:`Restorer`: the model on its device, the dataset group it
was trained on (normalisation, channels, modality), the region generator and SAM window it was trained with,
and the SHA-256 of its weights (named in the files it writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rat.shared import DISTRIBUTION
from rat.shared.datasets import DatasetDef, Group, Window, channel_count, load_dataset, pick_group
from rat.shared.datasets.definition import range_problem
from rat.shared.devices import pick_device
from rat.shared.errors import ParamError
from rat.shared.io import ImageMeta, ImageReadError
from rat.shared.io.base import describe_channels
from rat.training.checkpoint import checkpoint_dataset, model_from_checkpoint, weights_sha256
from rat.training.choices import OVERLAP, TILE
from rat.training.inference.tiling import model_labels, predict
from rat.training.model.registry import takes_labels
from rat.training.model_folder import load_model_source
from rat.training.normalisation import channels_first, normalise, to_source

#: DICOM Modality codes of the modalities a dataset group may name.
DICOM_MODALITIES = {"CT": "CT", "PET": "PT", "PT": "PT", "MR": "MR", "MRI": "MR"}


@dataclass
class Restorer:
    """A model and its data conventions: ``restorer(image, labels)`` restores one image in source units."""

    model: nn.Module
    dataset: DatasetDef
    group: Group
    weights_sha256: str
    generator: dict[str, Any] | None = None  # provenance of the regions it was trained on
    window: Window | None = None  # the SAM window of its group
    name: str = "RAT"
    tile: int = TILE
    overlap: int = OVERLAP
    autocast: torch.dtype | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_labels(self) -> bool:
        """Whether the model takes label maps (region-free models and RAT's ablations do not)."""
        return takes_labels(self.model)

    @property
    def description(self) -> str:
        """What restored DICOM series are called: the model and its weights' hash (64 characters at most)."""
        return f"{self.name} restored {self.weights_sha256[:12]}"[:64]

    @property
    def derivation(self) -> str:
        prov = self.meta.get("model") or {}
        if prov and prov.get("package") not in (DISTRIBUTION, "rat"):
            where = f"{prov.get('class')}, {prov.get('package')} {prov.get('version')}"
            return (f"Restored by {self.name} ({where}) trained with rat, {self.dataset.name}/"
                    f"{self.group.name} model, weights SHA-256 "
                    f"{self.weights_sha256}")
        return (f"Restored by the Region Attention Transformer (rat), {self.dataset.name}/{self.group.name} "
                f"model, weights SHA-256 {self.weights_sha256}")

    def check(self, image: np.ndarray, meta: ImageMeta, path: str | Path) -> None:
        """ImageReadError naming the file when it is not what the model restores (channels, modality, values
        outside its group's declared range unless it clips them: ``meta.value_range`` is of the whole
        file, a volume's included)."""
        channels = channel_count(image.shape)
        if channels != self.group.channels:
            raise ImageReadError(path, f"{describe_channels(image.shape, meta)}, but the model restores "
                                 f"{self.group.channels}-channel {self.group.modality} images")
        expected = DICOM_MODALITIES.get(self.group.modality.upper())
        found = (meta.modality or "").upper()    # only files that record it (DICOM) have one
        if found and found != expected and (expected is not None or found in DICOM_MODALITIES.values()):
            raise ImageReadError(path, f"DICOM modality {found}, but the model restores "
                                 f"{self.group.modality} images")
        problem = range_problem(self.group, *meta.value_range)
        if problem is not None:
            raise ImageReadError(path, problem.replace("set the group's value_range, or clip_values = true",
                                                       "pass --clip-values", 1))

    @torch.no_grad()
    def __call__(self, image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """image (H, W) or (H, W, C) in source units, labels (H, W) -> restored, same shape, source units,
        clipped to the group's normalisation range."""
        x = torch.as_tensor(normalise(channels_first(image), self.group))
        lab = None if labels is None else model_labels(self.model, labels)
        restored = predict(self.model, x, lab, self.tile, self.overlap, autocast=self.autocast)
        return to_source(restored, self.group)


def load_restorer(checkpoint: str | Path, *, dataset: str | None = None, group: str | None = None,
                  model_name: str = "rat", attention: str | None = None, backend: str = "auto",
                  device: str = "auto", tile: int = TILE, overlap: int = OVERLAP, bf16: bool = False,
                  clip_values: bool = False) -> Restorer:
    """The restorer of a checkpoint or model folder (see the module doc). ``dataset`` and ``group`` name
    the data for checkpoints that do not (bare state dicts), or pick a group of a several-group dataset.
    ``clip_values``: clip input values outside the group's declared range instead of refusing the input."""
    ck = load_model_source(checkpoint)
    ds = load_dataset(dataset) if dataset else checkpoint_dataset(ck)
    if ds is None:
        raise ParamError("dataset", f"{checkpoint} does not say what data it was trained on: name it")
    trained = (ck.get("data") or {}).get("group") or (ck.get("config") or {}).get("group")
    grp = pick_group(ds, group or trained)
    if clip_values:
        grp = replace(grp, clip_values=True)
    model = model_from_checkpoint(ck, name=model_name, attention=attention, backend=backend,
                                  source=checkpoint)
    channels = ck["model_args"]["img_channel"] if "model_args" in ck else model.intro.in_channels
    if channels != grp.channels:
        raise ParamError("group", f"{checkpoint}: model takes {channels} channel(s), group {grp.name!r} has "
                         f"{grp.channels}")
    model.to(pick_device(device)).eval()
    if not 0 <= overlap < tile:
        raise ParamError("overlap", f"{overlap}: must be smaller than the tile ({tile})")
    prov: Mapping[str, Any] = ck.get("provenance") or {}
    recorded = (prov.get("windows") or {}).get(grp.name)
    window = Window(recorded["kind"], recorded["low"], recorded["high"]) if recorded else grp.sam_window
    return Restorer(model=model, dataset=ds, group=grp, weights_sha256=weights_sha256(ck["model"]),
                    generator=prov.get("generator"), window=window,
                    name=ck["model_args"]["name"] if "model_args" in ck else model_name, tile=tile,
                    overlap=overlap, autocast=torch.bfloat16 if bf16 else None,
                    meta={"step": ck.get("step"), "bare": bool(ck.get("bare")),
                          "config": ck.get("config") or {}, "source": str(checkpoint),
                          "model": (ck.get("model_args") or {}).get("provenance") or {}})
