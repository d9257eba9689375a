"""Training data: normalisation, the store check, whole images, and random aligned patches.

Label maps come from the label store (:mod:`rat.shared.store`), LQ and HQ from the local image cache
(:mod:`rat.shared.cache`, filled by `rat-train` on first use or ahead of time by `rat-precompute cache`), or
from a schema-1 store's own image cache; only the patch window is read from these chunked arrays. Without a
cache the dataset decodes the whole LQ and HQ source files for every patch: correct, but slow for large
images (see ``benchmarks/bench_patches.py``).

Normalisation is the dataset definition's linear map ``(x - norm_low) / (norm_high - norm_low)`` in float32,
without clipping: the full source range (16-bit CT in HU, PET) is kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from rat.shared import store as st
from rat.shared.cache import ImageCache, image_record, store_images
from rat.shared.datasets import Group
from rat.shared.index import Entry, read_hq, read_lq

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Problems listed in a StoreError before it says "... and N more".
MAX_LISTED = 20


def normalise(x: ArrayT, group: Group) -> ArrayT:
    """Source units -> training units: norm_low -> 0, norm_high -> 1 (float32, not clipped)."""
    scale = 1.0 / (group.norm_high - group.norm_low)
    if isinstance(x, torch.Tensor):
        return (x.float() - group.norm_low) * scale
    return ((np.asarray(x, dtype=np.float32) - np.float32(group.norm_low)) * np.float32(scale))


def denormalise(x: ArrayT, group: Group) -> ArrayT:
    """Training units -> source units (inverse of :func:`normalise`)."""
    span = group.norm_high - group.norm_low
    if isinstance(x, torch.Tensor):
        return x.float() * span + group.norm_low
    return np.asarray(x, dtype=np.float32) * np.float32(span) + np.float32(group.norm_low)


# ----------------------------------------------------------------------------- store check


def _entry_problems(store: zarr.Group, entry: Entry, images: ImageCache | None, need_images: bool,
                    hash_labels: bool) -> list[str]:
    problems = st.verify(store, [entry], hash_labels=hash_labels, threads=1)
    rec = image_record(store, entry.id)
    if rec is not None and rec.get("source_sha256") != entry.sha256:
        problems.append(f"{entry.id}: image cache made from other LQ bytes than the index's {entry.lq} "
                        "(rerun `rat-precompute cache`)")
    elif rec is not None and list(rec.get("shape", []))[:2] != list(entry.shape[:2]):
        problems.append(f"{entry.id}: image cache shape {rec.get('shape')} != image shape {entry.shape}")
    elif need_images and rec is None and (images is None or images.arrays(entry) is None):
        problems.append(f"{entry.id}: no image cache (run `rat-precompute cache`)")
    return problems


def store_problems(store: zarr.Group, entries: Sequence[Entry], *, need_images: bool = False,
                   hash_labels: bool = False, cache: str | Path | None = None) -> list[str]:
    """Every problem of the store for training on `entries`, one line each, in entry order (empty when
    all is well).

    Label maps: :func:`rat.shared.store.verify` (with `hash_labels`, their bytes are checked against their
    recorded SHA-256). A schema-1 store's image cache made from other LQ bytes or of another shape is always a
    problem; with `need_images`, an image in neither that nor the local image cache (folder `cache`) is one.
    """
    return [p for ps in _problems_per_entry(store, entries, need_images, hash_labels, cache) for p in ps]


def _problems_per_entry(store: zarr.Group, entries: Sequence[Entry], need_images: bool, hash_labels: bool,
                        cache: str | Path | None) -> list[list[str]]:
    from concurrent.futures import ThreadPoolExecutor

    images = ImageCache(cache) if need_images else None
    with ThreadPoolExecutor(8) as pool:  # label bytes: zstd and SHA-256 release the GIL
        return list(pool.map(lambda e: _entry_problems(store, e, images, need_images, hash_labels), entries))


def check_store(store: zarr.Group, entries: Sequence[Entry], *, need_images: bool = False,
                hash_labels: bool = False, cache: str | Path | None = None) -> None:
    """Raise StoreError listing every problem of :func:`store_problems` (first line: how many images)."""
    per_image = [p for p in _problems_per_entry(store, entries, need_images, hash_labels, cache) if p]
    if not per_image:
        return
    problems = [p for ps in per_image for p in ps]
    listed = problems[:MAX_LISTED]
    more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
    raise st.StoreError("\n".join([f"{store.store}: {len(per_image)} of {len(entries)} images cannot be "
                                   "used for training:", *(f"  {p}" for p in listed), *more]))


def image_arrays(store: zarr.Group, entry: Entry, cache: str | Path | None | bool = None
                 ) -> tuple[Any, Any] | None:
    """(lq, hq) chunked arrays of an entry: a schema-1 store's own image cache, else the local image cache
    (folder `cache`; False: none), else None."""
    found = store_images(store, entry)
    if found is None and cache is not False:
        found = ImageCache(cache or None).arrays(entry)
    return found


# ----------------------------------------------------------------------------- whole images


def _channels_first(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) -> (C, H, W)."""
    return image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)


