"""Paired comparison of models (rat.training.inference.compare): the bootstrap interval and the Wilcoxon
p-value against direct computations, and refusals of models that cannot be compared."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from rat.shared.index import Entry
from rat.training.inference.compare import (
    LQ,
    CompareError,
    bootstrap_ci,
    check_comparable,
    compare,
    format_comparison,
    model_names,
    paired,
    wilcoxon_p,
)
from rat.training.inference.evaluate import SplitScores
from rat.training.inference.scores import Score

DIFFS = [0.31, -0.12, 0.55, 0.08, 0.42, -0.03, 0.27, 0.61, 0.19, -0.25, 0.36, 0.14]


def test_bootstrap_interval_equals_a_direct_loop_and_scipys_percentile_bootstrap():
    low, high = bootstrap_ci(DIFFS, resamples=20_000, seed=7)
    rng, d = np.random.default_rng(7), np.asarray(DIFFS)
    means = [d[rng.integers(0, d.size, d.size)].mean() for _ in range(20_000)]   # one resample at a time
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)
    ref = stats.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", confidence_level=0.95,
                          random_state=1).confidence_interval             # other draws: close, not equal
    assert low == pytest.approx(ref.low, abs=0.02) and high == pytest.approx(ref.high, abs=0.02)
    assert low < d.mean() < high


def test_wilcoxon_p_equals_the_exact_signed_rank_distribution():
    d = np.asarray(DIFFS)
    ranks = stats.rankdata(np.abs(d))
    w = ranks[d > 0].sum()
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in
            itertools.product((0, 1), repeat=d.size)]                       # all 2^n sign patterns
    below, above = np.mean(np.array(sums) <= w), np.mean(np.array(sums) >= w)
    assert wilcoxon_p(d) == pytest.approx(min(1.0, 2 * min(below, above)), rel=1e-9)
    assert wilcoxon_p(np.zeros(5)) == 1.0


def score(i: int, psnr: float, unit: str = "") -> Score:
    return Score(f"img{i}", psnr, psnr / 100, psnr - 2, (psnr - 2) / 100, unit)


def run(psnrs, units=None) -> SplitScores:
    units = units or [""] * len(psnrs)
    scores = [score(i, p, u) for i, (p, u) in enumerate(zip(psnrs, units, strict=True))]
    entries = [Entry(s.id, "g", "test", f"{s.id}.png", f"{s.id}.png", None, "a" * 64, (4, 4)) for s in scores]
    return SplitScores(None, entries, None, scores)


def test_paired_differences_per_image_and_per_unit():
    patients = ["p1", "p1", "p2", "p2"]
    a, b = run([30.0, 31.0, 32.0, 33.0], patients), run([30.5, 31.5, 31.0, 34.0], patients)
    c = compare(["a", "b"], [a, b], resamples=1000)
    assert c.names == [LQ, "a", "b"] and c.pairs["b"]["psnr"].mean == pytest.approx(0.25)
    assert c.pairs[LQ]["psnr"].mean == pytest.approx(-2.0)               # the LQ input, paired too
    units = compare(["a", "b"], [a, b], by="unit", resamples=1000)
    assert list(units.rows["a"]) == ["p1", "p2"] and units.pairs["b"]["psnr"].n == 2
    assert units.rows["b"]["p2"].psnr == pytest.approx(32.5)
    assert paired([1, 2], [1, 2]).p == 1.0
    table = format_comparison(c)
    assert "paired against a" in table and "(baseline)" in table and "+0.2500" in table


def test_models_of_another_group_or_other_images_are_refused_in_one_line():
    ds = SimpleNamespace(name="sample")
    ct, pathology = (SimpleNamespace(dataset=ds, group=SimpleNamespace(name=g)) for g in ("ct", "pathology"))
    with pytest.raises(CompareError, match=r"^b: a model of sample/pathology, but a is one of sample/ct"):
        check_comparable(["a", "b"], [ct, pathology], [run([1.0]), run([1.0])])
    other = run([1.0, 2.0])
    other.entries[1] = Entry("img9", "g", "test", "x.png", "x.png", None, "b" * 64, (4, 4))
    with pytest.raises(CompareError, match=r"^b: scored on other images than a \(2 differ: img1") as err:
        check_comparable(["a", "b"], [ct, ct], [run([1.0, 2.0]), other])
    assert "\n" not in str(err.value)
    assert model_names(["runs/rmsa/best.pt", "runs/wmsa/best.pt", "x/rmsa/last.pt", "m.pt"]) == \
        ["rmsa", "wmsa", "rmsa-2", "m"]


def test_few_pairs_are_warned_about_at_the_signed_rank_tests_own_limit():
    """The smallest two-sided p-value of n pairs (all of one sign) is 2 / 2^n: scipy's exact test gives
    0.0625 for 5 pairs and 0.03125 for 6, so 6 pairs are the fewest that can reach p < 0.05."""
    from rat.training.inference.compare import MIN_PAIRS, few_pairs

    assert stats.wilcoxon(np.arange(1.0, 6.0)).pvalue == pytest.approx(0.0625)
    assert stats.wilcoxon(np.arange(1.0, 7.0)).pvalue == pytest.approx(0.03125)
    assert MIN_PAIRS == 6
    one = compare(["a", "b"], [run([30.0]), run([31.0])], resamples=200)
    warning = few_pairs(one)
    assert warning.startswith("warning: only 1 paired images: a two-sided Wilcoxon signed-rank test needs "
                              "at least 6 to reach p < 0.05")
    assert few_pairs(compare(["a", "b"], [run([30.0 + i for i in range(6)]), run([31.0] * 6)],
                             resamples=200)) is None


def test_the_same_model_given_twice_is_refused():
    from rat.training.inference.compare import check_distinct

    a, b, a_again = (SimpleNamespace(weights_sha256=w) for w in ("a" * 64, "b" * 64, "a" * 64))
    check_distinct(["x", "y"], ["runs/x/best.pt", "runs/y/best.pt"], [a, b])
    with pytest.raises(CompareError, match=r"^x-2: the same file as x; compare different models"):
        check_distinct(["x", "x-2"], ["runs/x/best.pt", "runs/../runs/x/best.pt"], [a, b])
    with pytest.raises(CompareError, match=r"^model: the same weights \(SHA-256 aaaaaaaaaaaa...\) as x"):
        check_distinct(["x", "model"], ["runs/x/best.pt", "models/x"], [a, a_again])
