"""Low-dose CT baselines from ldct-benchmark (``ldctbench.methods.<method>.network.Model``), random weights.

Its declared dependencies pin ``pydicom==3.0.1`` and pull wandb and pandas, so install it without them:
``pip install --no-deps ldct-benchmark`` (the network modules need only torch, numpy and scipy). Its
networks take 1-channel images. The GAN method (WGAN-VGG) contributes its generator, trained here with the
chosen loss (no critic, no VGG loss). Defaults are the package's.
"""

from __future__ import annotations

import importlib
from argparse import Namespace

from torch import nn

from rat.training.model.adapters.base import Adapter, Fit

INSTALL = "pip install --no-deps ldct-benchmark"


class _Ldct(Adapter):
    distribution = "ldct-benchmark"
    install = INSTALL
    channels = (1,)
    method = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.cls = f"ldctbench.methods.{cls.method}.network:Model"

    def network(self, channels: int) -> nn.Module:
        module = importlib.import_module(f"ldctbench.methods.{self.method}.network")
        return module.Model(Namespace(), **self.params)


class REDCNN(_Ldct):
    name, method = "redcnn", "redcnn"
    defaults = {"out_ch": 96}

    def fit(self, channels: int) -> Fit:
        return Fit(minimum=21)  # five valid 5x5 convolutions


class CNN10(_Ldct):
    name, method = "cnn10", "cnn10"


class WGANVGG(_Ldct):
    name, method = "wganvgg", "wganvgg"


class QAE(_Ldct):
    """Its quadratic convolutions draw their initial weights from scipy's global numpy generator (the trainer
    seeds it)."""

    name, method = "qae", "qae"

    def fit(self, channels: int) -> Fit:
        return Fit(minimum=21)


class ResNet(_Ldct):
    name, method = "ldct-resnet", "resnet"
    defaults = {"n_channels": 128, "n_blocks": 10}
