"""Finding dataset definitions: the builtin ones by name, a user's by path, a store's from its text."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from rat.shared.datasets.definition import DatasetDef, DefinitionError
from rat.shared.datasets.parse import parse_definition

BUILTIN_PACKAGE = "rat.data_manifests"


def builtin_datasets() -> list[str]:
    """Names of the definitions shipped in ``rat.data_manifests``."""
    files = importlib.resources.files(BUILTIN_PACKAGE).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_dataset(name_or_path: str | Path) -> DatasetDef:
    """Load a builtin definition by name (e.g. "tma") or a user definition from a .toml path."""
    text_path = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or os.sep in text_path or "/" in text_path:
        if not path.is_file():
            raise DefinitionError(f"{path}: dataset definition not found")
        return _parse_file(path, builtin=False)
    resource = importlib.resources.files(BUILTIN_PACKAGE) / f"{text_path}.toml"
    if not resource.is_file():
        known = ", ".join(builtin_datasets())
        raise DefinitionError(f"{text_path}: not a .toml file and not a builtin dataset (builtin: {known})")
    with importlib.resources.as_file(resource) as real:
        return _parse_file(Path(real), builtin=True)


def _parse_file(path: Path, *, builtin: bool) -> DatasetDef:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DefinitionError(f"{path}: cannot read the definition ({e})") from None
    return parse_definition(text, path.resolve(), builtin=builtin)


def definition_from_text(text: str, source: str | Path) -> DatasetDef:
    """A definition parsed from its TOML text (e.g. the copy a label store keeps); ``source`` names where
    the text came from in errors. A relative ``root`` key stays relative (no folder to anchor it to)."""
    return parse_definition(text, Path(str(source)), builtin=False, anchored=False)
