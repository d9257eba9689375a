"""Multi-head self-attention for RAT: region (R-MSA), window (W-MSA) and global (MSA).

Region attention is ``softmax(Q K^T s + M) V`` with ``M = lambda`` (-1000) between tokens of
different regions and 0 within a region. In float32, ``exp(-1000 + ...)`` underflows to exactly
0, so the dense formulation equals attention restricted to the query's own region; only the
within-region pairs need computing (14-34 % of the dense entries on real SAM label maps).

Backends for region attention, all exact and differentiable:

- ``dense``: the paper's formulation, a (B, 1, N, N) additive mask on full attention. Baseline.
- ``sparse``: portable (CPU and CUDA), no N x N tensor. Tokens of the whole batch are sorted by
  (image, region) and cut into blocks; only (query block, key block) pairs that share a region
  are computed, in batched matmuls over chunks of pairs, with a flash-style autograd function
  that recomputes the scores in backward instead of storing them.
- ``flex``: PyTorch FlexAttention over the same sorted layout, with a BlockMask built from the
  same block pairs (fused kernels on CUDA; forward only on CPU).
- ``auto``: ``flex`` on CUDA where FlexAttention is available, else ``sparse``.

A :class:`RegionPlan` (the sort, blocks and pairs, or the dense mask) depends only on the label
map, so it is built once per forward pass and shared by every R-MSA layer.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REGION_LAMBDA = -1000.0
BACKENDS = ("auto", "dense", "sparse", "flex")
MODES = ("rmsa", "wmsa", "msa")
BLOCK_SIZE = {"sparse": 64, "flex": 128}
CHUNK_PAIRS = 128


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True, eq=False)
class DensePlan:
    """The paper's additive mask. ``bias``: (B, 1, N, N) float32, 0 within a region, lambda across."""

    bias: Tensor


@dataclass(frozen=True, eq=False)
class BlockPlan:
    """All tokens of a batch sorted by (image, region), padded to whole blocks of ``block`` tokens.

    T = B * N tokens, Tp = T rounded up to a multiple of ``block``; padding forms its own region.
    ``perm`` (T,): sorted position -> flat token index (b * N + n). ``inverse`` (T,): the reverse.
    ``seg`` (Tp,): region number at each sorted position. ``q_block``, ``k_block`` (P,): the block
    pairs that hold at least one same-region (query, key) pair, grouped by query block.
    ``chunks``: (first q block, end q block, first pair, end pair), whole query blocks per chunk.
    ``block_mask``: FlexAttention BlockMask over the sorted sequence (flex plans only).
    """

    batch: int
    tokens: int
    block: int
    perm: Tensor
    inverse: Tensor
    seg: Tensor
    q_block: Tensor
    k_block: Tensor
    chunks: tuple[tuple[int, int, int, int], ...]
    block_mask: Any = None

    @property
    def padded(self) -> int:
        return self.seg.numel()


RegionPlan = DensePlan | BlockPlan


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
    labels: Tensor,
    backend: str = "auto",
    *,
    region_lambda: float = REGION_LAMBDA,
    block_size: int | None = None,
    chunk_pairs: int = CHUNK_PAIRS,
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
    block = block_size or BLOCK_SIZE[backend]
    with torch.no_grad():
        plan = _block_plan(ids, block, chunk_pairs)
    if backend == "flex":
        plan = _with_block_mask(plan)
    return plan


