"""SHA-256 of source files, computed once per file version and remembered across runs (the hash cache).

A file version is its path, size and modification time (for a DICOM-series folder: the sum of its member
files' sizes, the latest of their modification times and their count). Hashes are kept in a small SQLite
table in the local cache folder (:func:`rat.shared.index.locate.cache_dir`), shared safely by the processes of
a machine, so a second run over terabytes of images re-reads only what changed. Where the cache cannot be
written, hashes are kept for the life of the process only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from rat.shared.hashes import sha256_file
from rat.shared.index.locate import cache_dir
from rat.shared.io.dicom import series_files

Stamp = tuple[int, int]  # (size in bytes, modification time in ns)

_memory: dict[tuple[str, Stamp], str] = {}
_lock = threading.Lock()
_db: dict[str, sqlite3.Connection | None] = {}  # per process and cache folder


def file_stamp(path: str | Path) -> Stamp:
    """(size, mtime_ns) of a file; for a DICOM-series folder, over its member files (count folded in)."""
    p = Path(path)
    if p.is_dir():
        stats = [f.stat() for f in series_files(p)]
        return (sum(s.st_size for s in stats) * 100_003 + len(stats), max(s.st_mtime_ns for s in stats))
    st = p.stat()
    return st.st_size, st.st_mtime_ns


def _connection() -> sqlite3.Connection | None:
    key = f"{os.getpid()}:{cache_dir()}"
    if key not in _db:
        try:
            folder = cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(folder / "hashes.sqlite", timeout=60, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                        "mtime_ns INTEGER, sha256 TEXT)")
            con.commit()
        except (OSError, sqlite3.Error):
            con = None  # read-only or odd file system: remember hashes in this process only
        _db[key] = con
    return _db[key]


def source_sha256(path: str | Path) -> str:
    """SHA-256 of a file or DICOM-series folder (:func:`rat.shared.hashes.sha256_file`), computed again only
    when its size or modification time changed."""
    name = str(Path(path).resolve())
    stamp = file_stamp(path)
    with _lock:
        if (name, stamp) in _memory:
            return _memory[(name, stamp)]
        con = _connection()
        row = None
        if con is not None:
            try:
                query = "SELECT size, mtime_ns, sha256 FROM files WHERE path = ?"
                row = con.execute(query, (name,)).fetchone()
            except sqlite3.Error:
                row = None
    if row is not None and (row[0], row[1]) == stamp:
        digest = row[2]
    else:
        digest = sha256_file(path)
        with _lock:
            con = _connection()
            if con is not None:
                try:
                    con.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (name, *stamp, digest))
                    con.commit()
                except sqlite3.Error:
                    pass
    with _lock:
        _memory[(name, stamp)] = digest
    return digest
