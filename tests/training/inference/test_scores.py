"""Scores (rat.training.inference.scores): per-unit means (a patient: the independent sample)."""

import pytest

from rat.training.inference.scores import Score, format_table, per_unit


def test_per_unit_scores_are_the_means_of_their_images():
    scores = [Score("p1_1", 30.0, 0.90, 28.0, 0.80, "p1"), Score("p2_1", 40.0, 0.95, 35.0, 0.85, "p2"),
              Score("p1_2", 32.0, 0.92, 29.0, 0.82, "p1"), Score("x", 20.0, 0.5, 19.0, 0.4)]
    units = per_unit(scores)
    assert [u.id for u in units] == ["p1", "p2", "x"]                  # order of first appearance
    p1 = units[0]
    assert (p1.psnr, p1.ssim, p1.lq_psnr, p1.lq_ssim) == pytest.approx((31, .91, 28.5, .81))
    assert units[1] == Score("p2", 40.0, 0.95, 35.0, 0.85, "p2")
    table = format_table(units, what="patients")
    assert "(3 patients)" in table and f"{(31 + 40 + 20) / 3:.4f}" in table
