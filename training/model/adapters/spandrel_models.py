"""Baselines from spandrel (MIT): its own architecture classes, built with random weights.

Every network restores at the input's size (upscale 1): the pathology LQ images are already bicubically
upsampled back (the TMA recipe), so a super-resolution network works as it does on its denoising tasks.
Defaults are the sizes of each model's paper for denoising or restoration (SwinIR, Swin2SR: colour
denoising; HAT: its SR model's body with upscale 1; NAFNet: width 32 on SIDD; RCAN, DnCNN, DRUNet, SCUNet,
Uformer-B: their papers). ``--model-param`` changes any of them (smaller ones for CPU demos).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from rat.training.model.adapters.base import Adapter, Fit

SWIN = {"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 8, "mlp_ratio": 2.0}


class _Spandrel(Adapter):
    distribution = "spandrel"
    install = "pip install 'rat-restore[baselines]' (or pip install spandrel)"
    arch = ""  # spandrel.architectures.<arch>

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.cls = f"spandrel.architectures.{cls.arch}:{cls.arch}"

    def _class(self) -> type:
        return getattr(importlib.import_module(f"spandrel.architectures.{self.arch}"), self.arch)


class SwinIR(_Spandrel):
    """SwinIR; Swin2SR and HAT build the same way (their own upsampler)."""

    name, arch, upsampler = "swinir", "SwinIR", ""
    defaults = {**SWIN, "img_size": 128}

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=self.params["window_size"], minimum=16)

    def network(self, channels: int) -> nn.Module:
        return self._class()(in_chans=channels, upscale=1, upsampler=self.upsampler, img_range=1.0,
                             resi_connection="1conv", **self.params)


class Swin2SR(SwinIR):
    name, arch = "swin2sr", "Swin2SR"


class HAT(SwinIR):
    name, arch, upsampler = "hat", "HAT", "pixelshuffle"
    defaults = {**SWIN, "window_size": 16, "img_size": 64, "compress_ratio": 3, "squeeze_factor": 30,
                "conv_scale": 0.01, "overlap_ratio": 0.5, "num_feat": 64}


class RCAN(_Spandrel):
    """RGB images go through the package's mean shift (``norm``, ``rgb_range`` 255, inputs 0..1 as spandrel
    feeds them); grey images without it (``norm=False``, ``rgb_range=1``)."""

    name, arch = "rcan", "RCAN"
    defaults = {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16}

    def network(self, channels: int) -> nn.Module:
        rgb = channels == 3
        return self._class()(scale=1, n_colors=channels, norm=rgb, rgb_range=255 if rgb else 1, **self.params)


class DnCNN(_Spandrel):
    name, arch = "dncnn", "DnCNN"
    defaults = {"nc": 64, "nb": 17, "act_mode": "BR"}

    def network(self, channels: int) -> nn.Module:
        return self._class()(in_nc=channels, out_nc=channels, **self.params)


class NAFNet(_Spandrel):
    name, arch = "nafnet", "NAFNet"
    defaults = {"width": 32, "middle_blk_num": 12, "enc_blk_nums": [2, 2, 4, 8], "dec_blk_nums": [2, 2, 2, 2]}

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=2 ** len(self.params["enc_blk_nums"]))

    def network(self, channels: int) -> nn.Module:
        return self._class()(img_channel=channels, **self.params)


class DRUNet(_Spandrel):
    """Its input has one more channel than the image: the noise level map, here the constant
    ``noise_level`` (15/255, the default of DRUNet's code and of spandrel)."""

    name, arch = "drunet", "DRUNet"
    defaults = {"nc": [64, 128, 256, 512], "nb": 4, "noise_level": 15 / 255}

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=8, extra=(float(self.params["noise_level"]),))

    def network(self, channels: int) -> nn.Module:
        args = {k: v for k, v in self.params.items() if k != "noise_level"}
        return self._class()(in_nc=channels + 1, out_nc=channels, act_mode="R", downsample_mode="strideconv",
                             upsample_mode="convtranspose", **args)


class SCUNet(_Spandrel):
    name, arch = "scunet", "SCUNet"
    defaults = {"config": [4] * 7, "dim": 64, "input_resolution": 256}

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=64)

    def network(self, channels: int) -> nn.Module:
        return self._class()(in_nc=channels, **self.params)


class Uformer(_Spandrel):
    """The package adds the input to the output only for 3 channels; grey images get the same residual
    here."""

    name, arch = "uformer", "Uformer"
    defaults = {"embed_dim": 32, "depths": [1, 2, 8, 8, 2, 8, 8, 2, 1],
                "num_heads": [1, 2, 4, 8, 16, 16, 8, 4, 2], "win_size": 8, "img_size": 256}

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=128, square=True, residual=channels != 3)

    def network(self, channels: int) -> nn.Module:
        return self._class()(in_chans=channels, dd_in=channels, **self.params)
