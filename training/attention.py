"""Multi-head self-attention for RAT: region (R-MSA), window (W-MSA) and global (MSA).

Region attention is ``softmax(Q K^T s + M) V`` with ``M = lambda`` (-1000) between tokens of
different regions and 0 within a region. In float32, ``exp(-1000 + ...)`` underflows to exactly
0, so the dense formulation equals attention restricted to the query's own region; only the
within-region pairs need computing (14-34 % of the dense entries on real SAM label maps).

Backends for region attention, all exact and differentiable:

- ``dense``: the paper's formulation, a (B, 1, N, N) additive mask on full attention. Baseline.
- ``sparse``: portable (CPU and CUDA), no N x N tensor. The tokens of each region attend among
  themselves; regions of similar size (within a factor 2^(1/4)) are stacked into one batch,
  padded to the largest with masked keys, and go through PyTorch's fused
  ``scaled_dot_product_attention`` (flash kernels on CPU, memory-efficient ones on CUDA), one
  call per size class. Cost: the within-region entries plus at most 41 % padding.
- ``flex``: FlexAttention over the tokens of the whole batch sorted by (image, region), with a
  BlockMask of the (query block, key block) pairs that share a region (fused kernels on CUDA;
  forward only on CPU).
- ``auto``: ``flex`` on CUDA where FlexAttention is available, else ``sparse``.

A plan (the size classes, the block mask or the dense mask) depends only on the label map, so
it is built once per forward pass and shared by every R-MSA layer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REGION_LAMBDA = -1000.0
BACKENDS = ("auto", "dense", "sparse", "flex")
MODES = ("rmsa", "wmsa", "msa")
CLASSES_PER_OCTAVE = 4  # size classes per doubling of region size (padding <= 2^(2/4) - 1)
FLEX_BLOCK = 128


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True, eq=False)
class DensePlan:
    """The paper's additive mask. ``bias``: (B, 1, N, N) float32, 0 within a region, lambda across."""

    bias: Tensor


@dataclass(frozen=True, eq=False)
class SizeClass:
    """``regions`` regions of similar size, each padded to ``length`` tokens.

    ``index`` (regions * length,): flat token (b * N + n) at each slot; padding slots repeat a
    token of their region. ``mask`` (regions, 1, 1, length) bool: real keys, or None if no
    slot is padding. ``keep``: the slots that hold real tokens, in slot order.
    """

    regions: int
    length: int
    index: Tensor
    mask: Tensor | None
    keep: Tensor


@dataclass(frozen=True, eq=False)
class SparsePlan:
    """Size classes covering the B x N tokens; ``order`` (T,): each token's row among the
    concatenated kept slots of all classes."""

    batch: int
    tokens: int
    classes: tuple[SizeClass, ...]
    order: Tensor


@dataclass(frozen=True, eq=False)
class FlexPlan:
    """Tokens of the batch sorted by (image, region), padded to whole blocks.

    ``perm`` (T,): sorted position -> flat token; ``inverse``: the reverse. ``seg`` (Tp,):
    region number of each sorted position (padding is one more region). ``block_mask``: a
    FlexAttention BlockMask over the Tp sorted positions.
    """

    batch: int
    tokens: int
    perm: Tensor
    inverse: Tensor
    seg: Tensor
    block_mask: Any


RegionPlan = DensePlan | SparsePlan | FlexPlan


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``flex`` on CUDA where FlexAttention imports, else ``sparse``; checks the name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    return "flex" if device.type == "cuda" and _flex_module() is not None else "sparse"


def _flex_module() -> Any:
    try:
        from torch.nn.attention import flex_attention
    except ImportError:  # older PyTorch
        return None
    return flex_attention


