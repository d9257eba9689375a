"""Where things are found: a dataset's data root, the default label store, the local cache and state folders.

Data root, first that applies: the ``root`` argument (``--root``); ``$RAT_DATA_ROOT/<dataset name>``; the
``root`` key of the dataset definition; for training, the root recorded in the label store, if that folder
exists here. The state folder of a root holds its index, problems and derived LQ images: ``<root>/.rat``, or
a folder in the local cache when the root cannot be written (a colleague's read-only copy of the data).
The local cache (``$RAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rat``, else ``~/.cache/rat``) holds the training
image cache and the file-hash cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rat.shared.datasets.definition import DatasetDef
from rat.shared.errors import RatError

DATA_ROOT_ENV = "RAT_DATA_ROOT"
CACHE_ENV = "RAT_CACHE_DIR"
STATE_DIR = ".rat"
"""Folder under the data root that holds the index, its problems and derived LQ images."""


class DataRootError(RatError, ValueError):
    """No usable data root; ``str(err)`` is one line naming the ways to give one."""


def resolve_root(ds: DatasetDef, root: str | Path | None = None, recorded: str | None = None) -> Path:
    """The data root of ``ds`` (see the module doc); DataRootError naming every way when none applies.

    ``recorded``: the root a label store was made from (a hint, used only when that folder exists here).
    """
    if root:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataRootError(f"{path}: data root is not a directory")
        return path
    tried = []
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        path = Path(env).expanduser() / ds.name
        if path.is_dir():
            return path
        tried.append(f"{DATA_ROOT_ENV}/{ds.name} = {path} does not exist")
    if ds.root is not None:
        if ds.root.is_dir():
            return ds.root
        tried.append(f"the definition's root {ds.root} does not exist")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if recorded:
        tried.append(f"the store's root {recorded} is not here")
    why = f" ({'; '.join(tried)})" if tried else ""
    raise DataRootError(f"no data root for dataset {ds.name}{why}: pass `root` DIR, set {DATA_ROOT_ENV}=DIR "
                        f"(for DIR/{ds.name}), or add root = \"DIR\" to the dataset definition")


def default_store(ds: DatasetDef) -> Path:
    """The label store a dataset's masks go to when none is named: ``./<name>.zarr``."""
    return Path(f"{ds.name}.zarr")


def cache_dir(cache: str | Path | None = None) -> Path:
    """The local cache folder: ``cache``, else $RAT_CACHE_DIR, else $XDG_CACHE_HOME/rat, else ~/.cache/rat."""
    if cache:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rat"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def state_dir(root: str | Path) -> Path:
    """``<root>/.rat`` when it can be written, else a folder of the local cache named after the root."""
    here = Path(root) / STATE_DIR
    if _writable(here):
        return here
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "roots" / key


def source_path(root: str | Path, rel: str) -> Path:
    """The file an index path names: relative to the root, or, for ``.rat/...`` (derived images), to the
    root's state folder."""
    prefix = f"{STATE_DIR}/"
    if rel.startswith(prefix):
        return state_dir(root) / rel[len(prefix):]
    return Path(root) / rel
