"""A generator's keyword arguments from the command line, and the command line's options from the generators.

Both follow the contract of :mod:`rat.shared.regions`, for every registered generator alike (this package's
and plug-ins'); nothing here names one.

- :func:`generator_options`: one option per keyword parameter of every generator that loads, ``--<prefix>-
  <parameter>`` with the generator's ``option_prefix`` (its name unless it says otherwise); generators that
  share an option (the SAM family's ``--points-per-side``) share one. The parameters the command's own options
  set (:data:`rat.shared.regions.COMMON`: ``--checkpoint``, ``--model-type``, ``--device``, ``--max-memory``)
  and options whose flag the command has already are left out (``--param NAME=VALUE`` reaches any of them).
- :func:`generator_kwargs`: the keyword arguments of one generator from what the user set: ``checkpoint`` and
  ``device`` when it takes them (they have values for every generator: an environment variable, a default),
  ``model_type`` and ``max_memory`` refused when it does not, its options refused when they are another
  generator's, and its parameters by their own names (``--param``), refused when an option sets one too.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from rat.shared import DISTRIBUTION, plugins
from rat.shared.regions import COMMON, GeneratorError, GeneratorInfo, describe, generator_names


@dataclass(frozen=True)
class GeneratorOption:
    """One command-line option that sets a parameter of one or more generators."""

    flag: str                                   # "--sp-n-segments"
    targets: dict[str, str]                     # generator -> its parameter the option sets
    defaults: dict[str, Any] = field(default_factory=dict)   # generator -> that parameter's default
    choices: tuple[Any, ...] | None = None

    @property
    def dest(self) -> str:
        """The option's name as a Python identifier (``gen_sp_n_segments``)."""
        return "gen_" + self.flag.lstrip("-").replace("-", "_")

    @property
    def kind(self) -> type | None:
        """The type of its values: that of the first default (None when unknown)."""
        first = next(iter(self.defaults.values()), None)
        return None if first is None else type(first)

    @property
    def help(self) -> str:
        """Which generators it applies to, the parameter, and the defaults."""
        params = sorted(set(self.targets.values()))
        values = {repr(v) for v in self.defaults.values()}
        if len(values) == 1:
            default = f"default {values.pop()}"
        else:
            default = "defaults " + ", ".join(f"{n}: {v!r}" for n, v in self.defaults.items())
        return f"{', '.join(self.targets)}: {' / '.join(params)} ({default})."


def flag_of(info: GeneratorInfo, parameter: str) -> str:
    """The option of a generator's parameter: ``--<prefix>-<parameter>``, or ``--<parameter>``."""
    words = parameter.replace("_", "-")
    return f"--{info.option_prefix}-{words}" if info.option_prefix else f"--{words}"


def loadable() -> dict[str, GeneratorInfo | str]:
    """Every registered generator: its description, or why it does not load (one line)."""
    found: dict[str, GeneratorInfo | str] = {}
    for name in generator_names():
        try:
            found[name] = describe(name)
        except Exception as err:  # noqa: BLE001 - a broken plug-in costs its own options, never the command
            found[name] = str(err)
    return found


def generator_options(taken: Collection[str] = ()) -> list[GeneratorOption]:
    """The options of every generator that loads (see the module doc), in the generators' order; ``taken``:
    the flags the command has already."""
    by_flag: dict[str, GeneratorOption] = {}
    for name, info in loadable().items():
        if isinstance(info, str):
            continue
        for parameter, default in info.parameters.items():
            flag = flag_of(info, parameter)
            scalar = default is None or default is inspect.Parameter.empty or \
                isinstance(default, int | float | str)                # lists and tables: --param, as JSON
            if parameter in COMMON or flag in taken or not scalar:
                continue
            option = by_flag.setdefault(flag, GeneratorOption(flag, {}, {}, info.choices.get(parameter)))
            option.targets[name] = parameter
            if default is not inspect.Parameter.empty:
                option.defaults[name] = default
    return list(by_flag.values())


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--param`` (:func:`rat.shared.plugins.parse_assignment`)."""
    try:
        return plugins.parse_assignment(text)
    except ValueError as err:
        raise GeneratorError(f"--param: {err}") from None


def generator_kwargs(name: str, *, checkpoint: Any = None, device: str | None = None,
                     model_type: str | None = None, max_memory: int | None = None,
                     options: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                     known: Collection[GeneratorOption] | None = None) -> dict[str, Any]:
    """The keyword arguments of generator ``name`` (see the module doc). ``options``: values of generator
    options by flag; ``params``: parameters by their own names; ``known``: the options there are (default
    :func:`generator_options`). GeneratorError (one line naming the flags) for what does not apply."""
    info = describe(name)
    ambient = {k: v for k, v in (("checkpoint", checkpoint), ("device", device))
               if v is not None and info.takes(k)}
    named: dict[str, tuple[str, Any]] = {}        # parameter -> (the flag that set it, value)
    for key, value in (("model_type", model_type), ("max_memory", max_memory)):
        if value is not None:
            flag = f"--{key.replace('_', '-')}"
            if not info.takes(key):
                raise GeneratorError(f"{flag} does not apply to the {name} generator")
            named[key] = (flag, value)
    by_flag = {o.flag: o for o in (generator_options() if known is None else known)}
    for flag, value in (options or {}).items():
        option = by_flag.get(flag)
        if option is None or name not in option.targets:
            owners = ", ".join(option.targets) if option is not None else "no"
            plural = "s" if option is not None and len(option.targets) > 1 else ""
            raise GeneratorError(f"{flag} applies to the {owners} generator{plural}, not to {name}")
        named[option.targets[name]] = (flag, value)
    clash = next((k for k in params or {} if k in named), None)
    if clash is not None:
        flag = named[clash][0]
        raise GeneratorError(f"--param {clash}={params[clash]!r} and {flag} both set {clash}: give it once")
    return {**ambient, **{k: v for k, (_, v) in named.items()}, **(params or {})}


def generators_help() -> str:
    """The command line's help of its generator choice: each generator and its summary, plug-ins with their
    distribution (and those that do not load, with why)."""
    ours, plugins = [], []
    for name, info in loadable().items():
        if isinstance(info, str):
            plugins.append(f"{name} (does not load: {info})")
        elif info.origin.startswith(f"{DISTRIBUTION} "):
            ours.append(f"{name} ({info.summary})")
        else:
            plugins.append(f"{name} ({info.summary}; {info.origin})")
    more = f"; plug-ins: {', '.join(plugins)}" if plugins else ""
    return (f"Region source: {', '.join(ours)}, or a generator another installed package registers{more}. "
            "Its parameters are the options below (or --param NAME=VALUE).")


def model_types_help() -> str:
    """The command line's help of ``--model-type``: the model types of each generator that has them."""
    kinds = "; ".join(f"{name}: {', '.join(info.model_types)}"
                      + (f" (default {info.default_model_type})" if info.default_model_type else "")
                      for name, info in loadable().items()
                      if isinstance(info, GeneratorInfo) and info.model_types)
    return f"Model type matching the checkpoint ({kinds})."
