"""EDSR from torchsr (MIT), for RGB images: its own class with random weights (never ``pretrained``).

Scale 1 (the pathology LQ is already upsampled back); defaults: the EDSR baseline (16 residual blocks, 64
features, residual scale 1).
"""

from __future__ import annotations

from torch import nn

from rat.training.model.adapters.base import Adapter


class EDSR(Adapter):
    name, distribution, cls = "edsr", "torchsr", "torchsr.models.edsr:EDSR"
    install = "pip install 'rat-restore[baselines]' (or pip install torchsr)"
    channels = (3,)
    defaults = {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}

    def network(self, channels: int) -> nn.Module:
        from torchsr.models.edsr import EDSR as Net

        return Net(scale=1, pretrained=False, **self.params)
