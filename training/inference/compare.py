"""Comparing trained models on the same test images: paired differences, bootstrap intervals, Wilcoxon.

Every model is scored on the same images (its own label store: models trained on different region sources
keep their own regions), and against a baseline model the differences are paired per image, or per unit (a
patient: its images' mean) with ``by="unit"``, the independent sample of datasets that split by patient:

- the mean difference and its 95 % percentile-bootstrap confidence interval: the differences resampled with
  replacement ``resamples`` times (numpy's default generator, seeded), the 2.5th and 97.5th percentiles of
  the resampled means;
- the two-sided Wilcoxon signed-rank p-value of the differences (scipy.stats.wilcoxon, its defaults; 1.0
  when every difference is zero).

Models of another dataset or group, or scored on other images, and the same model given twice, are refused
in one line naming them. With fewer than :data:`MIN_PAIRS` pairs no difference can be significant (the
smallest two-sided signed-rank p-value of n pairs is 2 / 2^n): :func:`few_pairs` says so.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from rat.shared.errors import RatError
from rat.training.inference.evaluate import SplitScores
from rat.training.inference.restorer import Restorer
from rat.training.inference.scores import Score, per_unit, summarize_scores
from rat.training.run import BEST, LAST

BY = ("image", "unit")
LQ = "LQ input"
#: Significance level the warning about few pairs refers to.
ALPHA = 0.05
#: Fewest pairs whose two-sided Wilcoxon signed-rank p-value can fall below ALPHA: all n differences of one
#: sign give the smallest, 2 / 2^n (the exact null distribution of the signed-rank statistic), so 6 for 0.05.
MIN_PAIRS = next(n for n in range(1, 64) if 2.0 / 2**n < ALPHA)


class CompareError(RatError, ValueError):
    """Models that cannot be compared (another dataset or group, other test images); one line."""


@dataclass(frozen=True)
class Paired:
    """A model against the baseline on one metric: mean difference, its confidence interval, p-value."""

    mean: float
    low: float
    high: float
    p: float
    n: int


def bootstrap_ci(diffs: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``diffs`` (see the module doc)."""
    d = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (1.0 when all are zero)."""
    d = np.asarray(diffs, dtype=np.float64)
    if not np.any(d):
        return 1.0
    return float(wilcoxon(d).pvalue)


def paired(base: Sequence[float], other: Sequence[float], resamples: int = 10_000, seed: int = 0) -> Paired:
    """``other - base``, element by element (same images in the same order), summarised."""
    d = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    low, high = bootstrap_ci(d, resamples=resamples, seed=seed)
    return Paired(float(d.mean()), low, high, wilcoxon_p(d), int(d.size))


def model_file(path: str | Path) -> Path:
    """The checkpoint of a run folder (best.pt, else last.pt), or ``path`` itself (a checkpoint file or an
    exported model folder)."""
    path = Path(path)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CompareError(f"{path}: neither a run folder (no {BEST} or {LAST}) nor a model folder")
    return path


def model_names(paths: Sequence[str | Path]) -> list[str]:
    """Short, distinct names: the run folder's name for its checkpoints, else the file's stem."""
    names = []
    for p in map(Path, paths):
        name = p.parent.name if p.name in (BEST, LAST) else p.name.removesuffix(".pt")
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def check_distinct(names: Sequence[str], files: Sequence[str | Path], restorers: Sequence[Restorer]) -> None:
    """CompareError when one model is given twice: the same file (a run folder and its checkpoint, two
    spellings of a path), or the same weights (a checkpoint and the model folder exported from it)."""
    seen: dict[tuple[str, str], str] = {}
    for name, path, r in zip(names, files, restorers, strict=True):
        for key in (("file", str(Path(path).resolve())), ("weights", r.weights_sha256)):
            if key in seen:
                what = "the same file" if key[0] == "file" else f"the same weights (SHA-256 {key[1][:12]}...)"
                raise CompareError(f"{name}: {what} as {seen[key]}; compare different models")
            seen[key] = name


def few_pairs(c: Comparison) -> str | None:
    """A warning when the comparison has too few pairs for any difference to be significant, else None."""
    n = len(c.rows[c.baseline])
    if n >= MIN_PAIRS:
        return None
    what = "images" if c.by == "image" else "units"
    return (f"warning: only {n} paired {what}: a two-sided Wilcoxon signed-rank test needs at least "
            f"{MIN_PAIRS} to reach p < {ALPHA} (its smallest p-value is {2.0 / 2**n:.3g} here), and a "
            f"bootstrap interval of {n} differences spans no more than they do; score more {what}")


def check_comparable(names: Sequence[str], restorers: Sequence[Restorer], runs: Sequence[SplitScores]
                     ) -> None:
    """CompareError when a model belongs to another dataset or group than the first, or was scored on other
    images (ids or bytes)."""
    first = restorers[0]
    for name, r in zip(names[1:], restorers[1:], strict=True):
        if (r.dataset.name, r.group.name) != (first.dataset.name, first.group.name):
            raise CompareError(f"{name}: a model of {r.dataset.name}/{r.group.name}, but {names[0]} is one "
                               f"of {first.dataset.name}/{first.group.name}; compare models of one group")
    key = {(e.id, e.sha256, e.hq_sha256) for e in runs[0].entries}
    for name, run in zip(names[1:], runs[1:], strict=True):
        other = {(e.id, e.sha256, e.hq_sha256) for e in run.entries}
        if other != key:
            differ = sorted({k[0] for k in key ^ other})
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            raise CompareError(f"{name}: scored on other images than {names[0]} ({len(differ)} differ: "
                               f"{shown}); compare models evaluated on the same test split")


def aligned(scores: Sequence[Score], by: str) -> dict[str, Score]:
    """Scores by image id, or by unit (their mean) with ``by="unit"``, in a fixed order."""
    rows = per_unit(scores) if by == "unit" else list(scores)
    return {s.id: s for s in sorted(rows, key=lambda s: s.id)}


@dataclass
class Comparison:
    """Scores of every model on the same images, and each one's paired differences to the baseline."""

    names: list[str]
    baseline: str
    by: str
    rows: dict[str, dict[str, Score]]  # model -> sample id -> score
    pairs: dict[str, dict[str, Paired]]  # model -> metric -> against the baseline


