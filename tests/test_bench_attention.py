"""benchmarks/bench_attention.py's counts of the attention entries within regions (the FLOP floor's part)."""

import pytest
import torch
from helpers import load_script


def test_entries_within_regions_count_each_image_apart():
    bench = load_script("bench_attention")
    labels = torch.tensor([[5, -2, 5, 7], [0, 0, 3, -2]])     # regions of 2, 1, 1 tokens in each image
    assert bench.within_region_entries(labels) == (4 + 1 + 1) + (4 + 1 + 1)
    labels = torch.tensor([[0, 0, 1, 1], [5, 5, 5, 5]])
    assert bench.needed_fraction(labels) == pytest.approx((4 + 4 + 16) / 32)
