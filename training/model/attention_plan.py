"""Region plans: what region attention over a label map needs, built once per forward pass.

Region attention restricts every token to the tokens of its own region. A plan depends only
on the token labels (B, N), never on the features, so the model builds it once per forward
pass and every R-MSA layer shares it:

- :class:`DensePlan`: the paper's additive (B, 1, N, N) mask, 0 within a region, lambda across.
- :class:`SparsePlan`: the regions grouped into size classes (sizes within a factor 2^(1/4)),
  each class a batch of regions padded to its largest; one gather and one scatter index.
- :class:`rat.training.model.flex.FlexPlan`: the tokens sorted by (image, region) and a block-sparse
  table of the 128 x 128 blocks that share a region.

Region ids are made unique across the batch by :func:`region_ids`, which the focal region loss
uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rat.training.choices import BACKENDS
from rat.training.model import flex

#: The backends that have a plan: every name of BACKENDS but ``auto``.
PLANNED = tuple(b for b in BACKENDS if b != "auto")

#: The paper's additive mask between tokens of different regions.
REGION_LAMBDA = -1000.0
#: Size classes per doubling of region size: padding adds at most 2^(2/4) - 1 = 41 % work.
CLASSES_PER_OCTAVE = 4


@dataclass(frozen=True, eq=False)
class DensePlan:
    """The paper's additive mask. ``bias``: (B, 1, N, N) float32, 0 within a region, lambda across."""

    bias: Tensor


@dataclass(frozen=True, eq=False)
class SizeClass:
    """``regions`` regions of similar size, each padded to ``length`` slots.

    ``mask`` (regions, 1, 1, length) bool: the slots that hold real tokens (keys), or None if
    no slot of the class is padding. Padding slots repeat a token of their region.
    """

    regions: int
    length: int
    mask: Tensor | None

    @property
    def slots(self) -> int:
        return self.regions * self.length


@dataclass(frozen=True, eq=False)
class SparsePlan:
    """Size classes covering the B x N tokens.

    ``index`` (S,): the flat token (b * N + n) in each of the S slots, class after class, region
    after region. ``order`` (T,): the slot that holds each token's own result (a real slot).
    """

    batch: int
    tokens: int
    classes: tuple[SizeClass, ...]
    index: Tensor
    order: Tensor


def region_ids(labels: Tensor) -> Tensor:
    """(B, N) integer labels -> (B, N) int64 keys, distinct across images, order kept in each.

    ``ids - min`` then ``+ b * (max + 1)`` for image b: any integer labels (negative, sparse,
    uint8) become keys that never collide between the images of a batch.
    """
    if labels.dim() != 2:
        raise ValueError(f"token labels must be (B, N), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    ids = labels.to(torch.int64)
    ids = ids - ids.amin()
    offset = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * (ids.amax() + 1)
    return ids + offset


def plan_region_attention(labels: Tensor, backend: str, *, region_lambda: float = REGION_LAMBDA
                          ) -> DensePlan | SparsePlan | flex.FlexPlan:
    """Precompute what region attention over token labels (B, N) needs, for ``backend`` (one of
    :data:`PLANNED`; ``auto`` is resolved on the device first, by
    :func:`rat.training.model.attention.resolve_backend`).

    ``region_lambda`` is used by ``dense`` only; the other backends compute its limit
    lambda -> -inf, which equals the dense result in float32 for lambda = -1000, so they refuse
    a lambda above -100 where the two would differ.
    """
    if backend not in PLANNED:
        hint = " (resolve it first: rat.training.model.attention.resolve_backend)" * (backend == "auto")
        raise ValueError(f"no region plan for backend {backend!r}{hint}; choose one of {PLANNED}")
    ids = region_ids(labels)
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
        if backend == "sparse":
            return _sparse_plan(ids)
        perm, seg, counts, _ = sorted_regions(ids)
        return flex.flex_plan(ids.shape[0], perm, seg, counts)


def sorted_regions(ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """perm (T,) sorting the flat ids, their region number seg (T,), counts and starts (R,)."""
    flat = ids.reshape(-1)
    perm = torch.argsort(flat, stable=True)
    _, seg, counts = torch.unique_consecutive(flat[perm], return_inverse=True, return_counts=True)
    return perm, seg, counts, torch.cumsum(counts, 0) - counts


def _sparse_plan(ids: Tensor) -> SparsePlan:
    dev = ids.device
    perm, _, counts, starts = sorted_regions(ids)
    size_class = torch.floor(torch.log2(counts.double()) * CLASSES_PER_OCTAVE).long()
    by_class = torch.argsort(size_class, stable=True)
    _, members = torch.unique_consecutive(size_class[by_class], return_counts=True)
    classes, index, real = [], [], []
    for regions in torch.split(by_class, members.tolist()):  # a few classes, not regions
        n = counts[regions]
        length = int(n.max())
        slot = torch.arange(length, device=dev)
        is_real = slot < n.unsqueeze(1)  # (regions, length)
        # padding slots repeat the region's first token (their keys are masked out)
        index.append(perm[starts[regions].unsqueeze(1) + torch.where(is_real, slot, 0)].reshape(-1))
        real.append(is_real.reshape(-1))
        mask = None if bool(is_real.all()) else is_real[:, None, None, :]
        classes.append(SizeClass(regions.numel(), length, mask))
    index, real = torch.cat(index), torch.cat(real)
    order = torch.empty(ids.numel(), dtype=torch.int64, device=dev)
    order[index[real]] = torch.nonzero(real).flatten()
    # int32 indices: index_select's backward (index_add_) is much faster with them on CPU
    return SparsePlan(ids.shape[0], ids.shape[1], tuple(classes), index.to(torch.int32),
                      order.to(torch.int32))
