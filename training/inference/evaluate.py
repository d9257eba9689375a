"""Evaluation on whole images: restore each (tiled) and score it against its HQ image; a split of a store.

The test split is what `eval` and `compare` score: once, after training, never to choose a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rat.shared import store as st
from rat.shared.datasets import Group
from rat.shared.errors import ParamError
from rat.shared.index import Entry, select_entries
from rat.shared.index.select import entry_unit
from rat.training.choices import OVERLAP, TILE
from rat.training.data import load_full
from rat.training.inference.restorer import Restorer
from rat.training.inference.scores import Score, score_image
from rat.training.inference.tiling import model_labels, predict
from rat.training.run import recorded_location


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
            unit = entry_unit(group, entry)
            scores.append(score_image(entry.id, torch.as_tensor(lq), torch.as_tensor(hq), restored, group,
                                      "" if unit == entry.id else unit))
    finally:
        model.train(was_training)
    return scores


@dataclass
class SplitScores:
    """The images of a split a model was scored on, where they came from, and the scores."""

    store: Any
    entries: list[Entry]
    root: Path
    scores: list[Score]


def split_entries(restorer: Restorer, masks: str | None = None, split: str = "test",
                  dataset: str | None = None, root: str | Path | None = None, index: str | Path | None = None,
                  shard: str | None = None, limit: int | None = None) -> tuple[Any, list[Entry], Path]:
    """(open store, entries, data root) of a split of the model's own group: its recorded store and data
    unless others are named (found from any working directory: :func:`rat.training.run.recorded_location`);
    the label maps checked (StoreError naming every problem)."""
    saved = restorer.meta["config"]

    def recorded(key: str) -> str | None:
        value = saved.get(key)
        source = restorer.meta.get("source")
        return recorded_location(value, source, saved.get("out")) if value and source else value

    masks = masks or recorded("masks")
    if not masks:
        raise ParamError("masks", "is required (the checkpoint does not name a label store)")
    store = st.open_store(masks)
    _, index_entries, data_root = st.dataset_for(store, dataset or saved.get("dataset"),
                                                 root or recorded("root"), index or recorded("index"))
    entries = select_entries(index_entries, split, group=restorer.group.name, shard=shard, limit=limit)
    if not entries:
        raise ParamError("split", f"no {split} images of group {restorer.group.name!r} in the index of "
                         f"{masks}")
    st.check_labels(store, entries, str(masks))
    return store, entries, data_root


def evaluate_split(restorer: Restorer, masks: str | None = None, split: str = "test", progress: bool = False,
                   **where: Any) -> SplitScores:
    """Score a model on a split of its store (see :func:`split_entries`): one Score per image."""
    store, entries, root = split_entries(restorer, masks, split, **where)
    scores = evaluate(restorer.model, entries, root, store, restorer.group, restorer.tile, restorer.overlap,
                      autocast=restorer.autocast, progress=progress)
    return SplitScores(store, entries, root, scores)
