"""Version stamps of a store's objects, learnt without reading them: what tells a reader that a label map
is still the one it read, or checked, before.

- a local folder: each file's size and modification time (one ``stat``, no read);
- a zip file: each entry's size and CRC-32 (its central directory, read once);
- an fsspec store (s3://, gs://, ...): each object's ETag, else size and modification time, from one listing
  of the prefix (a few requests per thousand objects).

Stores that cannot tell (a schema-1 store's translated view, unknown kinds) give None: their readers read.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import zarr
from zarr.core.sync import sync


def key_stamps(raw: zarr.abc.store.Store, keys: Sequence[str], prefix: str) -> dict[str, str | None] | None:
    """{key: stamp, None when there is no such object} for ``keys`` (all under ``prefix``), or None when the
    store cannot tell (see the module doc)."""
    if isinstance(raw, zarr.storage.LocalStore):
        root = Path(raw.root)

        def stat(key: str) -> str | None:
            try:
                st = os.stat(root / key)
            except (FileNotFoundError, NotADirectoryError):
                return None
            return f"{st.st_size}:{st.st_mtime_ns}"

        return {key: stat(key) for key in keys}  # a stat of a cached directory entry: faster than any pool
    if isinstance(raw, zarr.storage.ZipStore):
        with zipfile.ZipFile(raw.path) as zf:
            entries = {i.filename: f"{i.file_size}:{i.CRC}" for i in zf.infolist()}
        return {k: entries.get(k) for k in keys}
    if isinstance(raw, zarr.storage.FsspecStore):
        base = raw.path.rstrip("/")
        found = sync(raw.fs._find(f"{base}/{prefix}".rstrip("/"), detail=True))  # the store's own loop
        listed = {name[len(base) + 1:] if base else name: _object_stamp(info) for name, info in found.items()}
        return {k: listed.get(k) for k in keys}
    return None


def _object_stamp(info: dict) -> str:
    """An object's ETag where the file system reports one, else its size and modification time."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if etag:
        return str(etag).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or info.get('updated')}"
