"""Training units and back: the dataset group's linear map, and the channel layout the model uses.

Training units are ``(x - norm_low) / (norm_high - norm_low)`` in float32, not clipped: the full source
range (16-bit CT in HU, PET) is kept. :func:`denormalise` is its inverse; with ``clip`` it clips to the
group's normalisation range, the range a model's outputs are scored and written in. The model sees
channels first, (C, H, W); readers and writers use (H, W) or (H, W, C).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from rat.shared.datasets import Group

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def normalise(x: ArrayT, group: Group) -> ArrayT:
    """Source units -> training units: norm_low -> 0, norm_high -> 1 (float32, not clipped; a group that clips
    its values, ``clip_values``, first clips them to its declared range)."""
    scale = 1.0 / (group.norm_high - group.norm_low)
    bounds = group.declared_range if group.clip_values else None
    if isinstance(x, torch.Tensor):
        x = x.float() if bounds is None else x.float().clamp(*bounds)
        return (x - group.norm_low) * scale
    x = np.asarray(x, dtype=np.float32)
    if bounds is not None:
        x = np.clip(x, np.float32(bounds[0]), np.float32(bounds[1]))
    return (x - np.float32(group.norm_low)) * np.float32(scale)


def denormalise(x: torch.Tensor | np.ndarray, group: Group, clip: bool = False) -> np.ndarray:
    """Training units -> source units as float64 numpy (the inverse of :func:`normalise`); with ``clip``,
    clipped to [norm_low, norm_high]."""
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    arr = arr * (group.norm_high - group.norm_low) + group.norm_low
    return np.clip(arr, group.norm_low, group.norm_high) if clip else arr


def channels_first(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W); (H, W, C) -> (C, H, W)."""
    return image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)


def channels_last(image: np.ndarray) -> np.ndarray:
    """(1, H, W) -> (H, W); (C, H, W) -> (H, W, C): the inverse of :func:`channels_first`."""
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


def to_source(x: torch.Tensor | np.ndarray, group: Group, clip: bool = True) -> np.ndarray:
    """A model's (C, H, W) in training units -> the image in source units, (H, W) or (H, W, C) float64,
    clipped to the normalisation range unless ``clip`` is False."""
    return channels_last(denormalise(x, group, clip))
