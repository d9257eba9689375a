"""Training units and back (rat.training.normalisation): the dataset's linear map, full 16-bit range."""

from dataclasses import replace

import numpy as np
import torch

from rat.shared.datasets import load_dataset
from rat.training.normalisation import channels_first, channels_last, denormalise, normalise, to_source


def test_normalisation_keeps_the_16_bit_range():
    ct = load_dataset("sample").groups["ct"]  # -1024 .. 3072 HU -> 0 .. 1
    hu = np.array([-2048, -1024, 0, 1000, 3072, 32767], np.float32)
    x = normalise(hu, ct)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, (hu + 1024) / 4096)  # not clipped, not quantised
    assert len(np.unique(normalise(np.arange(-1024, 3072, dtype=np.float32), ct))) == 4096
    np.testing.assert_allclose(denormalise(x, ct), hu, rtol=1e-6)
    t = normalise(torch.from_numpy(hu), ct)
    assert torch.allclose(t, torch.from_numpy(x))
    np.testing.assert_allclose(denormalise(t, ct), hu, rtol=1e-6)
    pet = replace(ct, norm_low=0.0, norm_high=65535.0)
    assert normalise(np.float32(65535), pet) == 1 and normalise(np.float32(1), pet) > 0


def test_to_source_clips_to_the_range_and_restores_the_channel_layout():
    ct = load_dataset("sample").groups["ct"]
    rgb = np.random.default_rng(0).uniform(-0.5, 1.5, (3, 4, 5)).astype(np.float32)
    assert channels_first(channels_last(rgb)).shape == rgb.shape and channels_last(rgb).shape == (4, 5, 3)
    out = to_source(rgb, ct)
    expected = np.clip(np.moveaxis(rgb, 0, -1).astype(np.float64) * 4096 - 1024, -1024, 3072)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    gray = to_source(rgb[:1], ct, clip=False)
    assert gray.shape == (4, 5) and gray.min() < -1024
