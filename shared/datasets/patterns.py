"""File patterns: paths relative to the data root with named fields, and finding the files.

A pattern such as ``"{patient}/full_dose/{slice}.dcm"`` has named fields: ``{name}`` matches one
or more characters within one path component (a name used twice must match the same text),
``{*}`` matches any text within one path component and is not part of the key. An HQ and an LQ
file pair when their named fields agree. A group lists several patterns (e.g. PNG and TIFF
variants); every HQ and LQ pattern of a group uses the same named fields.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from pathlib import Path

FIELD = re.compile(r"\{([^{}]*)\}")
"""A named field ``{name}`` (or ``{*}``) of a pattern; group 1 is the name."""


def pattern_fields(pattern: str) -> set[str]:
    """The names of the pattern's named fields ({*} excluded)."""
    return {f for f in FIELD.findall(pattern) if f != "*"}


@functools.cache
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex that fullmatches the posix paths the pattern describes, one group per field."""
    out, seen, pos = [], set(), 0
    for m in FIELD.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name = m.group(1)
        if name == "*":
            out.append(r"[^/]*?")
        elif name in seen:
            out.append(f"(?P={name})")
        else:
            out.append(f"(?P<{name}>[^/]+?)")
            seen.add(name)
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


def match_files(
    root: Path, patterns: tuple[str, ...], *, dirs: bool, skip: str
) -> dict[tuple, list[str]]:
    """Files (and directories, if dirs) under root matching any pattern: key -> relative paths.

    The key is the tuple of (field, value) pairs sorted by field name. Paths inside the top-level
    folder ``skip`` (the index's own state folder) are left out.
    """
    found: dict[tuple, set[str]] = defaultdict(set)
    for pattern in patterns:
        regex = pattern_regex(pattern)
        for path in root.glob(FIELD.sub("*", pattern)):
            rel = path.relative_to(root).as_posix()
            if rel.split("/", 1)[0] == skip or not (path.is_file() or dirs and path.is_dir()):
                continue
            m = regex.fullmatch(rel)
            if m:
                found[tuple(sorted(m.groupdict().items()))].add(rel)
    return {k: sorted(v) for k, v in found.items()}


def fill_pattern(pattern: str, values: dict[str, str]) -> str:
    """The pattern with its named fields filled in ({*} becomes *)."""
    return FIELD.sub(lambda m: values.get(m.group(1), "*"), pattern)
