"""Focal region loss of RAT: L1 with extra weight on the regions that are restored worst.

Per pixel ``|err| * (1 + gamma * w_r)``, averaged over pixels, where ``w_r`` is the mean error
of the pixel's region raised to ``delta`` and normalised to [0, 1]. Two normalisations
(:data:`rat.training.choices.FR_NORMS`):

- ``image`` (default, the paper's formula): divided by the largest region weight of the same
  image, so every image has a region of weight 1;
- ``batch`` (the authors' public code, ``weight / weight.max()``): divided by the largest
  region weight of the whole batch, so the images with smaller errors get smaller weights.

The two agree for batches of one image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rat.training.choices import FR_NORMS
from rat.training.model.attention_plan import region_ids


def region_weights(err: Tensor, labels: Tensor, delta: float = 1.0, norm: str = "image") -> Tensor:
    """Per-pixel region weights w_r in [0, 1] from an error map.

    err (B, C, H, W) non-negative, labels (B, H, W) integer. For each region r of each image,
    m_r = mean of err over the region's pixels and all channels; w_r = m_r^delta divided by the
    largest m^delta among the regions of the same image (``norm="image"``) or of the whole
    batch (``norm="batch"``), 0 where that largest value is 0. Returns (B, 1, H, W), computed
    with segment reductions (no loop over regions or images).
    """
    if norm not in FR_NORMS:
        raise ValueError(f"unknown focal region loss normalisation {norm!r}; choose one of {FR_NORMS}")
    b, c = err.shape[:2]
    keys, inverse = torch.unique(region_ids(labels.reshape(b, -1)), return_inverse=True)
    flat = inverse.reshape(-1)  # region index of each pixel
    sums = torch.zeros(keys.numel(), dtype=err.dtype, device=err.device)
    sums.index_add_(0, flat, err.sum(dim=1).reshape(-1))
    counts = torch.bincount(flat, minlength=keys.numel()).to(err.dtype) * c
    score = ((sums / counts) ** delta)[inverse]  # (B, H*W): m_r^delta of each pixel's region
    top = score.amax(dim=1, keepdim=True) if norm == "image" else score.amax()
    weight = torch.where(top > 0, score / top, torch.zeros_like(score))
    return weight.reshape(b, 1, *err.shape[2:])


def focal_region_loss(pred: Tensor, target: Tensor, labels: Tensor, gamma: float = 1e-3,
                      delta: float = 1.0, norm: str = "image") -> Tensor:
    """mean over pixels of |pred - target| * (1 + gamma * w_r); gamma = 0 is plain L1.

    pred, target (B, C, H, W); labels (B, H, W) integer region ids at full resolution. The
    weights w_r (see :func:`region_weights`; ``norm`` ``image`` or ``batch``) are detached:
    they steer, they are not trained.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.dim() != 4:
        raise ValueError(f"pred must be (B, C, H, W), got shape {tuple(pred.shape)}")
    expected = (pred.shape[0], *pred.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match prediction of shape "
            f"{tuple(pred.shape)}: expected {expected}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    err = (pred - target).abs()
    with torch.no_grad():
        weight = region_weights(err, labels.to(err.device), delta, norm)
    return (err * (1 + gamma * weight)).mean()
