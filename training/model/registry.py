"""Models as plug-ins: every network `rat-train --model NAME` trains is found by name in an entry-point group.

A model is a class registered under its name in the entry-point group :data:`ENTRY_POINT_GROUP` of any
installed distribution; this package registers its own there the same way (``rat``, ``rat-small`` and the
baselines of :mod:`rat.training.model.adapters`), so a lab adds a network by installing a package of its
own. The interface, the same shape as a region generator's:

- ``name``: the name it is registered under (class attribute); checkpoints and tables name the model by it;
- ``__init__(**params)``: keyword parameters, each with a default (``rat-train --model-param KEY=VALUE``),
  or ``**params`` and a classmethod ``parameter_defaults()`` listing them; values are checked against the
  defaults' kinds before the class is called (:func:`make_model`, the one way models are made); a model
  whose signature has ``attention``, ``width``, ``backend`` or ``memory`` is given the trainer's settings of
  those names (RAT's ablations, its kernels and memory policy);
- ``params``: every parameter that changes the network, defaults included (rebuilds it from a checkpoint);
- ``uses_labels``: whether its forward takes the label map: ``forward(image, labels)`` with image
  (B, C, H, W) float and labels (B, H, W) integer, else ``forward(image)``. Region-free models are never
  given label maps and cost no region plan; the focal region loss still weights their pixels by the label
  map of the image (the loss is the user's choice, not the model's);
- ``provenance() -> dict``: at least ``{"name", "package", "version", "class", "params"}``: the checkpoint,
  the exported model card and the table record it;
- ``build(channels) -> nn.Module``: the network for images of ``channels`` channels, randomly initialised
  (nothing is downloaded), whose output has the input's shape.

This module is torch-free and loads no model module until one is built: the command line's help lists the
names from the installed distributions' metadata.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from functools import cache
from typing import Any, Protocol

from rat.shared import plugins
from rat.shared.errors import ParamError, RatError, one_line

#: Where models are registered (``[project.entry-points."rat.models"]``).
ENTRY_POINT_GROUP = "rat.models"
#: Trainer settings handed to the models whose signature takes them.
SETTINGS = ("attention", "width")
RUNTIME = ("backend", "memory")


class Model(Protocol):
    name: str
    params: dict[str, Any]
    uses_labels: bool

    def provenance(self) -> dict[str, Any]: ...

    def build(self, channels: int) -> Any: ...


class ModelError(RatError, RuntimeError):
    """A registered model that cannot be loaded or built (its package missing or broken), in one line."""


@cache
def registered() -> dict[str, importlib.metadata.EntryPoint]:
    """Model name -> its entry point, over every installed distribution (read once per process)."""
    return plugins.entry_points(ENTRY_POINT_GROUP, "model", ModelError, first=("rat", "rat-small"))


def model_names() -> tuple[str, ...]:
    """Every registered model name: this package's first, then the plug-ins'."""
    return tuple(registered())


def plugin_origins() -> dict[str, str]:
    """Models registered by other distributions: name -> "distribution version"."""
    return plugins.plugin_origins(registered())


def model_class(name: str) -> type:
    """The class of model ``name`` (ParamError naming the known ones; ModelError if it won't load)."""
    return plugins.load(registered(), name, "model", ModelError, "model", ENTRY_POINT_GROUP)


def accepted(cls: type) -> set[str]:
    """The keyword parameters of a model class's signature (those the trainer's settings go to)."""
    return set(inspect.signature(cls).parameters)


def make_model(name: str, params: dict[str, Any] | None = None) -> Model:
    """The model ``name`` with ``params``, checked before it is made: ParamError (``model_params``) naming a
    parameter it does not take, or a value of another kind than its default's
    (:func:`rat.shared.plugins.value_problem`); the class's own refusals in one line too."""
    cls = model_class(name)
    params = dict(params or {})
    known, complete = plugins.parameters(cls)
    unknown = sorted(set(params) - set(known)) if complete else []
    if unknown:
        raise ParamError("model_params", f"model {name!r} takes no parameter {unknown[0]!r} (it takes: "
                         f"{', '.join(known) or 'none'})")
    for key, value in params.items():
        want = plugins.value_problem(value, known.get(key, inspect.Parameter.empty))
        if want is not None:
            raise ParamError("model_params", f"model {name!r}: {key}={value!r} is not {want} (default "
                             f"{known[key]!r})")
    try:
        return cls(**params)
    except RatError:
        raise
    except (TypeError, ValueError) as err:
        raise ParamError("model_params", f"model {name!r}: {one_line(err)}") from None


def build_network(name: str, channels: int, params: dict[str, Any] | None = None,
                  runtime: dict[str, Any] | None = None) -> Any:
    """The network of model ``name`` for ``channels``-channel images, randomly initialised; ``runtime``
    settings (``backend``, ``memory``) go only to models that take them. The module carries
    ``uses_labels`` (see :func:`takes_labels`). A network that its parameters do not build is one line
    (ParamError), as is a missing package (ModelError)."""
    takes = accepted(model_class(name))
    extra = {k: v for k, v in (runtime or {}).items() if k in takes and v is not None}
    model = make_model(name, {**(params or {}), **extra})
    try:
        net = model.build(channels)
    except ModuleNotFoundError as err:
        raise ModelError(f"model {name!r} needs the package {err.name!r}, which is not installed "
                         f"({install_hint(model)})") from None
    except RatError:
        raise
    except (TypeError, ValueError, ArithmeticError, IndexError, KeyError, RuntimeError) as err:
        raise ParamError("model_params", f"model {name!r} is not built with {model.params} "
                         f"({type(err).__name__}: {one_line(err)})") from None
    if not hasattr(type(net), "uses_labels"):  # RAT says it itself
        net.uses_labels = bool(model.uses_labels)
    return net


def install_hint(model: Any) -> str:
    """How to install what a model needs (its class's ``install``, else its package's name)."""
    return getattr(model, "install", None) or f"pip install {model.provenance().get('package', '?')}"


def takes_labels(model: Any) -> bool:
    """Whether a built network takes label maps (unwrapping DistributedDataParallel); RAT's ablations and
    every region-free model do not."""
    model = getattr(model, "module", model)
    return bool(getattr(model, "uses_labels", True))
