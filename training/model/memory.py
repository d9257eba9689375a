"""Memory policies: which activations a training step keeps for backward, which it recomputes.

A policy says, for each kind of block of the network, one of:

- ``keep``: store what autograd saves (nothing recomputed);
- ``recompute``: store only the block's input and run its forward again in backward
  (``torch.utils.checkpoint``, non-reentrant); a block's last operation (its output
  projection) is never rerun, as nothing in backward needs its output;
- ``select``: selective checkpointing: keep the outputs of the fused attention kernels and of
  the operations the model marks with :func:`kept` (the widening projections: Q/K/V and the
  MLP's first layer), recompute the rest in backward (normalisation, activations, gathers,
  narrowing projections). The kept outputs are those dearest to recompute per byte.

The named policies (:data:`rat.training.choices.MEMORY_POLICIES`):

- ``selective`` (default): ``recompute`` the NAFBlocks (full-resolution activations: a large
  share of the memory, a small share of the matrix products) and the W-MSA sublayers (small
  matrix products), ``select`` for the R-MSA and MLP sublayers. On a 256 x 256 step: 1/6.0 of
  the dense formulation's peak memory, 13-27 % slower than ``none`` (benchmarks/bench_attention.py;
  figures in the README, "Speed and memory").
- ``full``: ``recompute`` every block: the least memory (1/8.3), one more forward pass of the
  matrix products (24-36 % slower than ``none``).
- ``none``: ``keep`` everything: the most memory (1/3.3 of the dense formulation's).

``select`` for R-MSA applies to the ``sparse`` kernels; the ``dense`` baseline (whose matrix
products are N x N) and the compiled ``flex`` kernel are kept whole instead. Every policy gives
the same outputs and gradients up to float rounding, and only matters with gradients enabled.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rat.training.choices import MEMORY_POLICIES

KEEP, RECOMPUTE, SELECT = "keep", "recompute", "select"
#: Block kinds of RAT.
BLOCKS = ("nafblock", "rmsa", "wmsa", "mlp")
#: What each named policy does with each kind of block.
POLICIES: dict[str, dict[str, str]] = {
    "selective": {"nafblock": RECOMPUTE, "rmsa": SELECT, "wmsa": RECOMPUTE, "mlp": SELECT},
    "full": dict.fromkeys(BLOCKS, RECOMPUTE),
    "none": dict.fromkeys(BLOCKS, KEEP),
}
_MARKED = contextvars.ContextVar("rat_memory_kept", default=False)


def check_policy(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"unknown memory policy {name!r}; choose one of {MEMORY_POLICIES}")
    return name


def around_compiled(policy: dict[str, str]) -> dict[str, str]:
    """``policy`` for compiled blocks (:mod:`rat.training.model.compiling`): ``select`` becomes ``keep``, as
    the compiler chooses what to store inside a compiled block (its matrix products, not its pointwise
    work), which is what ``select`` does by hand."""
    return {kind: KEEP if how == SELECT else how for kind, how in policy.items()}


def run(fn: Callable[..., Tensor], how: str, *args: Tensor | object) -> Tensor:
    """``fn(*args)``, storing for backward what ``how`` (keep, recompute, select) says.

    Without gradients (evaluation, inference) every policy is a plain call.
    """
    if how == KEEP or not torch.is_grad_enabled():
        return fn(*args)
    context = _select_context() if how == SELECT else None
    if context is None:  # recompute (also select where PyTorch < 2.4 lacks it)
        return checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(fn, *args, use_reentrant=False, context_fn=context)


def kept(fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """``fn(*args)`` (a projection) whose matrix-product outputs ``select`` keeps for backward."""
    if torch.compiler.is_compiling():  # inside a compiled block: the compiler chooses what to keep
        return fn(*args)
    token = _MARKED.set(True)
    try:
        return fn(*args)
    finally:
        _MARKED.reset(token)


def _ops(*names: str) -> frozenset:
    aten = torch.ops.aten
    return frozenset(getattr(aten, n).default for n in names if hasattr(aten, n))


@functools.cache
def _attention_ops() -> frozenset:
    return _ops("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")


@functools.cache
def _product_ops() -> frozenset:
    return _ops("convolution", "mm", "addmm", "bmm")


def _select_policy(ctx, op, *args, **kwargs):  # signature set by torch.utils.checkpoint
    from torch.utils.checkpoint import CheckpointPolicy

    if op in _attention_ops() or (_MARKED.get() and op in _product_ops()):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@functools.cache
def _select_context() -> Callable | None:
    try:
        from torch.utils.checkpoint import create_selective_checkpoint_contexts
    except ImportError:  # PyTorch < 2.4: no selective checkpointing
        return None
    return functools.partial(create_selective_checkpoint_contexts, _select_policy)
