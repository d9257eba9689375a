"""The Region Attention Transformer (RAT, MICCAI 2024, arXiv 2407.09268).

A NAFNet U-shape whose 1/4-resolution latent passes through groups of transformer layers; each
layer is a region attention (R-MSA) sublayer over the SAM regions of the input, followed by a
window attention (W-MSA) sublayer. Module and parameter names follow the authors' public code,
so their state dicts load unchanged (15,945,025 parameters for one channel).

    model = RAT()                          # the paper's model, 1 channel
    restored = model(image, labels)        # image (B, C, H, W), labels (B, H, W) integer

Features are channels-last inside the network (1x1 convolutions become plain matrix products
over token rows, the channel LayerNorm a fused row norm, the depthwise convolutions 2-3x faster
on CPU). What a training step stores for backward is set by the memory policy
(:mod:`rat.training.model.memory`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rat.training.choices import ATTENTIONS, BACKENDS, MODEL_NAMES
from rat.training.model.attention import RegionAttention, RegionPlan, WindowAttention, resolve_backend
from rat.training.model.attention_plan import REGION_LAMBDA, SparsePlan, plan_region_attention
from rat.training.model.memory import (
    KEEP,
    POLICIES,
    RECOMPUTE,
    SELECT,
    around_compiled,
    check_policy,
    kept,
    run,
)
from rat.training.model.nafblock import LayerNorm2d, NAFBlock

CHANNELS_LAST = torch.channels_last


class MLP(nn.Module):
    """Two 1x1 convs with a GELU between: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(kept(self.fc1, x)))