def _check_channels(entry: Entry, group: Group) -> None:
    channels = entry.shape[2] if len(entry.shape) == 3 else 1
    if channels != group.channels:
        raise ValueError(f"{entry.id}: {channels} channel(s), but group {group.name!r} has {group.channels}")


def load_full(store: zarr.Group, entry: Entry, root: str | Path | None, group: Group,
              cache: str | Path | None | bool = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One whole image: lq (C, H, W) and hq (C, H, W) float32 normalised, labels (H, W) int64.

    Images come from an image cache holding them (:func:`image_arrays`), else from the source files under
    `root`; labels always from the store, only when made from the entry's LQ bytes and intact (their bytes
    match the recorded SHA-256), else StoreError.
    """
    _check_channels(entry, group)
    problem = st.label_problem(store, entry)
    if problem is not None:
        raise st.StoreError(problem)
    labels = st.read_labels(store, entry.id).astype(np.int64)
    arrays = image_arrays(store, entry, cache)
    if arrays is not None:
        lq, hq = arrays[0][...], arrays[1][...]
    elif root is not None:
        lq, hq = read_lq(entry, root)[0], read_hq(entry, root)[0]
    else:
        raise st.StoreError(f"{entry.id}: no image cache in the store and no data root given")
    return normalise(_channels_first(lq), group), normalise(_channels_first(hq), group), labels


# ----------------------------------------------------------------------------- patches


class PatchDataset(Dataset):
    """Random aligned (LQ, HQ, labels) patches of one group's images, deterministic in (seed, i).

    Sample i draws, from ``np.random.default_rng((seed, i))`` and in this order: the image (uniform over
    `entries`), the top and left offsets (uniform), the rot90 count k in 0..3 and a horizontal flip. With
    `augment` the same rot90 then flip is applied to LQ, HQ and labels; without it they are drawn but not
    applied (same windows). Images smaller than the patch are padded at the bottom/right by mirroring
    (numpy "symmetric"), labels included.

    store_url: the label store (local path, .zip or fsspec URL), opened read-only lazily once per process
    (never held across fork; pickles without it, for spawned DataLoader workers). entries: index entries;
    those of other groups are left out. root: data root, needed only for images without an image cache
    (they are decoded whole for every patch: slow). patch_size: default the group's. length: number of
    samples (default 2**31 - 1, an endless stream for step-based training). cache: folder of the local
    image cache (default :func:`rat.shared.locate.cache_dir`; False: do not use one).

    The constructor checks the store (:func:`store_problems`; with `check_labels`, the label bytes against
    their SHA-256 too) and raises StoreError listing every problem: it never serves a label map made from
    other pixels, or one whose bytes changed.
    """

    def __init__(self, store_url: str | Path, entries: Sequence[Entry], group: Group,
                 root: str | Path | None = None, patch_size: int | None = None, length: int | None = None,
                 seed: int = 0, augment: bool = True, cache: str | Path | None | bool = None,
                 check_labels: bool = True) -> None:
        self.store_url = str(store_url)
        self.entries = [e for e in entries if e.group == group.name]
        if not self.entries:
            raise ValueError(f"no images of group {group.name!r} among the {len(entries)} entries given")
        for e in self.entries:
            _check_channels(e, group)
        self.group = group
        self.root = None if root is None else str(root)
        self.patch_size = int(patch_size or group.patch_size)
        self.length = int(length if length is not None else 2**31 - 1)
        self.seed = int(seed)
        self.augment = augment
        self.cache = cache
        store = st.open_store(self.store_url)
        check_store(store, self.entries, need_images=root is None, hash_labels=check_labels,
                    cache=None if cache is False else cache)
        self.cached = [image_arrays(store, e, cache) is not None for e in self.entries]
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
            self._store, self._arrays, self._pid = st.open_store(self.store_url), {}, os.getpid()
        entry = self.entries[j]
        if entry.id not in self._arrays:
            labels = st.checked_labels(self._store, entry)
            arrays = image_arrays(self._store, entry, self.cache) if self.cached[j] else None
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
        lq, hq = _channels_first(np.asarray(lq)), _channels_first(np.asarray(hq))  # (C, h, w)
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
