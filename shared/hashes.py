"""SHA-256 of files and DICOM-series folders: what the index, the store and the checkpoints record.

:func:`sha256_file` reads the bytes every time; the index's cache of it, keyed by path, size and modification
time, is :mod:`rat.shared.index.hash_cache`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rat.shared.io.base import PathLike, reading
from rat.shared.io.dicom import series_files

_BLOCK = 1 << 20


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB blocks; ImageReadError (one line) when it cannot be read.

    For a DICOM-series directory: SHA-256 over its sorted member files, each contributing
    ``name + "\\0" + sha256_hex(member) + "\\n"`` (UTF-8): renaming or changing a slice changes it.
    """
    with reading(path):
        p = Path(path)
        if p.is_dir():
            members = sorted(series_files(p), key=lambda f: f.name)
            lines = b"".join(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n" for f in members)
            return hashlib.sha256(lines).hexdigest()
        digest = hashlib.sha256()
        with open(p, "rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
        return digest.hexdigest()
