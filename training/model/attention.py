"""Multi-head self-attention for RAT: region (R-MSA), window (W-MSA) and global (MSA).

Region attention is ``softmax(Q K^T s + M) V`` with ``M = lambda`` (-1000) between tokens of
different regions and 0 within a region. In float32, ``exp(-1000 + ...)`` underflows to exactly
0, so the dense formulation equals attention restricted to the query's own region; only the
within-region pairs need computing (14-34 % of the dense entries on real SAM label maps).

Backends for region attention, all exact and differentiable (plans: :mod:`rat.training.model.attention_plan`):

- ``dense``: the paper's formulation, a (B, 1, N, N) additive mask on full attention. Baseline.
- ``sparse``: portable (CPU and CUDA), no N x N tensor. The tokens of each region attend among
  themselves; regions of similar size (within a factor 2^(1/4)) are stacked into one batch,
  padded to the largest with masked keys, and go through PyTorch's fused
  ``scaled_dot_product_attention`` (flash kernels on CPU, memory-efficient ones on CUDA), one
  call per size class. One gather feeds every class and one gather puts the results back in
  token order. Cost: the within-region entries plus at most 41 % padding.
- ``flex``: FlexAttention over the tokens of the whole batch sorted by (image, region), with a
  block table of the (query block, key block) pairs that share a region; compiled once for all
  shapes (:mod:`rat.training.model.flex`; fused kernels on CUDA, forward only on CPU).
- ``auto``: ``flex`` on CUDA where FlexAttention is available and passes its check on the device,
  else ``sparse`` (:func:`resolve_backend`). The check runs at the first use per device, head size and
  precision: flex and sparse compute a small problem with every kind of block-table row, and their
  outputs and gradients must agree. On CUDA it runs in a child process, so that a kernel that crashes
  cannot take the run with it, and its verdict is kept on disk per versions, GPU and setting
  (:mod:`rat.training.model.probe`). If flex fails to compile or run (its CUDA kernels need heads of
  at least 16 channels, for one), crashes, hangs or disagrees, ``auto`` uses ``sparse`` (the same
  results, slower) and says so in one warning line (logger ``rat.training.model.attention``).

The kernels take token rows (T, 3, heads, d): the Q/K/V projection of a channels-last feature
map read as one row per token, without a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rat.shared.errors import one_line
from rat.training.choices import ATTENTIONS, BACKENDS
from rat.training.model import flex, probe
from rat.training.model.attention_plan import DensePlan, SparsePlan, plan_region_attention
from rat.training.model.flex import FlexPlan, flex_rows
from rat.training.model.memory import kept
from rat.training.model.nafblock import folded

RegionPlan = DensePlan | SparsePlan | FlexPlan
log = logging.getLogger(__name__)
#: What ``auto`` chose per (device, head size, precision) in this process (:func:`auto_backend`).
_AUTO: dict[tuple[str, int, torch.dtype], str] = {}
#: Largest difference allowed by :func:`check_backend`, relative to the reference's largest value: float32,
#: and 16-bit inputs (against a float32 reference; bf16 kernels differ from it by about 0.5 %).
CHECK_TOL = {torch.float32: 1e-3, torch.bfloat16: 3e-2, torch.float16: 3e-2}


# ----------------------------------------------------------------------------- kernels


def region_attention(q: Tensor, k: Tensor, v: Tensor, plan: RegionPlan, scale: float) -> Tensor:
    """Attention of each token to the tokens of its own region.

    q, k, v: (B, heads, N, d); ``plan`` from :func:`rat.training.model.attention_plan.plan_region_attention`
    on the (B, N) token labels. Returns (B, heads, N, d).
    """
    b, h, n, d = q.shape
    rows = torch.stack([q, k, v], dim=1).permute(0, 3, 1, 2, 4).reshape(b * n, 3, h, d)
    out = region_attention_rows(rows, plan, scale, b)  # (B * N, H * d)
    return out.view(b, n, h, d).transpose(1, 2)


def region_attention_rows(rows: Tensor, plan: RegionPlan, scale: float, batch: int) -> Tensor:
    """Region attention of token rows (T = batch * N, 3, heads, d) -> (T, heads * d)."""
    t, _, h, d = rows.shape
    if isinstance(plan, DensePlan):
        q, k, v = rows.view(batch, t // batch, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        out = dense_region_attention(q, k, v, plan.bias, scale)  # (B, H, N, d)
        return out.transpose(1, 2).reshape(t, h * d)
    if plan.batch * plan.tokens != t:
        raise ValueError(f"plan is for {plan.batch} x {plan.tokens} tokens, got {t} tokens")
    if isinstance(plan, FlexPlan):
        return flex_rows(rows, plan, scale)
    return _sparse_rows(rows, plan, scale)


def dense_region_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """softmax(q k^T scale + bias) v, the paper's R-MSA. q, k, v (B, H, N, d), bias (B, 1, N, N)."""
    attn = (q @ k.transpose(-2, -1)) * scale + bias.to(q.dtype)  # (B, H, N, N)
    return attn.softmax(dim=-1) @ v


