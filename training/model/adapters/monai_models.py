"""Baselines from MONAI (Apache-2.0): its 2-D Restormer, SwinUNETR and BasicUNet, random weights.

MONAI's Restormer leaves out the global residual of the Restormer paper (output = input + network), and
SwinUNETR and BasicUNet are segmentation networks: all three are wrapped with that residual here
(``residual``), as RAT has it. Defaults: Restormer's paper (dim 48, blocks 4, 6, 6, 8, heads 1, 2, 4, 8),
SwinUNETR and BasicUNet MONAI's own.
"""

from __future__ import annotations

from torch import nn

from rat.training.model.adapters.base import Adapter, Fit


class _Monai(Adapter):
    distribution = "monai"
    install = "pip install 'rat-restore[baselines]' (or pip install monai)"

    def fit(self, channels: int) -> Fit:
        return Fit(multiple=self.multiple(), minimum=self.minimum, residual=bool(self.params["residual"]))

    minimum = 1

    def multiple(self) -> int:
        return 1

    def kwargs(self) -> dict:
        return {k: v for k, v in self.params.items() if k != "residual"}


class Restormer(_Monai):
    name, cls = "restormer", "monai.networks.nets.restormer:Restormer"
    defaults = {"dim": 48, "num_blocks": [4, 6, 6, 8], "heads": [1, 2, 4, 8], "num_refinement_blocks": 4,
                "ffn_expansion_factor": 2.66, "residual": True}

    def multiple(self) -> int:
        return 2 ** (len(self.params["num_blocks"]) - 1)

    def network(self, channels: int) -> nn.Module:
        from monai.networks.nets.restormer import Restormer

        args = self.kwargs()
        return Restormer(spatial_dims=2, in_channels=channels, out_channels=channels,
                         num_blocks=tuple(args.pop("num_blocks")), heads=tuple(args.pop("heads")), **args)


class SwinUNETR(_Monai):
    name, cls = "swinunetr", "monai.networks.nets:SwinUNETR"
    minimum = 64  # its bottleneck (1/32) must be larger than one pixel for its instance norms
    defaults = {"feature_size": 24, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
                "residual": True}

    def multiple(self) -> int:
        return 32

    def network(self, channels: int) -> nn.Module:
        from monai.networks.nets import SwinUNETR

        args = self.kwargs()
        return SwinUNETR(in_channels=channels, out_channels=channels, spatial_dims=2,
                         depths=tuple(args.pop("depths")), num_heads=tuple(args.pop("num_heads")), **args)


class BasicUNet(_Monai):
    name, cls = "basicunet", "monai.networks.nets:BasicUNet"
    defaults = {"features": [32, 32, 64, 128, 256, 32], "residual": True}

    def multiple(self) -> int:
        return 16

    def network(self, channels: int) -> nn.Module:
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=channels, out_channels=channels,
                         features=tuple(self.params["features"]))
