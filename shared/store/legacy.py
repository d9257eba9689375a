"""Schema-1 stores (package version 0.1), read in the schema-2 layout; nothing else knows the old one.

Schema 1 kept each label map as the array ``labels/<key>`` with its record in the array's attributes (no
``0`` level, no NGFF metadata), optional image caches under ``images/<key>/lq|hq``, and no dataset record.
:func:`view` presents such a store read-only in the schema-2 layout: ``labels/<key>`` a zarr group holding the
record, ``labels/<key>/0`` the array with the same chunks, by translating keys (no byte is copied or changed).
A label map already rewritten as a zarr group (by an interrupted ``upgrade``) is passed through as it is.
What still differs is visible in the root record only: schema 1, and no dataset (``--dataset`` is needed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from rat.shared.store.schema import ATTR, image_id

LEGACY_SCHEMA = 1


def is_legacy(prov: dict[str, Any]) -> bool:
    """Whether a root record is that of a schema-1 store."""
    return prov.get("schema") == LEGACY_SCHEMA


def upgrade_hint(url: str | Path) -> str:
    return (f"{url} is a schema-1 store: upgrade it in place with `rat-precompute upgrade {url} --dataset "
            "NAME --root DIR` (label maps are kept)")


def view(store: zarr.Group) -> zarr.Group:
    """``store`` itself, or for a schema-1 store the same store read-only in the schema-2 layout."""
    prov = store.attrs.get(ATTR)
    if not isinstance(prov, dict) or not is_legacy(prov):
        return store
    return zarr.open_group(Schema1Layout(store.store), mode="r")


def image_items(store: zarr.Group) -> list[tuple[str, dict[str, Any]]]:
    """(image id, record) of the complete image caches a schema-1 store holds under ``images/``."""
    if "images" not in store:
        return []
    found = []
    for key in sorted(store["images"].group_keys()):
        rec = store[f"images/{key}"].attrs.get(ATTR)
        if isinstance(rec, dict) and rec.get("complete"):
            found.append((image_id(key), rec))
    return found


def _item(key: str) -> tuple[str | None, list[str]]:
    """("labels/<key>", the rest of the key's parts) for keys below a label map, else (None, [])."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "labels":
        return f"labels/{parts[1]}", parts[2:]
    return None, []


class Schema1Layout(WrapperStore):
    """A read-only schema-1 store whose label arrays ``labels/<key>`` appear as ``labels/<key>/0`` under a
    zarr group that carries their record."""

    def __init__(self, store: zarr.abc.store.Store) -> None:
        super().__init__(store)
        self._arrays: dict[str, dict[str, Any] | None] = {}

    def _with_store(self, store: zarr.abc.store.Store) -> Schema1Layout:
        return type(self)(store)

    def __str__(self) -> str:
        return str(self._store)

    @property
    def read_only(self) -> bool:
        return True

    def _check_writable(self) -> None:
        raise ValueError(f"{self}: a schema-1 store is read-only (upgrade it first)")

    async def _array_meta(self, item: str) -> dict[str, Any] | None:
        """The metadata of ``item`` when it is a schema-1 label array, else None."""
        if item not in self._arrays:
            buf = await self._store.get(f"{item}/zarr.json", default_buffer_prototype())
            meta = json.loads(buf.to_bytes()) if buf is not None else None
            self._arrays[item] = meta if meta is not None and meta.get("node_type") == "array" else None
        return self._arrays[item]

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
                  ) -> Buffer | None:
        item, rest = _item(key)
        meta = await self._array_meta(item) if item else None
        if meta is None:
            return await self._store.get(key, prototype, byte_range)
        if rest == ["zarr.json"]:  # the label image's zarr group, carrying the array's record
            doc = {"zarr_format": 3, "node_type": "group",
                   "attributes": {ATTR: meta.get("attributes", {}).get(ATTR)}}
            return prototype.buffer.from_bytes(json.dumps(doc).encode())
        if rest[0] != "0":
            return None
        if rest[1:] == ["zarr.json"]:
            return prototype.buffer.from_bytes(json.dumps({**meta, "attributes": {}}).encode())
        return await self._store.get("/".join([item, *rest[1:]]), prototype, byte_range)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def _get_many(self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
                        ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return await self.get(key, default_buffer_prototype()) is not None

    async def list(self) -> AsyncIterator[str]:
        async for key in self._store.list():
            item, rest = _item(key)
            if item is None or await self._array_meta(item) is None:
                yield key
            elif rest == ["zarr.json"]:
                yield key
                yield f"{item}/0/zarr.json"
            else:
                yield "/".join([item, "0", *rest])

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        parts = prefix.split("/")
        if len(parts) == 2 and parts[0] == "labels" and await self._array_meta(prefix) is not None:
            for name in ("zarr.json", "0"):
                yield name
            return
        if len(parts) == 3 and parts[0] == "labels" and parts[2] == "0":
            item = "/".join(parts[:2])
            if await self._array_meta(item) is not None:
                async for name in self._store.list_dir(item):
                    yield name
                return
        async for name in self._store.list_dir(prefix):
            yield name
