"""Derived LQ images (rat.shared.datasets.degrade): the TMA bicubic x4 degradation."""

from __future__ import annotations

import numpy as np

from rat.shared.datasets.degrade import bicubic_down_up

# ----------------------------------------------------------------------------- definitions


def test_bicubic_x4_keeps_size_and_removes_what_4x_cannot_hold():
    yy, xx = np.mgrid[:64, :64]
    fine = np.where((yy + xx) % 2 == 0, 200.0, 50.0)  # 2-px checkerboard: above the 4x Nyquist
    coarse = 125 + 75 * np.sin(2 * np.pi * xx / 32.0)  # 32-px period: survives 4x
    rgb = np.stack([fine, coarse, np.full_like(fine, 80.0)], axis=-1)
    out = bicubic_down_up(rgb)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert out[8:-8, 8:-8, 0].std() < 2.0  # checkerboard averaged away to its mean
    assert abs(out[..., 0].mean() - 125) < 2
    assert np.corrcoef(out[..., 1].ravel(), coarse.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(out[..., 2], 80.0, atol=1e-3)  # constant stays constant
    assert bicubic_down_up(np.zeros((130, 67))).shape == (130, 67)  # not a multiple of 4
    assert bicubic_down_up(fine, factor=1).std() > 70  # factor 1 changes nothing much

