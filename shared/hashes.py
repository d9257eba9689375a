"""SHA-256 of source files, computed once per file version (path, size, modification time)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rat.shared.io import sha256_file


@lru_cache(maxsize=4096)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def source_sha256(path: str | Path) -> str:
    """SHA-256 of a file (or DICOM-series folder), reused while its size and mtime stay the same."""
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
