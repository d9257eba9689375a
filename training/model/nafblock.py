"""NAFNet building blocks used by RAT's convolutional encoder and decoder.

Chen et al., "Simple Baselines for Image Restoration" (ECCV 2022): a channel LayerNorm, a gated
depthwise-conv branch with simplified channel attention, and a gated 1x1 feed-forward branch,
each added back through a zero-initialised per-channel scale. Parameter names follow the
authors' RAT implementation so that their checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _ChannelNorm(torch.autograd.Function):
    """LayerNorm over dim 1 of (B, C, H, W) in place, without moving channels last.

    Saves the normalised input and 1/std only; backward is the LayerNorm gradient
    g_x = rstd * (g' - mean_C(g') - y * mean_C(g' * y)) with g' = g * weight.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        rstd = torch.rsqrt(xc.square().mean(1, keepdim=True) + eps)  # (B, 1, H, W)
        y = xc.mul_(rstd)
        ctx.save_for_backward(y, rstd, weight)
        return torch.addcmul(bias.view(1, -1, 1, 1), y, weight.view(1, -1, 1, 1))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        y, rstd, weight = ctx.saved_tensors
        g = grad * weight.view(1, -1, 1, 1)
        gx = g - g.mean(1, keepdim=True) - y * (g * y).mean(1, keepdim=True)
        return gx.mul_(rstd), (grad * y).sum((0, 2, 3)), grad.sum((0, 2, 3)), None


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor, with affine weight and bias (C,).

    Channels-last input (the model's layout) is one fused ``F.layer_norm`` over its contiguous
    channel rows; other layouts use :class:`_ChannelNorm`, which normalises in place.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), normalised per pixel over C, in the layout of x."""
        rows = x.permute(0, 2, 3, 1)
        if rows.is_contiguous():
            y = F.layer_norm(rows, (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        return _ChannelNorm.apply(x, self.weight, self.bias, self.eps)


class _Gate(torch.autograd.Function):
    """x1 * x2 for the channel halves of x; backward writes both halves' gradients straight into
    one tensor (autograd's chunk backward would concatenate two new ones)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        x1, x2 = x.chunk(2, dim=1)
        gx = torch.empty_like(x)  # same layout as x
        g1, g2 = gx.chunk(2, dim=1)
        torch.mul(grad, x2, out=g1)
        torch.mul(grad, x1, out=g2)
        return gx


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # the compiler fuses the product and its gradients itself
            x1, x2 = x.chunk(2, dim=1)
            return x1 * x2
        return _Gate.apply(x)


class NAFBlock(nn.Module):
    """NAFNet block on (B, c, H, W); both branches start as the identity (beta = gamma = 0).

    The branch scales beta and gamma are folded into conv3 and conv5 (``conv(x, W * s, b * s)``
    equals ``s * conv(x, W, b)``), so the scaled branch outputs need not be stored for backward.
    """

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, kernel_size=1)
        self.conv2 = nn.Conv2d(dw, dw, kernel_size=3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, kernel_size=1)
        # simplified channel attention: global average pool then a 1x1 conv
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, kernel_size=1))
        self.sg = SimpleGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, kernel_size=1)
        self.conv5 = nn.Conv2d(ffn // 2, c, kernel_size=1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: Tensor) -> Tensor:
        """(B, c, H, W) -> (B, c, H, W)."""
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        y = inp + _scaled_conv(self.conv3, x * self.sca(x), self.beta)
        x = self.sg(self.conv4(self.norm2(y)))
        return y + _scaled_conv(self.conv5, x, self.gamma)


def folded(weight: Tensor, bias: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``scale * layer(x)`` for a per-output-channel ``scale`` (any shape
    with C elements; None: unscaled): ``layer(x, W * s, b * s)`` equals ``s * layer(x, W, b)``."""
    if scale is None:
        return weight, bias
    s = scale.reshape(-1)
    return weight * s.view(-1, *([1] * (weight.dim() - 1))), bias * s


def _scaled_conv(conv: nn.Conv2d, x: Tensor, scale: Tensor) -> Tensor:
    """``scale * conv(x)`` for a 1x1 conv and a (1, C, 1, 1) per-channel scale, folded into conv."""
    return F.conv2d(x, *folded(conv.weight, conv.bias, scale))
