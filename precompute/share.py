"""Sharing label stores: one zip file to hand over (`export_zip`), one store from several (`merge_stores`).

Both copy raw keys - chunk and metadata bytes as stored, nothing recomputed or recompressed - of the items
readers see: label maps with a complete record, the store's dataset record (definition, index, root) and,
only when asked, the image caches that schema-1 stores held. Within an item the chunks go first and its
metadata (which carries the record) last, so an interrupted merge never shows a complete record without its
chunks. Sources are opened read-only and never modified.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from rat.shared import store as st
from rat.shared.store import legacy
from rat.shared.store.access import raw_store

#: Record fields that must agree when two stores hold the same item (equal fields = equal bytes).
ITEM_IDENTITY_FIELDS = {"labels": ("source_sha256", "labels_sha256", "dtype", "shape"),
            "images": ("source_sha256", "hq_sha256", "shape", "lq_dtype", "hq_dtype")}
#: Concurrent key copies (object stores answer many small requests best in parallel).
CONCURRENCY = 32


@dataclass(frozen=True)
class Item:
    """One label map (`labels/<key>`) or image cache (`images/<key>`) of a store, with its record."""

    kind: str
    image_id: str
    record: dict[str, Any]

    @property
    def prefix(self) -> str:
        return f"{self.kind}/{st.image_key(self.image_id)}"

    def identity(self) -> tuple[Any, ...]:
        return tuple(str(self.record.get(k)) for k in ITEM_IDENTITY_FIELDS[self.kind])


@dataclass
class ShareReport:
    """What an export or merge wrote."""

    label_maps: int = 0
    images: int = 0
    duplicates: int = 0                              # identical items found in several stores, copied once
    incomplete: list[str] = field(default_factory=list)  # label maps left out: no complete record

    def summarize(self) -> str:
        text = f"{self.label_maps} label maps, {self.images} image caches"
        if self.duplicates:
            text += f", {self.duplicates} identical duplicates copied once"
        if self.incomplete:
            text += f"; left out {len(self.incomplete)} incomplete: {_names(self.incomplete)}"
        return text


def _names(ids: Sequence[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + (f" (and {len(ids) - most} more)" if len(ids) > most else "")


def complete_items(store: zarr.Group, with_images: bool = False) -> tuple[list[Item], list[str]]:
    """The complete items of a store (label maps, then with `with_images` image caches) and the ids of
    incomplete label maps."""
    items, incomplete = [], []
    for image_id, rec in st.read_records(store, st.label_ids(store)).items():   # one batch
        if rec is None:
            incomplete.append(image_id)
        else:
            items.append(Item("labels", image_id, rec))
    if with_images:
        items += [Item("images", image_id, rec) for image_id, rec in legacy.image_items(store)]
    return items, incomplete


async def _keys_by_item(raw: zarr.abc.store.Store) -> dict[str, list[str]]:
    """Every key of `store` under labels/ or images/, grouped by item prefix (one listing of the store)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    async for key in raw.list():
        parts = key.split("/")
        if len(parts) > 2 and parts[0] in ITEM_IDENTITY_FIELDS:
            grouped[f"{parts[0]}/{parts[1]}"].append(key)
    return grouped


async def _copy_items(jobs: Sequence[tuple[zarr.abc.store.Store, Item]], dst: zarr.abc.store.Store) -> None:
    """Copy the keys of each (source store, item) into `dst`: data keys, then metadata deepest first."""
    listings = {id(src): await _keys_by_item(src) for src in {id(s): s for s, _ in jobs}.values()}
    limit = asyncio.Semaphore(CONCURRENCY)
    prototype = default_buffer_prototype()

    async def copy(src: zarr.abc.store.Store, key: str) -> None:
        async with limit:
            buf = await src.get(key, prototype=prototype)
            if buf is None:
                raise st.StoreError(f"{src}: {key} vanished while being copied")
            await dst.set(key, buf)

    async def copy_item(src: zarr.abc.store.Store, item: Item) -> None:
        keys = listings[id(src)].get(item.prefix, [])
        meta = sorted((k for k in keys if k.endswith("zarr.json")), key=lambda k: -k.count("/"))
        await asyncio.gather(*(copy(src, k) for k in keys if not k.endswith("zarr.json")))
        for key in meta:                         # the item's own metadata (with its record) last
            await copy(src, key)

    await asyncio.gather(*(copy_item(src, item) for src, item in jobs))


async def _copy_keys(src: zarr.abc.store.Store, dst: zarr.abc.store.Store, keys: Sequence[str],
                     prefixes: Sequence[str] = ()) -> None:
    """Copy `keys`, and every key under `prefixes` (data before metadata), from src to dst."""
    prototype = default_buffer_prototype()
    found = [k async for k in src.list() if any(k.startswith(f"{p}/") for p in prefixes)]
    for key in sorted(found, key=lambda k: k.endswith("zarr.json")) + list(keys):
        buf = await src.get(key, prototype=prototype)
        if buf is not None:
            await dst.set(key, buf)


