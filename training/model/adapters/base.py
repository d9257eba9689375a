"""What every baseline adapter shares: its parameters and provenance, and the wrapper that fits any image.

An adapter is a registered model class (:mod:`rat.training.model.registry`) with class attributes ``name``,
``distribution`` (the package to install), ``cls`` (the package's class, "module:Class"), ``install`` (the
command that installs it), ``defaults`` (every parameter and its default: the sizes of the model's paper
unless said otherwise), optionally ``channels`` (the channel counts the class supports) and ``fit`` (the
input sizes it needs); it implements ``network(channels) -> nn.Module``, importing its package there.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rat.shared.errors import ParamError


@dataclass(frozen=True)
class Fit:
    """Input sizes a network needs: H and W multiples of ``multiple``, at least ``minimum``, square or not;
    ``extra`` constant channels appended to the input (DRUNet's noise level map); ``residual``: the output
    is the input plus the network's output (for networks made for other tasks that do not add it)."""

    multiple: int = 1
    minimum: int = 1
    square: bool = False
    extra: tuple[float, ...] = ()
    residual: bool = False


class Fitted(nn.Module):
    """A package's network that takes any (B, C, H, W) image and returns its size: the input padded at the
    bottom and right by edge replication to what the network needs (:class:`Fit`), the output cropped back.
    Its only submodule is ``net`` (the package's class), so its parameters are the package's."""

    def __init__(self, net: nn.Module, fit: Fit = Fit()) -> None:
        super().__init__()
        self.net = net
        self.fit = fit

    def forward(self, image: Tensor) -> Tensor:
        b, c, h, w = image.shape
        f = self.fit
        th, tw = max(h, f.minimum), max(w, f.minimum)
        if f.square:
            th = tw = max(th, tw)
        th, tw = -(-th // f.multiple) * f.multiple, -(-tw // f.multiple) * f.multiple
        x = F.pad(image, (0, tw - w, 0, th - h), mode="replicate")  # a new tensor: packages may work in place
        if f.extra:
            levels = torch.tensor(f.extra, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = torch.cat([x, levels.expand(b, -1, th, tw)], dim=1)
        out = self.net(x)[:, :c, :h, :w]
        return image + out if f.residual else out


class Adapter:
    """A registered baseline: parameters, provenance and the fitted network (see the module doc)."""

    name: str = ""
    distribution: str = ""
    cls: str = ""
    install: str = ""
    defaults: dict[str, Any] = {}
    channels: tuple[int, ...] | None = None
    uses_labels = False

    def __init__(self, **params: Any) -> None:
        self.params = {**self.defaults, **params}  # checked against the defaults by registry.make_model

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        return dict(cls.defaults)

    def provenance(self) -> dict[str, Any]:
        try:
            version = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"name": self.name, "package": self.distribution, "version": version, "class": self.cls,
                "params": dict(self.params)}

    def fit(self, channels: int) -> Fit:
        return Fit()

    def network(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def build(self, channels: int) -> nn.Module:
        if self.channels is not None and channels not in self.channels:
            allowed = " or ".join(map(str, self.channels))
            raise ParamError("model", f"{self.name} ({self.cls}) restores {allowed}-channel images, not "
                             f"{channels}-channel ones")
        return Fitted(self.network(channels), self.fit(channels))
