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
from concurrent.futures import ThreadPoolExecutor
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
            con.execute("CREATE TABLE IF NOT EXISTS checked (kind TEXT, name TEXT, stamp TEXT, sha256 TEXT, "
                        "PRIMARY KEY (kind, name))")
            con.commit()
        except (OSError, sqlite3.Error):
            con = None  # read-only or odd file system: remember hashes in this process only
        _db[key] = con
    return _db[key]


def source_sha256(path: str | Path) -> str:
    """SHA-256 of a file or DICOM-series folder (:func:`rat.shared.hashes.sha256_file`), computed again only
    when its size or modification time changed."""
    name = os.path.abspath(path)
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


_QUERY_ROWS = 500  # names per SELECT (SQLite's limit on bound parameters is far above)


def _rows(query: str, names: list[str], *prefix: str) -> list[tuple]:
    con = _connection()
    if con is None or not names:
        return []
    rows: list[tuple] = []
    with _lock:
        try:
            for k in range(0, len(names), _QUERY_ROWS):
                part = names[k : k + _QUERY_ROWS]
                marks = ",".join("?" * len(part))
                rows += con.execute(query.format(marks=marks), (*prefix, *part)).fetchall()
        except sqlite3.Error:
            return []
    return rows


def source_sha256_many(paths: list[str | Path], threads: int = 8) -> dict[str, str | None]:
    """:func:`source_sha256` of many files at once, by the paths given (None for a file that is not there):
    one stat each, the remembered hashes looked up together, the others hashed in ``threads`` threads."""
    stamps: dict[str, tuple[str, Stamp] | None] = {}
    for path in map(str, paths):
        try:
            stamps[path] = (os.path.abspath(path), file_stamp(path))
        except OSError:
            stamps[path] = None
    out: dict[str, str | None] = {p: None for p, v in stamps.items() if v is None}
    with _lock:
        for path, v in stamps.items():
            if v is not None and v in _memory:
                out[path] = _memory[v]
    wanted = {v[0]: v[1] for p, v in stamps.items() if v is not None and p not in out}
    rows = _rows("SELECT path, size, mtime_ns, sha256 FROM files WHERE path IN ({marks})", list(wanted))
    known = {row[0]: row[3] for row in rows if wanted.get(row[0]) == (row[1], row[2])}
    missing = []
    for path, v in stamps.items():
        if path in out or v is None:
            continue
        if v[0] in known:
            out[path] = known[v[0]]
            with _lock:
                _memory[v] = known[v[0]]
        else:
            missing.append(path)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for path, digest in zip(missing, pool.map(source_sha256, missing), strict=True):
            out[path] = digest
    return out


def checked(kind: str, names: list[str]) -> dict[str, tuple[str, str]]:
    """{name: (stamp, sha256)} remembered by :func:`remember_checked` for these names of ``kind``."""
    rows = _rows("SELECT name, stamp, sha256 FROM checked WHERE kind = ? AND name IN ({marks})", names, kind)
    return {row[0]: (row[1], row[2]) for row in rows}


def remember_checked(kind: str, rows: list[tuple[str, str, str]]) -> None:
    """Remember that each (name, stamp, sha256) was checked: the thing ``name`` had these contents while it
    carried this version stamp (e.g. a label map's bytes, by the stamps of its store objects)."""
    con = _connection()
    if con is None or not rows:
        return
    with _lock:
        try:
            con.executemany("INSERT OR REPLACE INTO checked VALUES (?, ?, ?, ?)", [(kind, *r) for r in rows])
            con.commit()
        except sqlite3.Error:
            pass
