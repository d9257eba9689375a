"""Opening a label store: a local folder, a read-only ``.zip`` hand-over file or any fsspec URL.

Readers open a store read-only (:func:`open_store`); a store of schema 1 is then presented in the schema-2
layout (:mod:`rat.shared.store.legacy`), so that no other code knows the old one. Writers open it with
:func:`init_store`, which creates the root record atomically when absent and refuses another configuration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.sync import sync

from rat.shared.errors import one_line
from rat.shared.store import legacy
from rat.shared.store.schema import (
    ATTR,
    MISSING,
    READ_ATTEMPTS,
    READ_THREADS,
    RETRY_WAIT,
    StoreError,
    describe_difference,
    retrying,
)


def raw_store(url: str | Path, read_only: bool) -> zarr.abc.store.Store:
    """The zarr store object of a location (no layout translation)."""
    text = str(url)
    if text.endswith(".zip"):
        if not read_only:
            raise StoreError(f"{text}: zip stores are read-only hand-over files; write to a directory")
        if not Path(text).is_file():
            raise StoreError(f"{text}: no such store")
        return zarr.storage.ZipStore(text, mode="r")
    if "://" in text and not text.startswith("file://"):
        try:
            return zarr.storage.FsspecStore.from_url(text, read_only=read_only)
        except ImportError as err:
            raise StoreError(f"{text}: {err}; for s3:// install rat-restore[s3]") from None
    path = Path(text.removeprefix("file://"))
    if read_only and not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: no such store (no zarr.json)")
    return zarr.storage.LocalStore(path, read_only=read_only)


def open_store(url: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store read-only (`mode="r"`) or for writing label maps into (`"r+"`, `"a"`).

    Read-only, a schema-1 store comes back in the schema-2 layout (:func:`rat.shared.store.legacy.view`).
    """
    raw = raw_store(url, read_only=(mode == "r"))
    try:
        store = retrying(str(url), lambda: zarr.open_group(raw, mode=mode))
    except (StoreError, *MISSING) as err:
        reason = f"{type(err).__name__}: {one_line(err)}"
        raise StoreError(f"{url}: not a readable zarr store ({reason})") from None
    return legacy.view(store) if mode == "r" else store


def create_if_absent(raw: zarr.abc.store.Store, path: str, attributes: dict[str, Any]) -> None:
    """Atomically create a zarr group's metadata at `path` unless it exists (first writer wins)."""
    buf = GroupMetadata(attributes=attributes).to_buffer_dict(default_buffer_prototype())["zarr.json"]
    key = f"{path}/zarr.json" if path else "zarr.json"
    zarr.core.sync.sync(raw.set_if_not_exists(key, buf))


def init_store(url: str | Path, prov: dict[str, Any], overwrite: bool = False) -> zarr.Group:
    """Open `url` for writing label maps made under `prov`, creating the root record if absent.

    An existing store made under another configuration is refused (one line naming the differences),
    unless `overwrite`, which replaces the root record: items of the old configuration then no longer
    count as done and are recomputed. A schema-1 store is refused with the way to upgrade it.
    """
    raw = raw_store(url, read_only=False)
    create_if_absent(raw, "", {ATTR: prov})
    store = zarr.open_group(raw, mode="a")
    have = store.attrs.get(ATTR)
    if not isinstance(have, dict):
        raise StoreError(f"{url}: exists but is not a RAT label store")
    if legacy.is_legacy(have):
        raise StoreError(legacy.upgrade_hint(url))
    if have.get("fingerprint") != prov["fingerprint"]:
        if not overwrite:
            raise StoreError(
                f"{url}: made with another configuration ({describe_difference(have, prov)}); "
                "use another store, or `overwrite` to recompute every image")
        kept = {k: have[k] for k in ("definition", "root", "index", "derive_versions") if k in have}
        store.attrs[ATTR] = {**prov, **kept}
    create_if_absent(raw, "labels", {"ome": {"version": "0.5", "labels": []}})
    return store


def read_documents(raw: zarr.abc.store.Store, keys: Sequence[str], threads: int = READ_THREADS
                   ) -> list[dict[str, Any] | None]:
    """The JSON documents at ``keys`` (None where there is none, or half of one), read concurrently: a local
    store's files directly, any other store through its own asynchronous reads. Transient errors are retried
    (:func:`rat.shared.store.schema.retrying`)."""
    if isinstance(raw, zarr.storage.LocalStore):
        root = Path(raw.root)

        def read(key: str) -> dict[str, Any] | None:
            try:
                return json.loads((root / key).read_bytes())
            except (FileNotFoundError, NotADirectoryError, ValueError):
                return None

        with ThreadPoolExecutor(max(1, min(threads, len(keys)))) as pool:
            return list(pool.map(lambda k: retrying(f"{raw}: {k}", lambda: read(k)), keys))
    return sync(_read_many(raw, list(keys), threads))


async def _read_many(raw: zarr.abc.store.Store, keys: list[str], threads: int
                     ) -> list[dict[str, Any] | None]:
    limit = asyncio.Semaphore(threads)
    prototype = default_buffer_prototype()

    async def one(key: str) -> dict[str, Any] | None:
        async with limit:
            for attempt in range(READ_ATTEMPTS):
                try:
                    buf = await raw.get(key, prototype)
                    return None if buf is None else json.loads(buf.to_bytes())
                except MISSING:
                    return None
                except Exception as err:  # noqa: BLE001 - network and server errors come in many types
                    if attempt == READ_ATTEMPTS - 1:
                        reason = f"{type(err).__name__}: {one_line(err)}"
                        raise StoreError(f"{raw}: {key}: cannot read ({reason}) after {READ_ATTEMPTS} "
                                         "attempts") from None
                    await asyncio.sleep(RETRY_WAIT * 2**attempt)
        return None

    return list(await asyncio.gather(*(one(k) for k in keys)))
