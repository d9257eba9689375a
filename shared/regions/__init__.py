"""Region generators: where label maps come from (SAM, superpixels), one registry.

A generator is built from keyword arguments, maps an (H, W, 3) uint8 RGB image to an (H, W) label map
(0 = no region, 1..L) and describes itself with :meth:`Generator.provenance`, which the store and the
training checkpoints record. Its input is rendered by :func:`rat.shared.regions.window.render_for_sam`;
overlapping masks are resolved into one label map by :mod:`rat.shared.regions.labels`.

This module is torch-free (the command line's help reads the names below).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from rat.shared.errors import ParamError

#: Generator names, as the store records them.
GENERATOR_NAMES = ("sam", "superpixels")
#: scikit-image superpixel methods.
SUPERPIXEL_METHODS = ("slic", "felzenszwalb")


class Generator(Protocol):
    name: str
    params: dict[str, Any]

    def provenance(self) -> dict[str, Any]: ...

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


#: Where each generator class lives ("module:class"), imported only when it is built (SAM imports torch).
GENERATORS: dict[str, str] = {"sam": "rat.shared.regions.sam:SamGenerator",
                              "superpixels": "rat.shared.regions.superpixels:SuperpixelGenerator"}
assert tuple(GENERATORS) == GENERATOR_NAMES


def generator_class(name: str) -> type:
    """The class of generator ``name`` (ParamError naming the known ones)."""
    if name not in GENERATORS:
        raise ParamError("name", f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    module, attr = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_generator(name: str, **kwargs: Any) -> Generator:
    """The generator ``name`` built with ``kwargs`` (SAM: checkpoint, model_type, device, its parameters)."""
    return generator_class(name)(**kwargs)
