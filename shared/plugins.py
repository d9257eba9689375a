"""Plug-ins: classes found by name in an entry-point group of any installed distribution.

Region generators (``rat.region_generators``, :mod:`rat.shared.regions`) and models (``rat.models``,
:mod:`rat.training.model.registry`) are found this way; this package registers its own in the same groups, so
a lab adds one by installing a package of its own. A class is registered under its ``name`` (a class
attribute that must equal the registered name). Torch-free: the command lines' help lists the names from the
installed distributions' metadata without importing any plug-in.

Parameters: a class's keyword parameters and their defaults are its signature's, plus what its optional
``parameter_defaults()`` returns when it takes ``**params`` (:func:`parameters`). Values given on a command
line as ``NAME=VALUE`` (:func:`parse_assignment`) are checked against the defaults' kinds before anything is
built (:func:`value_problem`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
from collections.abc import Mapping
from typing import Any

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


def parameters(cls: type) -> tuple[dict[str, Any], bool]:
    """({parameter: default}, whether these are all) of a plug-in class: its signature's keyword parameters,
    updated by ``parameter_defaults()`` when it takes ``**params`` and has one; without that, a class taking
    ``**params`` may take others too. A parameter without a default has ``inspect.Parameter.empty``."""
    found, complete = {}, True
    for p in inspect.signature(cls).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            more = getattr(cls, "parameter_defaults", None)
            if more is None:
                complete = False
            else:
                found.update(more())
        elif p.kind is not p.VAR_POSITIONAL:
            found[p.name] = p.default
    return found, complete


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (``--param``, ``--model-param``): VALUE read as JSON when it parses (3, 0.5, true,
    [1, 2], "text"), else as text. ValueError when ``text`` is not NAME=VALUE."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise ValueError(f"{text!r} is not NAME=VALUE")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def value_problem(value: Any, default: Any) -> str | None:
    """What ``value`` should be when it is not of the kind of ``default`` (None: fine, or nothing known).

    Kinds: true or false, an integer, a number, text, a list (each item as the default's first). A number
    whose default is positive (a size, a count, a rate) must not be negative."""
    if default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int | float):
        integer = isinstance(default, int)
        kinds = int if integer else int | float
        want = "an integer" if integer else "a number"
        if not isinstance(value, kinds) or isinstance(value, bool):
            return want
        return f"{want} >= 0" if default > 0 and value < 0 else None
    if isinstance(default, str):
        return None if isinstance(value, str) else "text"
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            return "a list"
        problems = [value_problem(item, default[0]) for item in value] if default else []
        return next((f"a list of items each {p}" for p in problems if p), None)
    return None
