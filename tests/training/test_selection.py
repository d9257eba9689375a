"""Checkpoint selection (rat.training.selection): one metric and its direction; ties keep the earlier step;
what older checkpoints recorded is read the same way."""

import math

import pytest

from rat.training.selection import Selection, recorded


def test_the_first_strictly_best_value_is_kept_whichever_the_metric():
    summaries = [{"psnr": 30.0, "ssim": 0.80}, {"psnr": 31.5, "ssim": 0.79}, {"psnr": 31.5, "ssim": 0.85},
                 {"psnr": 31.2, "ssim": 0.85}]
    for metric, expected in (("psnr", 1), ("ssim", 2)):
        selection, best, chosen = Selection(metric), None, None
        for i, summary in enumerate(summaries):
            if selection.improves(summary, best):
                best, chosen = selection.value(summary), i
        # an independent reference: the first index of the maximum
        values = [s[metric] for s in summaries]
        assert chosen == values.index(max(values)) == expected


def test_a_non_finite_first_value_is_not_chosen_and_unknown_metrics_are_refused():
    assert not Selection().improves({"psnr": math.nan}, None)
    assert not Selection().improves({"psnr": 30.0}, 30.0)
    with pytest.raises(ValueError, match="unknown selection metric 'loss'; choose one of psnr, ssim"):
        Selection("loss")
    assert Selection("ssim").describe(0.912345) == "SSIM 0.9123"
    assert Selection().describe(None) == "PSNR -"


def test_older_checkpoints_read_as_a_psnr_selection():
    old = {"best_psnr": 33.2, "selection": {"split": "val", "metric": "psnr", "step": 400}, "config": {}}
    assert recorded(old) == {"split": "val", "metric": "psnr", "step": 400, "value": 33.2}
    fresh = {"best_psnr": -math.inf, "config": {"val_split": "test"}}
    assert recorded(fresh) == {"split": "test", "metric": "psnr", "step": None, "value": None}
