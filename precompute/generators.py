"""Region generators, one registry. Each builds from keyword arguments and maps RGB uint8 to a label map."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Generator(Protocol):
    name: str
    params: dict[str, Any]

    def provenance(self) -> dict[str, Any]: ...

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


def _sam(**kwargs: Any) -> Generator:
    from rat.precompute.sam import SamGenerator

    return SamGenerator(**kwargs)


def _superpixels(**kwargs: Any) -> Generator:
    from rat.precompute.superpixels import SuperpixelGenerator

    return SuperpixelGenerator(**kwargs)


GENERATORS: dict[str, Callable[..., Generator]] = {"sam": _sam, "superpixels": _superpixels}


def build_generator(name: str, **kwargs: Any) -> Generator:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    return GENERATORS[name](**kwargs)
