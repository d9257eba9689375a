"""Training data: whole images and random aligned patches, normalised, with their label maps.

Label maps come from the label store, LQ and HQ from the local image cache (:mod:`rat.shared.image_cache`,
filled by `rat-train` on first use or ahead of time by `rat-precompute cache`); only the patch window is read
from these chunked arrays. Without a cache the dataset decodes the whole LQ and HQ source files for every
patch: correct, but slow for large images (see ``benchmarks/bench_patches.py``).

The images a run uses are checked once before its first step (:func:`rat.shared.store.check_for_training`);
what is read here is what passed: a label map is served only when its record says it was made from the
entry's LQ bytes (:func:`rat.shared.store.checked_labels`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from rat.shared import store as st
from rat.shared.datasets import Group, channel_count
from rat.shared.image_cache import ImageCache
from rat.shared.index import Entry, read_hq, read_lq
from rat.training.normalisation import channels_first, normalise


def check_channels(entry: Entry, group: Group) -> None:
    """ValueError naming the image when its channel count is not the group's."""
    if channel_count(entry.shape) != group.channels:
        raise ValueError(f"{entry.id}: {channel_count(entry.shape)} channel(s), but group {group.name!r} has "
                         f"{group.channels}")


def cached_arrays(entry: Entry, cache: str | Path | None | bool = None) -> tuple[Any, Any] | None:
    """(lq, hq) chunked arrays of an entry in the local image cache (folder ``cache``; False: none), else
    None."""
    return None if cache is False else ImageCache(cache or None).arrays(entry)


