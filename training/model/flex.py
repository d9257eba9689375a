"""The ``flex`` backend: region attention as one FlexAttention call over the sorted tokens.

The tokens of the whole batch are sorted by (image, region), so every region is a contiguous run;
the (query block, key block) pairs of 128 tokens that share a region form a block-sparse table,
and FlexAttention computes only those blocks (fused kernels on CUDA; forward only on CPU).

No recompilation per shape or label map. Label maps never recompile: the block table and the
region numbers are inputs of the compiled kernel, not constants. Shapes:

- CUDA: ``torch.compile(flex_attention, dynamic=True)`` traces the token count and the table
  widths as symbols, so new image sizes, batch sizes, the last short batch of an epoch or of
  the tiles reuse one compiled kernel (per dtype) instead of recompiling and, past Dynamo's
  recompile limit, falling back to eager FlexAttention, which materialises every score.
- CPU (forward only; PyTorch 2.14's C++ template miscompiles symbolic sizes in the mask):
  static shapes, the token count padded to a power of two of blocks, so a compilation serves
  every count up to twice the first (at most log2 of the size range compilations).

Padding tokens form one-block regions of their own: they cost a diagonal block each, never a
block pair between padding blocks.

The block table is built without (blocks x blocks) work: a query block's keys are the
contiguous range of sorted positions covered by its regions, so each row lists at most the
blocks of that range. On CUDA the tables are as wide as their longest row (tokens/128 x width
entries, not (tokens/128)^2), partial and full tables of one width; the CPU kernel insists on
full-width tables. The region
relation is symmetric, so the transposed table (for the backward pass) is the same table.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Token block of the table (FlexAttention's default sparse block).
FLEX_BLOCK = 128
#: Fewest blocks per call (first compilations for fewer miscompile on CPU in PyTorch 2.14).
MIN_BLOCKS = 4


@dataclass(frozen=True, eq=False)
class FlexPlan:
    """Tokens of the batch sorted by (image, region), padded to whole blocks.

    ``perm`` (Tp,): the flat token at each sorted position (padding repeats token 0, in
    regions of its own). ``inverse`` (T,): each token's sorted position. ``seg`` (Tp,): region
    number at each sorted position. ``block_mask``: a FlexAttention BlockMask over Tp positions.
    """

    batch: int
    tokens: int
    perm: Tensor
    inverse: Tensor
    seg: Tensor
    block_mask: Any


def available() -> bool:
    return _module() is not None


def trains_on(device: torch.device) -> bool:
    """Whether the kernel has a backward pass on ``device`` (PyTorch's CPU FlexAttention has none)."""
    return device.type == "cuda"


@functools.cache
def _module() -> Any:
    try:
        from torch.nn.attention import flex_attention
    except ImportError:  # PyTorch < 2.5
        return None
    # block masks with explicit sequence lengths (PyTorch >= 2.6)
    params = inspect.signature(flex_attention.BlockMask.__init__).parameters
    return flex_attention if "seq_lengths" in params else None


@functools.cache
def compiled(dynamic: bool) -> Any:
    """FlexAttention compiled with symbolic (CUDA) or static (CPU) shapes; see the docstring."""
    return torch.compile(_module().flex_attention, dynamic=dynamic)


def padded_blocks(tokens: int, block: int, dynamic: bool) -> int:
    """Blocks for ``tokens``: whole blocks (symbolic shapes) or a power of two (static ones)."""
    blocks = max(MIN_BLOCKS, -(-tokens // block))
    return blocks if dynamic else 1 << (blocks - 1).bit_length()


def flex_plan(batch: int, perm: Tensor, seg: Tensor, counts: Tensor, block: int = FLEX_BLOCK,
              compact: bool | None = None) -> FlexPlan:
    """Sorted layout and block table of ``batch`` images' tokens, from their sort by region
    (:func:`rat.training.model.attention_plan.sorted_regions`: permutation, region numbers, region sizes).
    ``compact`` tables (default: off the CPU) are as wide as their longest row, else full width."""
    fa = _module()
    if fa is None:
        raise RuntimeError("the 'flex' backend needs FlexAttention (PyTorch >= 2.6)")
    dev = perm.device
    t = perm.numel()
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(t, device=dev)
    dynamic = dev.type != "cpu"
    tp = padded_blocks(t, block, dynamic) * block
    perm = torch.cat([perm, perm.new_zeros(tp - t)])
    # padding: regions of its own, one per block (so padding blocks never attend to each other)
    pad = counts.numel() + torch.arange(t, tp, device=dev) // block - t // block
    seg = torch.cat([seg, pad])
    num, idx, full_num, full_idx = block_tables(seg, block, dynamic if compact is None else compact)

    def same_region(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return seg[q_idx] == seg[kv_idx]

    # symmetric relation: the q tables (for dK, dV) equal the kv tables
    mask = fa.BlockMask(seq_lengths=(tp, tp), kv_num_blocks=num, kv_indices=idx,
                        full_kv_num_blocks=full_num, full_kv_indices=full_idx, q_num_blocks=num,
                        q_indices=idx, full_q_num_blocks=full_num, full_q_indices=full_idx,
                        BLOCK_SIZE=(block, block), mask_mod=same_region)
    return FlexPlan(batch, t // batch, perm, inverse, seg, mask)


def block_tables(seg: Tensor, block: int, compact: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Block tables of sorted region numbers ``seg`` (Tp,), Tp a multiple of ``block``.

    Returns ``num, idx, full_num, full_idx``: per query block (1, 1, nb) the number of key
    blocks that share a region with it, and (1, 1, nb, width) their indices, split into
    partial blocks (need the mask) and full ones (same single region on both sides). Both
    tables have one width, so one stride: PyTorch < 2.12 reads the full tables with the
    partial tables' strides (wrong rows, and reads past the end, when they differ). The width
    is the longest row of either table (at least 2) if ``compact``, else nb (the CPU kernel's
    requirement). Unused entries are 0, a valid block (the kernel reads a row's first entry even
    when its count is 0). The work is O(block pairs), never O(nb^2); compact tables hold nb x
    width entries, the width at most the blocks of the two largest regions.
    """
    dev = seg.device
    nb = seg.numel() // block
    counts = torch.bincount(seg)
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
    num = torch.bincount(qb[~full], minlength=nb)
    full_num = torch.bincount(qb[full], minlength=nb)
    width = max(2, int(torch.maximum(num, full_num).max())) if compact else nb
    return (*_table(qb[~full], kb[~full], num, width), *_table(qb[full], kb[full], full_num, width))


def _table(q: Tensor, k: Tensor, num: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Row-sorted (q, k) block pairs, ``num`` (rows,) per row -> counts (1, 1, rows) and indices
    (1, 1, rows, width), contiguous."""
    first = torch.cumsum(num, 0) - num
    idx = torch.zeros(num.numel(), width, dtype=torch.int32, device=q.device)
    idx[q, torch.arange(q.numel(), device=q.device) - first[q]] = k.to(torch.int32)
    return num.to(torch.int32)[None, None], idx[None, None]


def flex_rows(rows: Tensor, plan: FlexPlan, scale: float) -> Tensor:
    """Region attention of token rows (T, 3, heads, d) -> (T, heads * d)."""
    if not trains_on(rows.device) and torch.is_grad_enabled() and rows.requires_grad:
        raise ValueError(
            "the 'flex' backend has no backward pass on CPU in PyTorch; use 'sparse' for training"
        )
    t, _, h, d = rows.shape
    # (Tp, 3, H, d) sorted -> (3, 1, H, Tp, d)
    x = rows.index_select(0, plan.perm).permute(1, 2, 0, 3).contiguous().unsqueeze(1)
    kernel = compiled(dynamic=rows.device.type != "cpu")
    try:
        out = kernel(x[0], x[1], x[2], block_mask=plan.block_mask, scale=scale)  # (1, H, Tp, d)
    except Exception as err:  # compiler failures come in many types
        raise RuntimeError(f"FlexAttention failed ({type(err).__name__}: {str(err)[:300]}); the "
                           "'sparse' backend computes the same attention") from err
    return out[0].transpose(0, 1).index_select(0, plan.inverse).reshape(t, h * d)
