"""Evaluation on whole test images: restore each (tiled) and score it against its HQ image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from rat.shared.datasets import Group
from rat.shared.index import Entry
from rat.training.choices import OVERLAP, TILE
from rat.training.data import load_full
from rat.training.inference.scores import Score, score_image
from rat.training.inference.tiling import model_labels, predict


def evaluate(model: nn.Module, entries: Sequence[Entry], root: str | Path, store, group: Group,
             tile: int = TILE, overlap: int = OVERLAP, autocast: torch.dtype | None = None,
             progress: bool = False, cache: str | Path | None | bool = None, check: bool = True
             ) -> list[Score]:
    """Restore and score every entry (whole images, tiled): one :class:`Score` per image.

    ``store``: the open label store; images come from an image cache (folder ``cache``; False: none) when
    it holds them, else from the files under ``root``. ``check``: check each label map's bytes against its
    SHA-256 (a training run, which checked them before its first step, passes False).
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    scores = []
    try:
        for entry in tqdm(entries, desc="eval", unit="img", disable=not progress, leave=False):
            lq, hq, labels = load_full(store, entry, root, group, cache, check=check)
            restored = predict(model, torch.as_tensor(lq), model_labels(model, labels), tile, overlap,
                               autocast=autocast)
            scores.append(score_image(entry.id, torch.as_tensor(lq), torch.as_tensor(hq), restored, group))
    finally:
        model.train(was_training)
    return scores
