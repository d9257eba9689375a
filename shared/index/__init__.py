"""The per-image index: entries, building and refreshing it, choosing among them, and where files are.

- :mod:`~rat.shared.index.entries`: :class:`Entry`, the index CSV, reading an entry's LQ and HQ images;
- :mod:`~rat.shared.index.build`: finding, pairing, checking and splitting a dataset's files;
- :mod:`~rat.shared.index.select`: one split, group, shard and count of entries (every command's selection);
- :mod:`~rat.shared.index.locate`: the data root, the state folder, the local cache folder, the default store;
- :mod:`~rat.shared.index.hash_cache`: SHA-256 of source files, remembered by path, size and mtime.

This ``__init__`` only gathers the names most code needs.
"""

from rat.shared.index.build import ensure_index, index_entries
from rat.shared.index.entries import (
    Entry,
    IndexFileError,
    Problem,
    index_path,
    load_index,
    problems_path,
    read_hq,
    read_index,
    read_lq,
    write_index,
)
from rat.shared.index.hash_cache import source_sha256
from rat.shared.index.locate import DataRootError, cache_dir, default_store, resolve_root, source_path
from rat.shared.index.select import parse_shard, select_entries

__all__ = [
    "DataRootError", "Entry", "IndexFileError", "Problem", "cache_dir", "default_store", "ensure_index",
    "index_entries", "index_path", "load_index", "parse_shard", "problems_path", "read_hq", "read_index",
    "read_lq", "resolve_root", "select_entries", "source_path", "source_sha256", "write_index",
]
