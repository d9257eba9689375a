"""Region generators: where label maps come from, found by name in the entry-point group of plug-ins.

A generator is a class registered under its name in the entry-point group :data:`ENTRY_POINT_GROUP` of any
installed distribution; this package registers its own there too (``sam``, ``sam-hq``, ``efficientvit-sam``,
``superpixels``), so a lab adds a segmenter by installing a package of its own. The contract
(:class:`Generator`):

- ``name``: the registered name (class attribute); it names the generator in stores and checkpoints;
- ``__init__(**params)``: built from keyword arguments, each with a default; a generator that takes
  ``checkpoint`` (and ``model_type``, ``device``, ``max_memory``) gets them from the command line's options;
- ``params``: every parameter that changes the output, defaults included;
- ``provenance() -> dict``: at least ``{"name": ..., "params": ...}``; the store records it, and a store or
  merge with another provenance is refused;
- ``__call__(rgb)``: an (H, W, 3) uint8 RGB image -> an (H, W) integer label map, 0 = no region, 1..L.

Optional class attributes and class methods, read by :func:`describe` (the only reader; defaults in brackets):

- ``summary``: one line for the command line's help [the first line of the class docstring];
- ``option_prefix``: its keyword parameters become options ``--<prefix>-<parameter>`` of `rat-precompute
  masks` ("": ``--<parameter>``, shared by the generators that take it, as the SAM family's are) [its name];
- ``parameter_choices``: {parameter: allowed values} for the help and the options' checks [none];
- ``parameter_defaults()``: {parameter: default} of what it takes as ``**params`` [the signature's only];
- ``checkpoint_path(checkpoint) -> Path``: the weights file from the argument (or its environment variable),
  with one-line errors; cluster workers and `rat-train restore` get that file [the argument as it is];
- ``weights_label``: how messages call its weights ("HQ-SAM") [its name];
- ``model_types``, ``default_model_type``: what ``--model-type`` takes, for the help [none].

The module a generator is registered from is imported to build `rat-precompute masks`'s options and help, so
it imports heavy packages (torch, model code) where they are used, not at its top.

Parameters are checked before a generator is built (:func:`check_parameters`): a name the generator does not
take is refused with the list of those it does, and a value of another type than its default's (text for a
number) is refused, so a bad configuration is never recorded in a store; the generator checks the values
themselves (superpixels: counts at least 1, ...), and whatever its constructor raises is one line naming it.
:mod:`rat.shared.regions.options` turns the command line's options into a generator's keyword arguments.

Its input is rendered by :func:`rat.shared.regions.window.render_for_sam` and its output checked by
:func:`image_labels`; overlapping masks are resolved into one label map by :mod:`rat.shared.regions.labels`.
This module is torch-free and loads no generator module until one is described or built: the list of names
comes from the installed distributions' metadata.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rat.shared import plugins
from rat.shared.errors import ParamError, RatError, one_line
from rat.shared.regions.window import WindowLike, render_for_sam

#: Where generators are registered (``[project.entry-points."rat.region_generators"]``).
ENTRY_POINT_GROUP = "rat.region_generators"
#: The generator `rat-precompute masks` runs unless told otherwise (the design card's: SAM ViT-B).
DEFAULT_GENERATOR = "sam"
#: Parameters the command line's own options set, for the generators that take them.
COMMON = ("checkpoint", "model_type", "device", "max_memory")


class Generator(Protocol):
    """What every region generator has (see the module doc, which also lists the optional parts)."""

    name: str
    params: dict[str, Any]

    def provenance(self) -> dict[str, Any]: ...

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


class GeneratorError(RatError, RuntimeError):
    """A registered generator that cannot be loaded (its package broken or missing), in one line."""


@cache
def registered() -> dict[str, importlib.metadata.EntryPoint]:
    """Generator name -> its entry point, over every installed distribution (read once per process)."""
    return plugins.entry_points(ENTRY_POINT_GROUP, "generator", GeneratorError)


def generator_names() -> tuple[str, ...]:
    """Every registered generator name: this package's first, then the plug-ins'."""
    return tuple(registered())


def plugin_origins() -> dict[str, str]:
    """Generators registered by other distributions: name -> "distribution version"."""
    return plugins.plugin_origins(registered())


def generator_class(name: str) -> type:
    """The class of generator ``name`` (ParamError naming the known ones; GeneratorError if it won't load)."""
    return plugins.load(registered(), name, "generator", GeneratorError, "name", ENTRY_POINT_GROUP)


def check_parameters(name: str, kwargs: dict[str, Any]) -> type:
    """The class of generator ``name`` after checking ``kwargs`` against its parameters (see the module doc);
    GeneratorError naming the generator and the parameter otherwise."""
    cls = generator_class(name)
    known, complete = plugins.parameters(cls)
    unknown = [k for k in kwargs if k not in known] if complete else []
    if unknown:
        raise GeneratorError(f"generator {name} has no parameter {unknown[0]!r}; its parameters: "
                             f"{', '.join(known)}")
    for key, value in kwargs.items():
        want = plugins.value_problem(value, known.get(key, inspect.Parameter.empty))
        if want is not None:
            raise GeneratorError(f"generator {name}: {key}={value!r} is not {want} (default "
                                 f"{known[key]!r})")
    return cls


def build_generator(name: str, **kwargs: Any) -> Generator:
    """The generator ``name`` built with ``kwargs`` (SAM family: checkpoint, model_type, device, max_memory
    and the package generator's parameters), checked first (:func:`check_parameters`). A constructor that
    refuses its values (ValueError, TypeError, ...) is told in one line naming the generator; the package's
    own errors (missing weights, ...) as they are."""
    cls = check_parameters(name, kwargs)
    try:
        return cls(**kwargs)
    except RatError as err:
        if isinstance(err, ParamError):
            raise GeneratorError(f"generator {name}: {err.param}: {err.reason}") from None
        raise
    except (TypeError, ValueError, ArithmeticError, KeyError, IndexError) as err:
        raise GeneratorError(f"generator {name}: bad parameters ({type(err).__name__}: "
                             f"{one_line(err)})") from None


@dataclass(frozen=True)
class GeneratorInfo:
    """A generator class with its optional parts (see the module doc), defaults filled in."""

    name: str
    cls: type
    summary: str
    parameters: dict[str, Any]      # every parameter it takes, with its default
    complete: bool                  # whether those are all (a generator taking **params may take others)
    option_prefix: str
    choices: dict[str, tuple[Any, ...]]
    checkpoint_path: Callable[[str | Path | None], Path | None]
    weights_label: str
    model_types: tuple[str, ...]
    default_model_type: str | None
    origin: str                     # the distribution that registered it, and its version

    def takes(self, parameter: str) -> bool:
        """Whether it takes ``parameter`` as a keyword argument."""
        return parameter in self.parameters


def _given(checkpoint: str | Path | None) -> Path | None:
    return None if checkpoint is None else Path(checkpoint)


def describe(name: str) -> GeneratorInfo:
    """Generator ``name`` and its optional parts (loads its class: ParamError for an unknown name,
    GeneratorError for one that does not load)."""
    cls = generator_class(name)
    parameters, complete = plugins.parameters(cls)
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    ep = registered()[name]
    return GeneratorInfo(
        name=name, cls=cls, summary=getattr(cls, "summary", None) or (doc[0] if doc else name),
        parameters=parameters, complete=complete, option_prefix=getattr(cls, "option_prefix", name),
        choices=dict(getattr(cls, "parameter_choices", {})),
        checkpoint_path=getattr(cls, "checkpoint_path", _given),
        weights_label=getattr(cls, "weights_label", name),
        model_types=tuple(getattr(cls, "model_types", ())),
        default_model_type=getattr(cls, "default_model_type", None),
        origin=f"{plugins.origin(ep)} {ep.dist.version}" if ep.dist is not None else "?")


def image_labels(generator: Generator, image: np.ndarray, window: WindowLike, what: str) -> np.ndarray:
    """The (H, W) label map ``generator`` makes of ``image`` ((H, W) or (H, W, C) in source units), rendered
    for SAM in ``window`` (:func:`rat.shared.regions.window.render_for_sam`) and checked to be a label map of
    the image (integers, 0 = no region, 1..L, the image's height and width). ``what`` names the image in
    errors: GeneratorError when the generator fails on it, ValueError when its output is no such label map."""
    name = generator.name
    try:
        labels = np.asarray(generator(render_for_sam(image, window)))
    except RatError:
        raise
    except Exception as err:  # noqa: BLE001 - a plug-in's fault on one image fails that image only
        raise GeneratorError(f"{what}: generator {name} failed ({type(err).__name__}: "
                             f"{one_line(err)})") from None
    if labels.shape != image.shape[:2]:
        raise ValueError(f"{what}: generator {name} returned {labels.shape} for an image of "
                         f"{image.shape[:2]}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{what}: generator {name} returned {labels.dtype} labels; a label map holds "
                         "integers (0 = no region, 1..L)")
    if labels.dtype.kind == "i" and labels.size and int(labels.min()) < 0:
        raise ValueError(f"{what}: generator {name} returned negative labels ({int(labels.min())}); a "
                         "label map holds 0 (no region) and 1..L")
    return labels

