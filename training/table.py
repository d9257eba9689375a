"""`rat-train table`: RAT against its baselines on one group of a store by one protocol (the paper's tables).

    result = make_table(load_recipe("ct.toml"), {"masks": "aapm.zarr", "group": "ct"}, "tables/aapm_ct")

Every row is a registered model (:mod:`rat.training.model.registry`) with its parameters. Each is trained by
the same trainer with the same settings (store, group, splits, patches, iterations, optimiser, schedule,
loss, seed) in ``<out>/runs/<row>``; its ``best.pt`` is chosen on the validation split; the test split is
scored once per model, and the paired statistics against RAT are those of `rat-train compare`
(:func:`rat.training.inference.compare.compare`). A row whose run is complete is reused and an incomplete
one resumed, so a killed table continues where it stopped (a run made with other settings is refused).

Measured per model on this machine: parameters; GFLOPs of one forward pass over a 256 x 256 patch
(``torch.utils.flop_counter``, RAT with the label map of the first test image's top-left 256 x 256 crop:
region attention's cost depends on the regions); training milliseconds per step (the median over the run's
logged intervals, data loading included); inference milliseconds per test image (whole image, tiled as
`eval` does; the median of three passes after a warm-up).
"""

from __future__ import annotations

import json
import statistics
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rat.shared.errors import ParamError
from rat.shared.plugins import value_problem
from rat.training.checkpoint import load_checkpoint
from rat.training.config import TrainConfig, TrainError, make_config
from rat.training.data import load_full
from rat.training.inference.compare import Comparison, check_comparable, compare
from rat.training.inference.evaluate import SplitScores, evaluate_split
from rat.training.inference.restorer import Restorer, load_restorer
from rat.training.inference.tiling import model_labels, predict
from rat.training.model.registry import make_model
from rat.training.run import BEST, LAST
from rat.training.trainer import train

#: Models whose row is the baseline of the paired statistics (the first row of one of them).
RAT_MODELS = ("rat", "rat-small")
FLOP_PATCH = 256


@dataclass(frozen=True)
class Row:
    """One line of the table: its label, the registered model and its parameters."""

    label: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """The rows and the training settings every row shares (any TrainConfig setting)."""

    rows: list[Row]
    train: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


#: What a recipe holds, what a row holds, and the settings the table sets per row (not the recipe's).
RECIPE_KEYS = ("train", "models", "notes")
ROW_KEYS = ("model", "params")
PER_ROW = ("out", "model", "model_params", "resume")


def load_recipe(path: str | Path) -> Recipe:
    """A table recipe (TOML): ``[train]`` settings for every row, ``[models.<label>]`` tables in row order
    with ``model`` (default: the label) and ``params``, and an optional ``notes`` list printed under it.
    Checked whole before anything runs: unknown keys, settings and models, values of another kind than their
    defaults and the rows' model parameters are ParamError (``recipe``) naming the file and the place."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ParamError("recipe", f"{path}: {err}") from None

    def bad(where: str, reason: str) -> ParamError:
        return ParamError("recipe", f"{path}: {where}: {reason}")

    for key in doc:
        if key not in RECIPE_KEYS:
            raise bad(key, f"unknown key (a recipe holds {', '.join(RECIPE_KEYS)})")
    train, models = doc.get("train", {}), doc.get("models", {})
    if not isinstance(train, dict) or not isinstance(models, dict):
        raise bad("train" if not isinstance(train, dict) else "models", "must be a table")
    _check_train(train, bad)
    rows = [_row(label, spec, bad) for label, spec in models.items()]
    if not rows:
        raise ParamError("recipe", f"{path}: no [models.<label>] tables")
    return Recipe(rows, dict(train), list(doc.get("notes") or []))


def _check_train(train: Mapping[str, Any], bad) -> None:
    defaults = TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    for key, value in train.items():
        if key in PER_ROW:
            raise bad(f"[train] {key}", "is set per row by the table")
        if key not in known:
            raise bad(f"[train] {key}", "unknown setting (`rat-train --help` lists them)")
        want = value_problem(value, getattr(defaults, key))
        if want is not None:
            raise bad(f"[train] {key}", f"{value!r} is not {want}")


def _row(label: str, spec: Any, bad) -> Row:
    if not isinstance(spec, dict):
        raise bad(f"models.{label}", "must be a table ([models.<label>] with model and params)")
    for key in spec:
        if key not in ROW_KEYS:
            raise bad(f"[models.{label}] {key}", f"unknown key (a row holds {', '.join(ROW_KEYS)})")
    params = spec.get("params", {})
    if not isinstance(params, dict):
        raise bad(f"[models.{label}] params", "must be a table, e.g. params = { width = 16 }")
    row = Row(label, spec.get("model", label), dict(params))
    try:
        make_model(row.model, row.params)
    except ParamError as err:
        raise bad(f"[models.{label}]", err.reason) from None
    return row


def recipe_from(models: list[str]) -> Recipe:
    """A recipe of the named models with their default parameters."""
    return Recipe([Row(m, m) for m in models])


def run_settings(recipe: Recipe, row: Row, common: Mapping[str, Any], out: Path) -> dict[str, Any]:
    """The trainer's settings of one row: the recipe's, then the command's, then the row's model."""
    return {**recipe.train, **common, "out": str(out / "runs" / row.label), "model": row.model,
            "model_params": row.params, "resume": True}


def train_row(settings: dict[str, Any], say=print) -> str:
    """Train a row's run, resume it, or reuse it when complete; returns what was done."""
    out = Path(settings["out"])
    iters = int(settings.get("iters", TrainConfig.iters))
    if (out / LAST).is_file():
        step = load_checkpoint(out / LAST)["step"]
        if step >= iters:
            return f"reused ({step} steps)"
        say(f"resuming {out.name} at step {step}")
    train(settings)
    return "trained"


