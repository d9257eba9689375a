"""Plug-ins: classes found by name in an entry-point group of any installed distribution.

Region generators (``rat.region_generators``, :mod:`rat.shared.regions`) and models (``rat.models``,
:mod:`rat.training.model.registry`) are found this way; this package registers its own in the same groups, so
a lab adds one by installing a package of its own. A class is registered under its ``name`` (a class
attribute that must equal the registered name). Torch-free: the command lines' help lists the names from the
installed distributions' metadata without importing any plug-in.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from rat.shared import DISTRIBUTION
from rat.shared.errors import ParamError, one_line

EntryPoint = importlib.metadata.EntryPoint


def entry_points(group: str, kind: str, error: type[Exception], first: tuple[str, ...] = ()
                 ) -> dict[str, EntryPoint]:
    """Name -> entry point of every class registered in ``group``: this package's first (``first`` before
    the rest), then the plug-ins', each by name. ``error`` (naming the ``kind``) when two distributions
    register one name for different classes."""
    found: dict[str, EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in found and found[ep.name].value != ep.value:
            raise error(f"{kind} {ep.name!r} is registered twice: {found[ep.name].value} "
                        f"({origin(found[ep.name])}) and {ep.value} ({origin(ep)})")
        found[ep.name] = ep

    def order(item: tuple[str, EntryPoint]) -> tuple[bool, bool, str]:
        return origin(item[1]) != DISTRIBUTION, item[0] not in first, item[0]

    return dict(sorted(found.items(), key=order))


def origin(ep: EntryPoint) -> str:
    """The distribution that registered ``ep``."""
    return ep.dist.metadata["Name"] if ep.dist is not None else "?"


def plugin_origins(found: Mapping[str, EntryPoint]) -> dict[str, str]:
    """The entries other distributions registered: name -> "distribution version"."""
    return {name: f"{origin(ep)} {ep.dist.version}" for name, ep in found.items()
            if ep.dist is not None and origin(ep) != DISTRIBUTION}


def load(found: Mapping[str, EntryPoint], name: str, kind: str, error: type[Exception], param: str,
         group: str) -> type:
    """The class registered as ``name``: ParamError (``param``) naming the known names, ``error`` in one line
    when it does not import or names itself otherwise."""
    if name not in found:
        known = ", ".join(found) or f"none (installing {DISTRIBUTION} registers them in {group})"
        raise ParamError(param, f"unknown {kind} {name!r}; choose one of {known}")
    ep = found[name]
    try:
        cls = ep.load()
    except Exception as err:  # noqa: BLE001 - a plug-in's import failure is told in one line
        raise error(f"{kind} {name!r} ({ep.value}, from {origin(ep)}) does not load: "
                    f"{one_line(err)}") from None
    if getattr(cls, "name", None) != name:
        raise error(f"{kind} {name!r}: {ep.value} has name {getattr(cls, 'name', None)!r}; a {kind}'s `name` "
                    "must be the name it is registered under")
    return cls