def load_full(store: zarr.Group, entry: Entry, root: str | Path, group: Group,
              cache: str | Path | None | bool = None, check: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One whole image: lq (C, H, W) and hq (C, H, W) float32 normalised, labels (H, W) int64.

    Images come from the image cache when it holds them, else from the source files under ``root``;
    labels from the store, only when made from the entry's LQ bytes, and (with ``check``) after their bytes
    are checked against the recorded SHA-256 (a run that checked them before its first step passes False).
    """
    check_channels(entry, group)
    st.checked_labels(store, entry)
    labels = st.read_labels(store, entry.id, check=check).astype(np.int64)
    arrays = cached_arrays(entry, cache)
    if arrays is not None:
        lq, hq = arrays[0][...], arrays[1][...]
    else:
        lq, hq = read_lq(entry, root)[0], read_hq(entry, root)[0]
    return normalise(channels_first(lq), group), normalise(channels_first(hq), group), labels


class PatchDataset(Dataset):
    """Random aligned (LQ, HQ, labels) patches of one group's images, deterministic in (seed, i). It holds the
    label store's location, not the opened store: every process that draws patches (the trainer's, each
    DataLoader worker) reopens the store from ``url`` once, read-only.

    Sample i draws, from ``np.random.default_rng((seed, i))`` and in this order: the image (uniform over
    `entries`), the top and left offsets (uniform), the rot90 count k in 0..3 and a horizontal flip. With
    `augment` the same rot90 then flip is applied to LQ, HQ and labels; without it they are drawn but not
    applied (same windows). Images smaller than the patch are padded at the bottom/right by mirroring
    (numpy "symmetric"), labels included.

    url: where the label store is (local path, .zip or fsspec URL); opened on first use in each process
    (never held across fork; the dataset pickles without it, for spawned DataLoader workers). entries: index
    entries that passed :func:`rat.shared.store.check_for_training`; those of other groups are left out.
    root: data root, needed for images without an image cache (they are decoded whole for every patch: slow).
    patch_size: default the group's. length: number of samples (default 2**31 - 1, an endless stream for
    step-based training). cache: folder of the local image cache (default
    :func:`rat.shared.index.locate.cache_dir`; False: do not use one). cached: ids known to be in that cache
    (just filled by the caller), instead of looking each one up.
    """

    def __init__(self, url: str | Path, entries: Sequence[Entry], group: Group,
                 root: str | Path | None = None, patch_size: int | None = None, length: int | None = None,
                 seed: int = 0, augment: bool = True, cache: str | Path | None | bool = None,
                 cached: set[str] | None = None) -> None:
        self.url = str(url)
        self.entries = [e for e in entries if e.group == group.name]
        if not self.entries:
            raise ValueError(f"no images of group {group.name!r} among the {len(entries)} entries given")
        for e in self.entries:
            check_channels(e, group)
        self.group = group
        self.root = None if root is None else str(root)
        self.patch_size = int(patch_size or group.patch_size)
        self.length = int(length if length is not None else 2**31 - 1)
        self.seed = int(seed)
        self.augment = augment
        self.cache = cache
        images = ImageCache(cache or None) if cache is not False else None
        self.cached = [images is not None and (e.id in cached if cached is not None else images.has(e))
                       for e in self.entries]
        if self.root is None and not all(self.cached):
            missing = self.entries[self.cached.index(False)].id
            raise ValueError(f"{missing}: not in the image cache, and no data root to read it from")
        self._pid: int | None = None
        self._arrays: dict[str, tuple[Any, Any, zarr.Array]] = {}
        self._store: zarr.Group | None = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=None, _arrays={}, _store=None)  # each process opens its own
        return state

    def _handles(self, j: int) -> tuple[Any, Any, zarr.Array]:
        """(lq, hq, labels) arrays of image j: zarr arrays, or decoded source images without a cache."""
        if self._pid != os.getpid():
            self._store, self._arrays, self._pid = st.open_store(self.url), {}, os.getpid()
        entry = self.entries[j]
        if entry.id not in self._arrays:
            labels = st.checked_labels(self._store, entry)
            arrays = cached_arrays(entry, self.cache) if self.cached[j] else None
            if arrays is None:  # slow fallback: not kept, decoded again for every patch
                return read_lq(entry, self.root)[0], read_hq(entry, self.root)[0], labels
            self._arrays[entry.id] = (*arrays, labels)
        return self._arrays[entry.id]

    def draw(self, i: int) -> tuple[int, int, int, int, bool]:
        """(image index, top, left, rot90 k, flip) of sample i."""
        rng = np.random.default_rng((self.seed, i))
        j = int(rng.integers(len(self.entries)))
        h, w = self.entries[j].shape[:2]
        top = int(rng.integers(max(h - self.patch_size, 0) + 1))
        left = int(rng.integers(max(w - self.patch_size, 0) + 1))
        return j, top, left, int(rng.integers(4)), bool(rng.integers(2))

    def __getitem__(self, i: int) -> dict[str, Any]:
        """dict(lq=(C, P, P) float32, hq=(C, P, P) float32, labels=(P, P) int64, id=str); normalised."""
        if not 0 <= i < self.length:
            raise IndexError(f"sample {i} out of range 0..{self.length - 1}")
        j, top, left, k, flip = self.draw(i)
        p = self.patch_size
        window = (slice(top, top + p), slice(left, left + p))
        lq, hq, labels = (a[window] for a in self._handles(j))
        lq, hq = channels_first(np.asarray(lq)), channels_first(np.asarray(hq))  # (C, h, w)
        labels = np.asarray(labels)[None]  # (1, h, w)
        pad = ((0, 0), (0, p - labels.shape[1]), (0, p - labels.shape[2]))
        out = []
        for a in (lq, hq, labels):
            if pad[1][1] or pad[2][1]:
                a = np.pad(a, pad, mode="symmetric")
            if self.augment:
                a = np.rot90(a, k, axes=(1, 2))
                a = a[:, :, ::-1] if flip else a
            out.append(np.ascontiguousarray(a))
        return {"lq": torch.from_numpy(normalise(out[0], self.group)),
                "hq": torch.from_numpy(normalise(out[1], self.group)),
                "labels": torch.from_numpy(out[2][0].astype(np.int64)),
                "id": self.entries[j].id}


def make_loader(dataset: Dataset, batch_size: int, workers: int, *, start: int = 0, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """Batches of samples start + rank, start + rank + world_size, ... in order (resume: start = step *
    batch_size * world_size). Workers are spawned (no fork with an open zarr store) and persistent;
    pinned memory on CUDA machines."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in 0..{world_size - 1}")
    sampler = range(start + rank, len(dataset), world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      multiprocessing_context="spawn" if workers > 0 else None,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