def train_ms_per_step(run: Path) -> float | None:
    """Median training milliseconds per step over the run's logged intervals."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    rates = [r["it_s"] for r in map(json.loads, path.read_text().splitlines())
             if r.get("kind") == "train" and r.get("it_s")]
    return 1000.0 / statistics.median(rates) if rates else None


def gflops(restorer: Restorer, labels: np.ndarray) -> float:
    """GFLOPs of one forward pass of a (1, C, 256, 256) patch (``labels``: (256, 256))."""
    model = restorer.model
    x = torch.zeros(1, restorer.group.channels, FLOP_PATCH, FLOP_PATCH)
    lab = model_labels(model, labels)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        predict(model, x[0], lab, tile=FLOP_PATCH, overlap=0)
    return counter.get_total_flops() / 1e9


def patch_labels(labels: np.ndarray) -> np.ndarray:
    """The top-left 256 x 256 of a label map (edge-padded when smaller)."""
    crop = labels[:FLOP_PATCH, :FLOP_PATCH]
    pad = ((0, FLOP_PATCH - crop.shape[0]), (0, FLOP_PATCH - crop.shape[1]))
    return np.pad(crop, pad, mode="edge")


def inference_ms(restorer: Restorer, lq: np.ndarray, labels: np.ndarray, rounds: int = 3) -> float:
    """Median milliseconds to restore one whole (normalised) image, after a warm-up pass."""
    x, lab = torch.as_tensor(lq), model_labels(restorer.model, labels)
    predict(restorer.model, x, lab, restorer.tile, restorer.overlap, autocast=restorer.autocast)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        predict(restorer.model, x, lab, restorer.tile, restorer.overlap, autocast=restorer.autocast)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


@dataclass
class Scored:
    """A row after training and scoring."""

    row: Row
    run: Path
    done: str
    restorer: Restorer
    split: SplitScores
    params: int
    gflops: float
    train_ms: float | None
    infer_ms: float


@dataclass
class Table:
    """Every row scored and the paired comparison against the baseline row."""

    rows: list[Scored]
    comparison: Comparison
    baseline: str
    notes: list[str]


def make_table(recipe: Recipe, common: Mapping[str, Any], out: str | Path, *, baseline: str | None = None,
               split: str = "test", resamples: int = 10_000, seed: int = 0, device: str = "auto",
               say=print) -> Table:
    """Train (or reuse) every row, score the split once per model and compare them, paired (module doc)."""
    out = Path(out)
    labels = [r.label for r in recipe.rows]
    if len(set(labels)) != len(labels):
        raise ParamError("models", f"row labels repeat: {', '.join(labels)}")
    for row in recipe.rows:  # every row's settings, model and parameters checked before any training
        try:
            make_config(run_settings(recipe, row, common, out))
        except ParamError as err:
            raise ParamError(err.param, f"row {row.label!r}: {err.reason}") from None
    base = baseline or next((r.label for r in recipe.rows if r.model in RAT_MODELS), labels[0])
    if base not in labels:
        raise ParamError("baseline", f"{base!r} is none of the rows ({', '.join(labels)})")
    done = {}
    for k, row in enumerate(recipe.rows, 1):
        say(f"[{k}/{len(labels)}] {row.label} ({row.model})")
        done[row.label] = train_row(run_settings(recipe, row, common, out), say)
    scored: list[Scored] = []
    for row in recipe.rows:
        run = out / "runs" / row.label
        ck = run / BEST if (run / BEST).is_file() else run / LAST
        restorer = load_restorer(ck, device=device)
        scores = evaluate_split(restorer, split=split, root=common.get("root"))
        if scored:
            check_comparable([scored[0].row.label, row.label], [scored[0].restorer, restorer],
                             [scored[0].split, scores])
        first = scores.entries[0]
        lq, _, lab = load_full(scores.store, first, scores.root, restorer.group)
        scored.append(Scored(row, run, done[row.label], restorer, scores,
                             sum(p.numel() for p in restorer.model.parameters()),
                             gflops(restorer, patch_labels(lab)), train_ms_per_step(run),
                             inference_ms(restorer, lq, lab)))
        say(f"scored {row.label}: {len(scores.scores)} {split} images")
    if not scored:
        raise TrainError("no rows")
    comparison = compare(labels, [s.split for s in scored], base, "image", resamples, seed)
    return Table(scored, comparison, base, recipe.notes)
