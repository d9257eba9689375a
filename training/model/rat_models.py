"""RAT as registered models (``rat``, ``rat-small``), found the way every model is
(:mod:`rat.training.model.registry`): their parameters are any argument of :class:`RAT`."""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

from torch import nn

from rat.shared import DISTRIBUTION
from rat.training.model.network import MODELS, RAT, SMALL


class _Rat:
    name = ""
    preset: dict[str, Any] = {}

    def __init__(self, attention: str = "rmsa", width: int | None = None, backend: str = "auto",
                 memory: str = "selective", **params: Any) -> None:
        width = {} if width is None else {"width": width}
        self.params = {"attention": attention, **width, "backend": backend, "memory": memory, **params}

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        """Every argument of :class:`RAT` but the channel count, with this model's defaults (checked by
        registry.make_model)."""
        args = {k: p.default for k, p in inspect.signature(RAT).parameters.items() if k != "img_channel"}
        return {**args, **cls.preset}

    @property
    def uses_labels(self) -> bool:
        """Region attention takes the label map; the window and global attention ablations do not."""
        return self.params.get("attention", "rmsa") == "rmsa"

    def provenance(self) -> dict[str, Any]:
        keep = {k: v for k, v in self.params.items() if k not in ("backend", "memory")}
        version = importlib.metadata.version(DISTRIBUTION)
        return {"name": self.name, "package": DISTRIBUTION, "version": version,
                "class": "rat.training.model.network:RAT", "params": keep}

    def build(self, channels: int) -> nn.Module:
        return MODELS[self.name](img_channel=channels, **self.params)


class Rat(_Rat):
    """The paper's model (15,945,025 parameters for one channel)."""

    name = "rat"


class RatSmall(_Rat):
    """A small RAT for CPU demos and tests."""

    name = "rat-small"
    preset = SMALL