def _region_ids(labels: Tensor) -> Tensor:
    """(B, N) integer labels -> (B, N) int64 keys, distinct across images, order kept in each."""
    if labels.dim() != 2:
        raise ValueError(f"token labels must be (B, N), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    ids = labels.to(torch.int64)
    ids = ids - ids.amin()
    offset = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * (ids.amax() + 1)
    return ids + offset


def needed_fraction(labels: Tensor) -> float:
    """Fraction of the B * N^2 dense attention entries that lie within a region; labels (B, N)."""
    _, counts = torch.unique(_region_ids(labels), return_counts=True)
    b, n = labels.shape
    return float((counts.double() ** 2).sum() / (b * n * n))


def plan_region_attention(
    labels: Tensor, backend: str = "auto", *, region_lambda: float = REGION_LAMBDA
) -> RegionPlan:
    """Precompute what region attention over token labels (B, N) needs, for the given backend.

    ``region_lambda`` is used by ``dense`` only; the other backends compute its limit
    lambda -> -inf, which equals the dense result in float32 for lambda = -1000, so they refuse
    a lambda above -100 where the two would differ.
    """
    backend = resolve_backend(backend, labels.device)
    ids = _region_ids(labels)
    if backend == "dense":
        same = ids.unsqueeze(2) == ids.unsqueeze(1)  # (B, N, N)
        bias = torch.zeros(same.shape, device=ids.device).masked_fill_(~same, region_lambda)
        return DensePlan(bias.unsqueeze(1))
    if region_lambda > -100.0:
        raise ValueError(
            f"region_lambda={region_lambda}: the {backend!r} backend computes the exact limit "
            "lambda -> -inf; use the 'dense' backend for a soft mask"
        )
    with torch.no_grad():
        return _sparse_plan(ids) if backend == "sparse" else _flex_plan(ids, FLEX_BLOCK)


def _sorted_regions(ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """perm (T,) sorting the flat ids, their region number seg (T,), counts and starts (R,)."""
    flat = ids.reshape(-1)
    perm = torch.argsort(flat, stable=True)
    _, seg, counts = torch.unique_consecutive(flat[perm], return_inverse=True, return_counts=True)
    return perm, seg, counts, torch.cumsum(counts, 0) - counts


def _sparse_plan(ids: Tensor) -> SparsePlan:
    dev = ids.device
    perm, _, counts, starts = _sorted_regions(ids)
    size_class = torch.floor(torch.log2(counts.double()) * CLASSES_PER_OCTAVE).long()
    by_class = torch.argsort(size_class, stable=True)
    _, members = torch.unique_consecutive(size_class[by_class], return_counts=True)
    classes, kept = [], []
    for regions in torch.split(by_class, members.tolist()):  # a few classes, not regions
        n = counts[regions]
        length = int(n.max())
        slot = torch.arange(length, device=dev)
        real = slot < n.unsqueeze(1)  # (regions, length)
        # padding slots repeat the region's first token (their keys are masked out)
        pos = starts[regions].unsqueeze(1) + torch.where(real, slot, 0)
        index = perm[pos].reshape(-1)
        keep = torch.nonzero(real.reshape(-1)).flatten()
        mask = None if bool(real.all()) else real[:, None, None, :]
        # int32 indices: index_select's backward (index_add_) is much faster with them on CPU
        classes.append(SizeClass(regions.numel(), length, index.to(torch.int32), mask,
                                 keep.to(torch.int32)))
        kept.append(index[keep])
    kept = torch.cat(kept)
    order = torch.empty_like(kept)
    order[kept] = torch.arange(kept.numel(), device=dev)
    return SparsePlan(ids.shape[0], ids.shape[1], tuple(classes), order.to(torch.int32))


def _flex_plan(ids: Tensor, block: int) -> FlexPlan:
    """Sorted layout plus a BlockMask from the block pairs that share a region (no N^2 work)."""
    fa = _flex_module()
    if fa is None:
        raise RuntimeError("the 'flex' backend needs torch.nn.attention.flex_attention")
    dev = ids.device
    perm, seg, counts, _ = _sorted_regions(ids)
    t = perm.numel()
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(t, device=dev)
    nb = -(-t // block)
    tp = nb * block
    seg = torch.cat([seg, seg.new_full((tp - t,), counts.numel())])  # padding: its own region
    counts = torch.cat([counts, counts.new_tensor([tp - t])])
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    blocks = seg.view(nb, block)
    # the keys of a query block's regions form one contiguous range of sorted positions
    k0 = starts[blocks[:, 0]] // block
    k1 = (ends[blocks[:, -1]] - 1) // block
    count = k1 - k0 + 1
    qb = torch.repeat_interleave(torch.arange(nb, device=dev), count)
    offsets = torch.cumsum(count, 0) - count
    kb = k0[qb] + torch.arange(qb.numel(), device=dev) - offsets[qb]
    uniform = blocks[:, 0] == blocks[:, -1]  # block inside one region (seg is sorted)
    full = uniform[qb] & uniform[kb] & (blocks[qb, 0] == blocks[kb, 0])

    def table(select: Tensor) -> tuple[Tensor, Tensor]:
        q, k = qb[select], kb[select]
        num = torch.bincount(q, minlength=nb)
        first = torch.cumsum(num, 0) - num
        idx = torch.zeros(nb, nb, dtype=torch.int32, device=dev)
        idx[q, torch.arange(q.numel(), device=dev) - first[q]] = k.to(torch.int32)
        return num.to(torch.int32)[None, None], idx[None, None]

    def same_region(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return seg[q_idx] == seg[kv_idx]

    num, idx = table(~full)
    full_num, full_idx = table(full)
    mask = fa.BlockMask.from_kv_blocks(num, idx, full_num, full_idx, BLOCK_SIZE=block,
                                       mask_mod=same_region, seq_lengths=(tp, tp))
    return FlexPlan(ids.shape[0], ids.shape[1], perm, inverse, seg, mask)


# ----------------------------------------------------------------------------- attention


def region_attention(q: Tensor, k: Tensor, v: Tensor, plan: RegionPlan, scale: float) -> Tensor:
    """Attention of each token to the tokens of its own region.

    q, k, v: (B, heads, N, d); ``plan`` from :func:`plan_region_attention` on the (B, N) token
    labels. Returns (B, heads, N, d).
    """
    if isinstance(plan, DensePlan):
        return dense_region_attention(q, k, v, plan.bias, scale)
    if plan.batch * plan.tokens != q.shape[0] * q.shape[2]:
        raise ValueError(
            f"plan is for {plan.batch} x {plan.tokens} tokens, got q of shape {tuple(q.shape)}"
        )
    if isinstance(plan, FlexPlan):
        return _flex_attention(q, k, v, plan, scale)
    return _sparse_attention(q, k, v, plan, scale)


def dense_region_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """softmax(q k^T scale + bias) v, the paper's R-MSA. q, k, v (B, H, N, d), bias (B, 1, N, N)."""
    attn = (q @ k.transpose(-2, -1)) * scale + bias.to(q.dtype)  # (B, H, N, N)
    return attn.softmax(dim=-1) @ v


def _sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float) -> Tensor:
    b, h, n, d = q.shape
    qkv = torch.stack([q, k, v], dim=2)  # (B, H, 3, N, d)
    qkv = qkv.permute(0, 3, 2, 1, 4).reshape(b * n, 3 * h * d)  # a row per token
    out = []
    for c in plan.classes:
        x = qkv.index_select(0, c.index).view(c.regions, c.length, 3, h, d)
        x = x.permute(2, 0, 3, 1, 4)  # (3, regions, H, length, d)
        y = F.scaled_dot_product_attention(x[0], x[1], x[2], attn_mask=c.mask, scale=scale)
        out.append(y.transpose(1, 2).reshape(-1, h * d).index_select(0, c.keep))
    y = torch.cat(out).index_select(0, plan.order)  # (T, H * d) in token order
    return y.view(b, n, h, d).permute(0, 2, 1, 3)


@functools.cache
def _compiled_flex() -> Any:
    return torch.compile(_flex_module().flex_attention, dynamic=False)


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, plan: FlexPlan, scale: float) -> Tensor:
    if q.device.type != "cuda" and torch.is_grad_enabled() and any(
        x.requires_grad for x in (q, k, v)
    ):
        raise ValueError(
            "the 'flex' backend has no backward pass on CPU in PyTorch; use 'sparse' for training"
        )
    b, h, n, d = q.shape
    pad = plan.seg.numel() - b * n

    def sorted_tokens(x: Tensor) -> Tensor:  # (B, H, N, d) -> (1, H, Tp, d)
        t = x.permute(0, 2, 1, 3).reshape(b * n, h, d)[plan.perm]
        return F.pad(t, (0, 0, 0, 0, 0, pad)).transpose(0, 1).unsqueeze(0)

    out = _compiled_flex()(sorted_tokens(q), sorted_tokens(k), sorted_tokens(v),
                           block_mask=plan.block_mask, scale=scale)  # (1, H, Tp, d)
    t = out[0].transpose(0, 1)[plan.inverse]  # (T, H, d)
    return t.view(b, n, h, d).permute(0, 2, 1, 3)


# ----------------------------------------------------------------------------- windows


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, C, H, W) -> (B * H/window * W/window, window * window, C), windows row-major."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window * window, c)


def window_reverse(x: Tensor, window: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window * window, C) -> (B, C, H, W)."""
    c = x.shape[-1]
    x = x.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B', n, C) -> (B', heads, n, C / heads)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B', heads, n, d) -> (B', n, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# ----------------------------------------------------------------------------- modules


class RegionAttention(nn.Module):
    """R-MSA on (B, C, H, W): 1x1-conv Q/K/V, attention, 1x1-conv output projection.

    ``mode`` gives the ablations of the paper's Table 4 with the same parameters: ``rmsa``
    (region attention, needs a plan), ``wmsa`` (non-overlapping ``window`` x ``window``
    windows) and ``msa`` (global attention over all tokens).
    """

    def __init__(self, dim: int, heads: int, mode: str = "rmsa", window: int = 4) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown attention mode {mode!r}; choose one of {MODES}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.mode, self.window = heads, mode, window
        self.scale = heads**-0.5  # the paper's and the authors' code's choice (not d^-0.5)
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor, plan: RegionPlan | None = None) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W); ``plan`` over the B x (H * W) tokens for ``rmsa``."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=1)
        if self.mode == "wmsa":
            q, k, v = (_heads(window_partition(t, self.window), self.heads) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            out = window_reverse(_merge_heads(out), self.window, b, h, w)
            return self.project_out(out)
        # 'b (head c) h w -> b head (h w) c'
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)
                   for t in (q, k, v))
        if self.mode == "msa":
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            if plan is None:
                raise ValueError("region attention needs a region plan (labels)")
            out = region_attention(q, k, v, plan, self.scale)
        return self.project_out(out.transpose(-1, -2).reshape(b, c, h, w))


class WindowAttention(nn.Module):
    """W-MSA on (B, C, H, W): non-overlapping windows, no shift, no position bias, Linear Q/K/V."""

    def __init__(self, dim: int, heads: int, window: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.window = heads, window
        self.scale = heads**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W); H and W divisible by the window."""
        b, c, h, w = x.shape
        win = window_partition(x, self.window)  # (B * nW, window^2, C)
        n = win.shape[1]
        qkv = self.qkv(win).view(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        return window_reverse(self.proj_out(_merge_heads(out)), self.window, b, h, w)
