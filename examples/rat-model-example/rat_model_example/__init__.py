"""A model plug-in for rat: a small residual CNN (conv, ReLU, conv, plus the input), region-free."""

from torch import nn


class Net(nn.Module):
    def __init__(self, channels: int, features: int, layers: int) -> None:
        super().__init__()
        body = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 2):
            body += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*body, nn.Conv2d(features, channels, 3, padding=1))

    def forward(self, image):                          # (B, C, H, W) -> (B, C, H, W)
        return image + self.body(image)


class TinyCNN:
    name = "tiny-cnn"
    uses_labels = False                                # forward(image) only; the loss still sees regions

    def __init__(self, features: int = 16, layers: int = 3) -> None:
        if layers < 2:
            raise ValueError("layers must be at least 2")
        self.params = {"features": features, "layers": layers}

    def provenance(self) -> dict:
        return {"name": self.name, "package": "rat-model-example", "version": "0.1",
                "class": "rat_model_example:Net", "params": dict(self.params)}

    def build(self, channels: int) -> nn.Module:
        return Net(channels, **self.params)