def _block_plan(ids: Tensor, block: int, chunk_pairs: int) -> BlockPlan:
    dev = ids.device
    batch, n = ids.shape
    flat = ids.reshape(-1)
    t = flat.numel()
    perm = torch.argsort(flat, stable=True)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(t, device=dev)
    _, seg, counts = torch.unique_consecutive(flat[perm], return_inverse=True, return_counts=True)
    nb = -(-t // block)
    tp = nb * block
    # padding tokens: one more region occupying [t, tp)
    seg = torch.cat([seg, seg.new_full((tp - t,), counts.numel())])
    counts = torch.cat([counts, counts.new_tensor([tp - t])])
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    first = torch.arange(nb, device=dev) * block  # first sorted position of each block
    last = first + block - 1
    # keys of a query block's regions form one contiguous range of sorted positions
    k0 = starts[seg[first]] // block
    k1 = (ends[seg[last]] - 1) // block
    count = k1 - k0 + 1
    q_block = torch.repeat_interleave(torch.arange(nb, device=dev), count)
    offsets = torch.cumsum(count, 0) - count
    k_block = k0[q_block] + torch.arange(q_block.numel(), device=dev) - offsets[q_block]
    # chunks of whole query blocks with about chunk_pairs pairs each
    chunk_id = offsets // chunk_pairs
    cuts = (torch.nonzero(chunk_id[1:] != chunk_id[:-1]).flatten() + 1).tolist()
    q_cuts = [0, *cuts, nb]
    p_cuts = [*offsets[q_cuts[:-1]].tolist(), q_block.numel()]
    chunks = tuple(
        (q_cuts[i], q_cuts[i + 1], p_cuts[i], p_cuts[i + 1]) for i in range(len(q_cuts) - 1)
    )
    # int32 indices: on CPU, index_add_ with int64 indices takes a much slower scatter path
    return BlockPlan(batch, n, block, perm, inverse, seg, q_block.to(torch.int32),
                     k_block.to(torch.int32), chunks)


def _with_block_mask(plan: BlockPlan) -> BlockPlan:
    """Add a FlexAttention BlockMask; pairs inside a single region are 'full' (no mask_mod)."""
    fa = _flex_module()
    if fa is None:
        raise RuntimeError("the 'flex' backend needs torch.nn.attention.flex_attention")
    seg, b = plan.seg, plan.block
    nb = plan.padded // b
    blocks = seg.view(nb, b)
    uniform = blocks[:, 0] == blocks[:, -1]  # block lies inside one region (seg is sorted)
    qb, kb = plan.q_block, plan.k_block
    full = uniform[qb] & uniform[kb] & (blocks[qb, 0] == blocks[kb, 0])

    def table(select: Tensor) -> tuple[Tensor, Tensor]:
        q, k = qb[select], kb[select]
        num = torch.bincount(q, minlength=nb)
        offsets = torch.cumsum(num, 0) - num
        idx = torch.zeros(nb, nb, dtype=torch.int32, device=seg.device)
        idx[q, torch.arange(q.numel(), device=seg.device) - offsets[q]] = k.to(torch.int32)
        return num.to(torch.int32)[None, None], idx[None, None]

    def same_region(b_: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return seg[q_idx] == seg[kv_idx]

    num, idx = table(~full)
    full_num, full_idx = table(full)
    mask = fa.BlockMask.from_kv_blocks(
        num, idx, full_num, full_idx, BLOCK_SIZE=b, mask_mod=same_region,
        seq_lengths=(plan.padded, plan.padded),
    )
    return BlockPlan(**{**plan.__dict__, "block_mask": mask})


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
    if plan.block_mask is not None:
        return _flex_attention(q, k, v, plan, scale)
    qb, kb, vb = (_to_blocks(x, plan) for x in (q, k, v))
    out = _BlockSparseAttention.apply(qb, kb, vb, plan.seg, plan.q_block, plan.k_block,
                                      plan.chunks, scale)
    return _from_blocks(out, plan, q.shape)


def dense_region_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """softmax(q k^T scale + bias) v, the paper's R-MSA. q, k, v (B, H, N, d), bias (B, 1, N, N)."""
    attn = (q @ k.transpose(-2, -1)) * scale + bias.to(q.dtype)  # (B, H, N, N)
    return attn.softmax(dim=-1) @ v


def _sorted_tokens(x: Tensor, plan: BlockPlan) -> Tensor:
    """(B, H, N, d) -> (Tp, H, d) in (image, region) order, zero rows as padding."""
    b, h, n, d = x.shape
    t = x.permute(0, 2, 1, 3).reshape(b * n, h, d)[plan.perm]
    return F.pad(t, (0, 0, 0, 0, 0, plan.padded - b * n))


def _to_blocks(x: Tensor, plan: BlockPlan) -> Tensor:
    """(B, H, N, d) -> (n_blocks, H, block, d)."""
    h, d = x.shape[1], x.shape[3]
    t = _sorted_tokens(x, plan)
    return t.view(-1, plan.block, h, d).transpose(1, 2).contiguous()


def _from_blocks(y: Tensor, plan: BlockPlan, shape: torch.Size) -> Tensor:
    """(n_blocks, H, block, d) -> (B, H, N, d) in the original token order."""
    b, h, n, d = shape
    t = y.transpose(1, 2).reshape(plan.padded, h, d)[plan.inverse]
    return t.view(b, n, h, d).permute(0, 2, 1, 3)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# Index operations on 2-D views (rows of H * b * d values): on CPU, index_select / index_add_ /
# index_reduce_ along dim 0 of a 4-D tensor fall back to element-wise scatter/gather kernels
# that are 10-300x slower than the row-wise kernels used for 2-D inputs.


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` of x (n, ...) -> (len(idx), ...)."""
    return x.reshape(x.shape[0], -1).index_select(0, idx).view(-1, *x.shape[1:])


def _add_rows(out: Tensor, idx: Tensor, src: Tensor) -> None:
    """out[idx[i]] += src[i], duplicates summed; out contiguous (n, ...)."""
    out.view(out.shape[0], -1).index_add_(0, idx, src.reshape(src.shape[0], -1).to(out.dtype))


def _max_rows(out: Tensor, idx: Tensor, src: Tensor) -> None:
    """out[idx[i]] = max(out[idx[i]], src[i]); out contiguous (n, ...)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        out.view(out.shape[0], -1).index_reduce_(0, idx, src.reshape(src.shape[0], -1), "amax")


def _masked_scores(qs: Tensor, k: Tensor, segb: Tensor, qi: Tensor, kj: Tensor) -> Tensor:
    """Scores of block pairs (qi, kj): (P, H, b, b) in the accumulation dtype, -inf across regions.

    qs, k: (n_blocks, H, b, d); segb: (n_blocks, b) region number of each sorted token.
    """
    s = torch.matmul(_take(qs, qi), _take(k, kj).transpose(-1, -2)).to(_acc_dtype(qs.dtype))
    other = _take(segb, qi).unsqueeze(-1) != _take(segb, kj).unsqueeze(-2)  # (P, b, b)
    return s.masked_fill_(other.unsqueeze(1), float("-inf"))


class _BlockSparseAttention(torch.autograd.Function):
    """Exact within-region attention on sorted blocks, recomputing scores in backward.

    q, k, v: (n_blocks, H, b, d). Saves only q, k, v, the output and the per-query log-sum-exp,
    so memory is O(T * H * d) plus one chunk of (pairs, H, b, b) scores at a time.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, seg: Tensor, q_block: Tensor,
                k_block: Tensor, chunks: tuple, scale: float) -> Tensor:
        acc = _acc_dtype(q.dtype)
        nb, h, b, d = q.shape
        qs = q * scale
        segb = seg.view(nb, b)
        out = torch.empty(nb, h, b, d, dtype=acc, device=q.device)
        lse = torch.empty(nb, h, b, dtype=acc, device=q.device)
        for qa, qe, pa, pe in chunks:
            qi, kj = q_block[pa:pe], k_block[pa:pe]
            local = qi - qa
            s = _masked_scores(qs, k, segb, qi, kj)  # (P, H, b, b)
            m = torch.full((qe - qa, h, b), float("-inf"), dtype=acc, device=q.device)
            _max_rows(m, local, s.amax(dim=-1))  # row max over all key blocks of the query block
            p = s.sub_(_take(m, local).unsqueeze(-1)).exp_()
            l = torch.zeros_like(m)
            _add_rows(l, local, p.sum(dim=-1))
            o = torch.zeros(qe - qa, h, b, d, dtype=acc, device=q.device)
            _add_rows(o, local, torch.matmul(p.to(v.dtype), _take(v, kj)))
            out[qa:qe] = o / l.unsqueeze(-1)
            lse[qa:qe] = m + l.log()
        out = out.to(q.dtype)
        ctx.save_for_backward(qs, k, v, out, lse, segb, q_block, k_block)
        ctx.chunks, ctx.scale = chunks, scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        qs, k, v, out, lse, segb, q_block, k_block = ctx.saved_tensors
        acc = lse.dtype
        grad = grad.contiguous()
        delta = (grad.to(acc) * out.to(acc)).sum(dim=-1)  # (nb, H, b)
        dqs = torch.zeros(qs.shape, dtype=acc, device=qs.device)
        dk = torch.zeros_like(dqs)
        dv = torch.zeros_like(dqs)
        for _, _, pa, pe in ctx.chunks:
            qi, kj = q_block[pa:pe], k_block[pa:pe]
            p = _masked_scores(qs, k, segb, qi, kj).sub_(_take(lse, qi).unsqueeze(-1)).exp_()
            g = _take(grad, qi)  # (P, H, b, d)
            _add_rows(dv, kj, torch.matmul(p.transpose(-1, -2).to(g.dtype), g))
            ds = torch.matmul(g, _take(v, kj).transpose(-1, -2)).to(acc)
            ds = ds.sub_(_take(delta, qi).unsqueeze(-1)).mul_(p).to(qs.dtype)  # softmax backward
            _add_rows(dqs, qi, torch.matmul(ds, _take(k, kj)))
            _add_rows(dk, kj, torch.matmul(ds.transpose(-1, -2), _take(qs, qi)))
        dq = (dqs * ctx.scale).to(qs.dtype)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None


@functools.cache
def _compiled_flex() -> Any:
    return torch.compile(_flex_module().flex_attention, dynamic=False)


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, plan: BlockPlan, scale: float) -> Tensor:
    if q.device.type != "cuda" and torch.is_grad_enabled() and any(
        x.requires_grad for x in (q, k, v)
    ):
        raise ValueError(
            "the 'flex' backend has no backward pass on CPU in PyTorch; use 'sparse' for training"
        )
    qs, ks, vs = (_sorted_tokens(x, plan).transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    out = _compiled_flex()(qs, ks, vs, block_mask=plan.block_mask, scale=scale)  # (1, H, Tp, d)
    b, h, n, d = q.shape
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