def _index_array(prov: dict[str, Any]) -> list[str]:
    """The node holding the store's index (schema 2), as a list of prefixes to copy."""
    return [prov["index"]["array"]] if prov.get("index") else []


def export_zip(url: str | Path, zip_path: str | Path, overwrite: bool = False,
               with_images: bool = False) -> ShareReport:
    """Write the store at `url` (any location `open_store` reads) into one zip file, read-only for readers.

    Complete label maps and the dataset record (incomplete label maps are listed in the report; a schema-1
    store's image caches only `with_images`). The zip is written beside
    `zip_path` under a temporary name and renamed at the end, so `zip_path` is either whole or absent.
    Entries are stored uncompressed (ZIP_STORED): chunks are zstd-compressed already and stay seekable.
    """
    zip_path = Path(zip_path)
    if zip_path.suffix != ".zip":
        raise st.StoreError(f"{zip_path}: name the file *.zip (readers recognise zip stores by the suffix)")
    if zip_path.exists() and not overwrite:
        raise st.StoreError(f"{zip_path}: exists; pass `overwrite` to replace it")
    store = st.open_store(url, mode="r")
    prov = st.provenance(store)
    items, incomplete = complete_items(store, with_images)
    partial = zip_path.with_name(zip_path.name + ".partial")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    dst = zarr.storage.ZipStore(partial, mode="w")
    try:
        top = ["zarr.json"] + [f"{k}/zarr.json" for k in ITEM_IDENTITY_FIELDS
                               if k in store and (k == "labels" or with_images)]
        sync(_copy_keys(store.store, dst, top, _index_array(prov)))
        sync(_copy_items([(store.store, item) for item in items], dst))
    except BaseException:
        dst.close()
        partial.unlink(missing_ok=True)
        raise
    dst.close()
    os.replace(partial, zip_path)
    return ShareReport(label_maps=sum(i.kind == "labels" for i in items),
                       images=sum(i.kind == "images" for i in items), incomplete=incomplete)


def _existing(url: str | Path) -> zarr.Group | None:
    """The store at `url` if there is one (read-only), else None."""
    try:
        return st.open_store(url, mode="r")
    except st.StoreError:
        return None


def merge_stores(sources: Sequence[str | Path], url: str | Path, with_images: bool = False) -> ShareReport:
    """Combine the label stores at `sources`, made for (possibly overlapping) parts of one dataset, into the
    store at `url`.

    Every source (and `url`, if it exists) must have the same fingerprint: same dataset, generator,
    parameters, checkpoint SHA-256 and SAM windows; otherwise StoreError names the differing fields. An
    image in several stores must have identical content (same labels SHA-256 and source SHA-256), or the
    merge is refused naming the images. Both checks run before anything is written. `url` is created
    (or extended) with the first store's root record, dataset record and index; items it already holds are
    not copied again. Schema-1 stores must be upgraded first (`rat-precompute upgrade`).
    """
    if not sources:
        raise ValueError("merge needs at least one source store")
    stores = [st.open_store(s, mode="r") for s in sources]
    provs = [st.provenance(s) for s in stores]
    target = _existing(url)
    named = [(str(s), g, p) for s, g, p in zip(sources, stores, provs, strict=True)]
    if target is not None:
        named.insert(0, (str(url), target, st.provenance(target)))
    for name, _, prov in named:
        if prov["schema"] != st.SCHEMA_VERSION:
            raise st.StoreError(f"{legacy.upgrade_hint(name)}; nothing merged")
    first_name, _, first = named[0]
    for name, _, prov in named[1:]:
        if prov["fingerprint"] != first["fingerprint"]:
            raise st.StoreError(f"{name}: made with another configuration than {first_name} "
                                f"({st.describe_difference(first, prov)}); nothing merged")
    chosen: dict[tuple[str, str], tuple[int, Item]] = {}
    conflicts: list[str] = []
    report = ShareReport()
    for n, (name, store, _) in enumerate(named):
        items, incomplete = complete_items(store, with_images)
        report.incomplete += [f"{i} ({name})" for i in incomplete]
        for item in items:
            have = chosen.get((item.kind, item.image_id))
            if have is None:
                chosen[(item.kind, item.image_id)] = (n, item)
            elif have[1].identity() != item.identity():
                conflicts.append(f"{item.image_id} ({item.kind}: {named[have[0]][0]} vs {name})")
            else:
                report.duplicates += 1
    if conflicts:
        raise st.StoreError(f"{len(conflicts)} image(s) differ between the stores: {_names(conflicts)}; "
                            "nothing merged")
    offset = 1 if target is not None else 0
    jobs = [(stores[n - offset].store, item) for n, item in chosen.values() if n >= offset]
    if target is None:  # the first store's dataset record comes with its root record: copy its index too
        sync(_copy_keys(stores[0].store, raw_store(url, read_only=False), [], _index_array(provs[0])))
    dst = st.init_store(url, dict(provs[0]))
    sync(_copy_items(jobs, dst.store))
    st.consolidate(dst)
    report.label_maps = sum(item.kind == "labels" for _, item in jobs)
    report.images = sum(item.kind == "images" for _, item in jobs)
    return report