class RegionTransformerLayer(nn.Module):
    """Pre-norm R-MSA + MLP, then pre-norm W-MSA + MLP, on (B, C, h, w) latents.

    Attention outputs are scaled by zero-initialised per-channel parameters (``lambda_ra``,
    ``lambda_wa``), so a fresh layer starts as the two MLP residual branches alone.
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, mode: str) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm_ra = LayerNorm2d(dim)
        self.ra = RegionAttention(dim, heads, mode=mode, window=window)
        self.lambda_ra = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.norm_ra_mlp = LayerNorm2d(dim)
        self.mlp_ra = MLP(dim, hidden)
        self.norm_wa = LayerNorm2d(dim)
        self.wa = WindowAttention(dim, heads, window)
        self.lambda_wa = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.norm_wa_mlp = LayerNorm2d(dim)
        self.mlp_wa = MLP(dim, hidden)

    def forward(self, x: Tensor, plan: RegionPlan | None,
                policy: dict[str, str] = POLICIES["none"]) -> Tensor:
        """(B, C, h, w) -> (B, C, h, w); ``plan`` over the B x (h * w) tokens (R-MSA only).

        ``policy``: what to store for backward per block kind (:mod:`rat.training.model.memory`).
        ``select`` applies to the sparse kernels; the dense baseline (whose matrix products
        are N x N) and the compiled FlexAttention kernel are kept whole.
        """
        ra = policy["rmsa"]
        if ra == SELECT and not isinstance(plan, SparsePlan):
            ra = KEEP
        x = x + run(self._ra_branch, ra, x, plan)
        if policy["mlp"] == policy["wmsa"] == RECOMPUTE:  # one region, one input stored
            return run(self._rest, RECOMPUTE, x)
        x = x + run(self._mlp_ra_branch, policy["mlp"], x)
        x = x + run(self._wa_branch, policy["wmsa"], x)
        return x + run(self._mlp_wa_branch, policy["mlp"], x)

    def _rest(self, x: Tensor) -> Tensor:
        """The sublayers after R-MSA: MLP, W-MSA, MLP (with their residuals)."""
        x = x + self._mlp_ra_branch(x)
        x = x + self._wa_branch(x)
        return x + self._mlp_wa_branch(x)

    def _ra_branch(self, x: Tensor, plan: RegionPlan | None) -> Tensor:
        return self.ra(self.norm_ra(x), plan, self.lambda_ra)

    def _mlp_ra_branch(self, x: Tensor) -> Tensor:
        return self.mlp_ra(self.norm_ra_mlp(x))

    def _wa_branch(self, x: Tensor) -> Tensor:
        return self.wa(self.norm_wa(x), self.lambda_wa)

    def _mlp_wa_branch(self, x: Tensor) -> Tensor:
        return self.mlp_wa(self.norm_wa_mlp(x))


class RegionGroup(nn.Module):
    """Transformer layers followed by a 3x3 conv, with a residual around the group."""

    def __init__(self, layers: int, dim: int, heads: int, window: int, mlp_ratio: float,
                 mode: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            RegionTransformerLayer(dim, heads, window, mlp_ratio, mode) for _ in range(layers)
        )
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: Tensor, plan: RegionPlan | None,
                policy: dict[str, str] = POLICIES["none"]) -> Tensor:
        shortcut = x
        for layer in self.layers:
            x = layer(x, plan, policy)
        return self.conv(x) + shortcut


class RAT(nn.Module):
    """Region Attention Transformer; ``RAT()`` is the paper's default 1-channel model.

    ``attention``: ``rmsa`` (region attention, the paper's model), ``wmsa`` or ``msa`` (the
    Table 4 ablations, same parameters, labels unused). ``backend``: how region attention is
    computed (``auto``, ``dense``, ``sparse``, ``flex``; see :mod:`rat.training.model.attention`);
    all give the same result, and it may be changed on a built model. ``region_lambda``: the
    additive mask between regions (used as such by ``dense``; the others take its limit).
    ``memory``: what a training step stores for backward and what it recomputes, one of
    ``selective`` (default), ``full``, ``none`` (see :mod:`rat.training.model.memory`); like
    ``backend`` it may be changed on a built model and never changes the results.
    """

    def __init__(
        self,
        img_channel: int = 1,
        width: int = 64,
        enc_blk_nums: tuple[int, ...] = (2, 2),
        dec_blk_nums: tuple[int, ...] = (2, 2),
        num_groups: int = 4,
        layers_per_group: int = 3,
        heads: int = 8,
        window: int = 4,
        mlp_ratio: float = 2.0,
        attention: str = "rmsa",
        backend: str = "auto",
        region_lambda: float = REGION_LAMBDA,
        memory: str = "selective",
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {ATTENTIONS}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError("enc_blk_nums and dec_blk_nums must have the same length")
        self.attention, self.backend, self.region_lambda = attention, backend, region_lambda
        self.memory = check_policy(memory)
        self.compiled_blocks = False  # set by rat.training.model.compiling.compile_blocks
        self.label_stride = 2 ** len(enc_blk_nums)  # latent resolution = 1 / label_stride
        self.pad_multiple = self.label_stride * window

        # registration order follows the authors' code, so state_dict() keys come out the same
        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1)
        # a fresh model is the identity (output = input image): training starts from the LQ image's scores
        # instead of a random image added to it, which 200 steps at batch 8 do not undo (the authors'
        # random init of this layer left a first GPU run 2.5 dB below its input); their weights load alike
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*(NAFBlock(chan) for _ in range(num))))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.head_dim = chan // heads  # channels per head of the latent attention
        self.middle_blks.extend(
            RegionGroup(layers_per_group, chan, heads, window, mlp_ratio, attention)
            for _ in range(num_groups)
        )
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False),
                                          nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(chan) for _ in range(num))))

    @property
    def uses_labels(self) -> bool:
        """Whether forward takes the label map (region attention); the ablations do not."""
        return self.attention == "rmsa"

    def token_labels(self, labels: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(B, H, W) labels -> (B, h * w) int64 labels of the latent tokens, (h, w) = size / 4.

        Token (i, j) takes the label of pixel (4i, 4j), as ``F.interpolate(scale_factor=0.25,
        mode='nearest')`` does in the paper's code. ``size`` (default (H, W)) is the padded
        image size; pixels beyond the label map repeat its last row or column, as the
        replicate padding of the image does.
        """
        h, w = labels.shape[-2:]
        size = size or (h, w)
        s = self.label_stride
        rows = torch.arange(0, size[0], s, device=labels.device).clamp_(max=h - 1)
        cols = torch.arange(0, size[1], s, device=labels.device).clamp_(max=w - 1)
        tokens = labels.to(torch.int64)[:, rows][:, :, cols]
        return tokens.reshape(labels.shape[0], -1)

    def forward(self, image: Tensor, labels: Tensor | None = None) -> Tensor:
        """image (B, C, H, W) float, labels (B, H, W) integer region ids -> (B, C, H, W).

        Any H, W: the image is padded at the bottom and right (edge replication) to a multiple
        of 16 and the output cropped back. Region ids need not be consecutive or start at 0.
        ``labels`` may be None for the ``wmsa`` and ``msa`` ablations.
        """
        if image.dim() != 4:
            raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
        b, _, h, w = image.shape
        plan = None
        m = self.pad_multiple
        pad = (0, -w % m, 0, -h % m)
        inp = F.pad(image, pad, mode="replicate") if any(pad) else image
        inp = inp.contiguous(memory_format=CHANNELS_LAST)
        if self.attention == "rmsa":
            if labels is None:
                raise ValueError("region attention needs a label map (B, H, W)")
            if labels.dtype.is_floating_point or labels.dtype.is_complex:
                raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
            if tuple(labels.shape) != (b, h, w):
                raise ValueError(
                    f"labels of shape {tuple(labels.shape)} do not match image of shape "
                    f"{tuple(image.shape)}: expected ({b}, {h}, {w})"
                )
            tokens = self.token_labels(labels.to(image.device), inp.shape[-2:])
            backend = resolve_backend(self.backend, tokens.device, self.head_dim)
            plan = plan_region_attention(tokens, backend, region_lambda=self.region_lambda)

        policy = POLICIES[check_policy(self.memory)]
        if self.compiled_blocks:
            policy = around_compiled(policy)
        x = self.intro(inp).contiguous(memory_format=CHANNELS_LAST)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            for block in encoder:
                x = run(block, policy["nafblock"], x)
            skips.append(x)
            x = down(x)
        shortcut = x
        for group in self.middle_blks:
            x = group(x, plan, policy)
        x = x + shortcut
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1], strict=True):
            x = up(x).contiguous(memory_format=CHANNELS_LAST) + skip
            for block in decoder:
                x = run(block, policy["nafblock"], x)
        x = self.ending(x) + inp
        return x[:, :, :h, :w].contiguous()


def rat(img_channel: int = 1, **overrides) -> RAT:
    """The paper's model: width 64, 2 + 2 NAFBlock levels, 4 groups x 3 layers, 8 heads."""
    return RAT(img_channel=img_channel, **overrides)


#: The small RAT's arguments that differ from the paper's (RAT's defaults).
SMALL = dict(width=16, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1), num_groups=1, layers_per_group=2, heads=4)


def rat_small(img_channel: int = 1, **overrides) -> RAT:
    """A small RAT for CPU demos and tests: width 16, 1 NAFBlock per level, 1 group of 2 layers."""
    return RAT(img_channel=img_channel, **{**SMALL, **overrides})


MODELS: dict[str, Callable[..., RAT]] = dict(zip(MODEL_NAMES, (rat, rat_small), strict=True))


def build_model(name: str, img_channel: int = 1, **overrides) -> RAT:
    """Build a named model (see ``MODELS``), with keyword overrides of any RAT argument.

    ``build_model("rat")`` is the model ``rat-train`` trains by default, memory policy
    included (``memory="selective"``).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](img_channel=img_channel, **overrides)
