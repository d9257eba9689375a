"""SRCNN (Dong et al., 2014): three convolutions on the bicubically upsampled image, written here (no
well-kept package ships it). The paper's 9-1-5 network: 64 filters of 9 x 9, 32 of 1 x 1, then 5 x 5 to the
image's channels, ReLU between; zero padding keeps the size (the paper's valid convolutions shrink it)."""

from __future__ import annotations

from torch import Tensor, nn

from rat.shared import DISTRIBUTION
from rat.training.model.adapters.base import Adapter


class SRCNNNet(nn.Module):
    """(B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 1,
                 f3: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, channels, f3, padding=f3 // 2)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


class SRCNN(Adapter):
    name, distribution, cls = "srcnn", DISTRIBUTION, "rat.training.model.adapters.srcnn:SRCNNNet"
    install = "(part of rat)"
    defaults = {"n1": 64, "n2": 32, "f1": 9, "f2": 1, "f3": 5}

    def network(self, channels: int) -> nn.Module:
        return SRCNNNet(channels, **self.params)