def compare(names: Sequence[str], runs: Sequence[SplitScores], baseline: str | None = None, by: str = "image",
            resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Paired comparison of models scored on the same images (see the module doc); the LQ input is a row."""
    if by not in BY:
        raise CompareError(f"by {by!r}: choose one of {', '.join(BY)}")
    baseline = baseline or names[0]
    if baseline not in names:
        raise CompareError(f"baseline {baseline!r} is none of the models ({', '.join(names)})")
    rows = {name: aligned(run.scores, by) for name, run in zip(names, runs, strict=True)}
    rows = {LQ: {k: Score(s.id, s.lq_psnr, s.lq_ssim, s.lq_psnr, s.lq_ssim, s.unit)
                 for k, s in rows[names[0]].items()}, **rows}
    ids = list(rows[baseline])
    pairs = {name: {m: paired([getattr(rows[baseline][i], m) for i in ids], [getattr(rows[name][i], m)
                                                                            for i in ids], resamples, seed)
                    for m in ("psnr", "ssim")}
             for name in rows if name != baseline}
    return Comparison([LQ, *names], baseline, by, rows, pairs)


def format_comparison(c: Comparison) -> str:
    """The table: mean +- std per model, then mean difference to the baseline [95 % CI] and Wilcoxon p."""
    n = len(c.rows[c.baseline])
    what = "images" if c.by == "image" else "units"
    widths = (16, 18, 18, 32, 8, 34, 8)
    head = ["", "PSNR (dB)", "SSIM", "dPSNR [95% CI]", "p", "dSSIM [95% CI]", "p"]
    lines = ["".join(f"{h:<{w}}" if k == 0 else f"{h:>{w}}"
                     for k, (h, w) in enumerate(zip(head, widths, strict=True)))
             + f"   ({n} {what}, paired against {c.baseline})"]
    for name in c.names:
        s = summarize_scores(list(c.rows[name].values()))["restored"]
        cells = [name[:16], f"{s['psnr']:.4f} +- {s['psnr_std']:.2f}",
                 f"{s['ssim']:.4f} +- {s['ssim_std']:.3f}"]
        if name == c.baseline:
            cells += ["(baseline)", "", "", ""]
        else:
            d, e = c.pairs[name]["psnr"], c.pairs[name]["ssim"]
            cells += [f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]", f"{d.p:.3g}",
                      f"{e.mean:+.5f} [{e.low:+.5f}, {e.high:+.5f}]", f"{e.p:.3g}"]
        lines.append("".join(f"{x:<{w}}" if k == 0 else f"{x:>{w}}"
                             for k, (x, w) in enumerate(zip(cells, widths, strict=True))).rstrip())
    return "\n".join(lines)


def write_comparison_csv(c: Comparison, path: str | Path) -> Path:
    """One row per image (or unit): its id, unit, and each model's PSNR and SSIM."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "unit", *(f"{name}:{m}" for name in c.names for m in ("psnr", "ssim"))])
        for key, first in c.rows[c.baseline].items():
            writer.writerow([key, first.unit, *(getattr(c.rows[name][key], m) for name in c.names
                                                for m in ("psnr", "ssim"))])
    return path


def box_plot(c: Comparison, path: str | Path) -> Path:
    """PNG: box plots of the paired differences to the baseline, PSNR and SSIM, one box per model."""
    from matplotlib.figure import Figure

    others = [n for n in c.names if n != c.baseline]
    fig = Figure(figsize=(5 + 1.5 * len(others), 4), layout="constrained")
    for ax, metric, unit in zip(fig.subplots(1, 2), ("psnr", "ssim"), ("dB", ""), strict=True):
        ids = list(c.rows[c.baseline])
        diffs = [[getattr(c.rows[n][i], metric) - getattr(c.rows[c.baseline][i], metric) for i in ids]
                 for n in others]
        ax.boxplot(diffs, tick_labels=others, showmeans=True)
        ax.axhline(0.0, color="grey", ls="--", lw=1)
        ax.set(title=f"{metric.upper()} - {c.baseline} (per {c.by})", ylabel=f"difference {unit}".strip())
        ax.grid(True, axis="y", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