def _sparse_rows(rows: Tensor, plan: SparsePlan, scale: float) -> Tensor:
    t, _, h, d = rows.shape
    slots = rows.reshape(t, 3 * h * d).index_select(0, plan.index)  # (S, 3 H d), one gather
    out = []
    for c, x in zip(plan.classes, slots.split([c.slots for c in plan.classes]), strict=True):
        # (regions, length, 3, H, d) -> q, k, v (regions, H, length, d); unbind: one stack back
        q, k, v = (y.transpose(1, 2) for y in x.view(c.regions, c.length, 3, h, d).unbind(2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=c.mask, scale=scale)
        out.append(y.transpose(1, 2).reshape(c.slots, h * d))
    return torch.cat(out).index_select(0, plan.order)  # (T, H d) in token order


def _global_rows(rows: Tensor, scale: float, batch: int) -> Tensor:
    """Plain multi-head attention over each image's tokens: rows (T, 3, H, d) -> (T, H d)."""
    t, _, h, d = rows.shape
    q, k, v = (x.transpose(1, 2) for x in rows.view(batch, t // batch, 3, h, d).unbind(2))
    return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(t, h * d)


# ----------------------------------------------------------------------------- choosing the kernel


def resolve_backend(backend: str, device: torch.device, head_dim: int) -> str:
    """The backend that computes region attention with heads of ``head_dim`` channels on ``device``:
    ``auto`` -> ``flex`` on CUDA where FlexAttention imports and passes its check there
    (:func:`auto_backend`), else ``sparse``; any other name as it is (ValueError for unknown names)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if device.type != "cuda" or not flex.available():
        return "sparse"
    return auto_backend(device, head_dim)


def auto_backend(device: torch.device, head_dim: int, candidate: str = "flex", fallback: str = "sparse",
                 *, isolate: bool | None = None, check: Callable[..., str | None] | None = None) -> str:
    """``candidate`` if it passes ``check`` (default :func:`check_backend`) against ``fallback`` on
    ``device``, else ``fallback`` with one warning line saying why. Decided once per process, device,
    head size and precision (the autocast dtype at the first use on the device, else float32) and
    remembered.

    ``isolate`` (default: on CUDA) runs the check in a spawned child process, so that a kernel that crashes
    the process or corrupts its CUDA context only fails the check, and keeps the verdict on disk for every
    later process with the same versions, GPU and setting (:mod:`rat.training.model.probe`).
    """
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    key = (str(device), head_dim, dtype)
    if key not in _AUTO:
        check = check or check_backend
        args = (device, head_dim, candidate, fallback, dtype)
        if isolate if isolate is not None else device.type == "cuda":
            setting = probe.setting(device, dtype, head_dim, candidate, fallback)
            found, problem = probe.recalled(setting)
            if not found:
                problem = probe.isolated(check, *args)
                probe.remember(setting, problem)
        else:
            problem = check(*args)
        if problem is not None:
            log.warning(f"region attention on {device} ({str(dtype).removeprefix('torch.')}, heads of "
                        f"{head_dim}): {candidate} {problem}; using {fallback} instead (the same results, "
                        "slower)")
        _AUTO[key] = candidate if problem is None else fallback
    return _AUTO[key]


def check_problem() -> Tensor:
    """Token labels (2, 768) of the check: every kind of block-table row at 128-token blocks.

    Image 0: a region of 480 tokens (full blocks in query blocks 0-2, rows with more full than partial
    blocks), then 12 regions of 24 (rows of partial blocks). Image 1: regions of 400 and 300 tokens that
    meet inside a block (a row of 6 partial blocks and no full one), then 4 regions of 17 tokens.
    """
    first = torch.cat([torch.zeros(480, dtype=torch.int64), 1 + torch.arange(288) // 24])
    second = torch.cat([torch.full((400,), 100), torch.full((300,), 101), 102 + torch.arange(68) // 17])
    return torch.stack([first, second])


def check_backend(device: torch.device, head_dim: int, backend: str = "flex", reference: str = "sparse",
                  dtype: torch.dtype = torch.float32, grad: bool | None = None) -> str | None:
    """Why ``backend`` cannot stand in for ``reference`` on ``device``, or None when it can.

    Both compute the region attention of one small problem (:func:`check_problem`: 2 images of 768 tokens,
    2 heads of ``head_dim`` channels, regions of 17 to 480 tokens, full blocks in several query blocks,
    rows wider in partial than in full blocks and the reverse) from the same inputs, rounded to ``dtype``:
    ``backend`` in ``dtype``, ``reference`` in float32. Their outputs and,
    with ``grad`` (default: where ``backend`` has a backward pass), the gradients of q, k and v under one
    upstream gradient must be finite and agree within :data:`CHECK_TOL` of the reference's largest value.
    A failure to compile or run is a reason too. Runs with gradients on, outside autocast and inference
    mode, whatever the caller's.
    """
    grad = (backend != "flex" or flex.trains_on(device)) if grad is None else grad
    results = []
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        labels = check_problem().to(device)
        g = torch.Generator().manual_seed(0)
        shape = (2, 2, labels.shape[1], head_dim)  # (B, H, N, d)
        q, k, v, upstream = (torch.randn(shape, generator=g).to(dtype) for _ in range(4))
        for name, kind in ((reference, torch.float32), (backend, dtype)):
            qkv = [x.to(device, kind).requires_grad_(grad) for x in (q, k, v)]
            try:
                out = region_attention(*qkv, plan_region_attention(labels, name), head_dim**-0.5)
                grads = torch.autograd.grad(out, qkv, upstream.to(device, kind)) if grad else ()
            except Exception as err:  # noqa: BLE001 - compilers fail in many ways
                if name == reference:
                    raise
                cause = err.__cause__ or err  # the compiler's own error, not flex_rows' wrapper
                return f"failed ({type(cause).__name__}: {one_line(cause)})"
            results.append([t.detach().float() for t in (out, *grads)])
    tol = CHECK_TOL.get(dtype, 3e-2)
    for what, ref, got in zip(("output", "q gradient", "k gradient", "v gradient"), *results, strict=False):
        if not bool(torch.isfinite(got).all()):
            return f"gave non-finite values in the {what}"
        diff, scale = float((got - ref).abs().max()), max(1.0, float(ref.abs().max()))
        if diff > tol * scale:
            return f"differs from {reference} by {diff:.3g} in the {what} (allowed {tol * scale:.3g})"
    return None


# ----------------------------------------------------------------------------- windows


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, C, H, W) -> (B * H/window * W/window, window * window, C), windows row-major."""
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).view(b, h // window, window, w // window, window, c)
    return x.transpose(2, 3).reshape(-1, window * window, c)


def window_reverse(x: Tensor, window: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window^2, C) -> (B, C, H, W) channels-last."""
    c = x.shape[-1]
    x = x.view(b, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def _window_rows(rows: Tensor, scale: float) -> Tensor:
    """Attention within windows: rows (nW, n, 3, H, d) -> (nW, n, H d).

    Explicit matmul-softmax: for windows of 16 tokens it is about 2x faster than the fused
    kernels on CPU (their per-problem overhead dominates), and the scores are small.
    """
    nw, n, _, h, d = rows.shape
    q, k, v = (x.transpose(1, 2) for x in rows.unbind(2))  # (nW, H, n, d)
    attn = (q @ k.transpose(-2, -1)) * scale  # (nW, H, n, n)
    return (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(nw, n, h * d)


def _token_rows(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B * H * W, C): a view for channels-last maps, else a copy."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _map(rows: Tensor, b: int, h: int, w: int) -> Tensor:
    """(B * H * W, C) -> (B, C, H, W) channels-last view."""
    return rows.view(b, h, w, -1).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- modules


class RegionAttention(nn.Module):
    """R-MSA on (B, C, H, W): 1x1-conv Q/K/V, attention, 1x1-conv output projection.

    ``mode`` gives the ablations of the paper's Table 4 with the same parameters: ``rmsa``
    (region attention, needs a plan), ``wmsa`` (non-overlapping ``window`` x ``window``
    windows) and ``msa`` (global attention over all tokens).
    """

    def __init__(self, dim: int, heads: int, mode: str = "rmsa", window: int = 4) -> None:
        super().__init__()
        if mode not in ATTENTIONS:
            raise ValueError(f"unknown attention mode {mode!r}; choose one of {ATTENTIONS}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.mode, self.window = heads, mode, window
        self.scale = heads**-0.5  # the paper's and the authors' code's choice (not d^-0.5)
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor, plan: RegionPlan | None = None,
                out_scale: Tensor | None = None) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W); ``plan`` over the B x (H * W) tokens for ``rmsa``.

        ``out_scale`` (C,) multiplies the output per channel, folded into the projection (no
        extra activation is stored for it).
        """
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        qkv = kept(self.qkv, x)  # (B, 3C, H, W); channel = (q|k|v, head, d) as the authors' code
        if self.mode == "wmsa":
            rows = window_partition(qkv, self.window).unflatten(-1, (3, heads, d))
            out = window_reverse(_window_rows(rows, self.scale), self.window, b, h, w)
        else:
            rows = _token_rows(qkv).view(-1, 3, heads, d)
            if self.mode == "msa":
                out = _map(_global_rows(rows, self.scale, b), b, h, w)
            elif plan is None:
                raise ValueError("region attention needs a region plan (labels)")
            else:
                out = _map(region_attention_rows(rows, plan, self.scale, b), b, h, w)
        return F.conv2d(out, *folded(self.project_out.weight, self.project_out.bias, out_scale))


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

    def forward(self, x: Tensor, out_scale: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W) channels-last; H and W divisible by the window.

        ``out_scale`` (C,): as in :meth:`RegionAttention.forward`.
        """
        b, c, h, w = x.shape
        win = window_partition(x, self.window)  # (B * nW, window^2, C)
        rows = kept(self.qkv, win).unflatten(-1, (3, self.heads, c // self.heads))
        out = F.linear(_window_rows(rows, self.scale),
                       *folded(self.proj_out.weight, self.proj_out.bias, out_scale))
        return window_reverse(out, self.window, b, h, w)
