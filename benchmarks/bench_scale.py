"""Costs per image at the users' scale: each command on synthetic datasets of N small images, and growth.

    python benchmarks/bench_scale.py [--sizes 1000 10000] [--repeats 3] [--baseline REV] [--steps train ...]

A dataset of N pairs of 64 x 64 8-bit PNG images (LQ = HQ plus noise, one group, seeded split) is written once
per N into a temporary folder, indexed and given a superpixel label store by this checkout. Then every step is
timed as a user runs it, as a fresh command-line process (interpreter and imports included), warm (the index,
the file-hash cache and the image cache filled by an untimed first run):

- ``masks``: a fresh store, the superpixel generator (64 x 64 images: the cost outside the generator shows);
- ``rerun``: ``masks`` again on the complete store (everything skipped);
- ``info``, ``verify``, ``export`` (``--zip``), ``merge`` (two halves into one store);
- ``train``: ``rat-train`` to its first step (one step of the smallest model, no validation), and
  ``val``: the same with one validation pass over ``--val-limit`` 200 images.

``--baseline REV`` runs the same commands with the package as it was at git revision REV as well (from a
temporary checkout, side by side in the same run): its figures and the ratio REV / this checkout are printed.
For each step: median seconds over ``--repeats``, milliseconds per image, and between sizes the slope of
log(time) against log(N) (1 = linear; the constant start-up cost makes it smaller at small N).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STEPS = ("masks", "rerun", "info", "verify", "export", "merge", "train", "val")
DEFINITION = """
name = "synthetic"
description = "N pairs of 64 x 64 gray PNG images (benchmarks/bench_scale.py)"
[groups.g]
modality = "CT"
channels = 1
hq = ["hq/{id}.png"]
lq = ["lq/{id}.png"]
norm_low = 0
norm_high = 255
sam_window = { kind = "none" }
patch_size = 64
split = { rule = "seeded", unit = "id", test_fraction = 0.1, seed = 0 }
"""
TRAIN = ["--model", "rat-small", "--width", "8", "--patch-size", "64", "--batch-size", "1", "--iters", "1",
         "--workers", "0", "--log-every", "1", "--eval-every", "1", "--save-every", "1", "--no-progress"]


def make_dataset(root: Path, n: int) -> None:
    """N pairs of 64 x 64 PNGs: smooth random HQ, LQ = HQ plus noise (same bytes for the same N)."""
    rng = np.random.default_rng(n)
    (root / "hq").mkdir(parents=True, exist_ok=True)
    (root / "lq").mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (n, 8, 8)).astype(np.uint8)
    for i in range(n):
        hq = Image.fromarray(base[i]).resize((64, 64), Image.Resampling.BICUBIC)
        lq = np.clip(np.asarray(hq, np.int16) + rng.integers(-12, 13, (64, 64)), 0, 255).astype(np.uint8)
        hq.save(root / "hq" / f"img{i:06d}.png")
        Image.fromarray(lq).save(root / "lq" / f"img{i:06d}.png")


def shim(rev: str, where: Path) -> Path:
    """A folder that imports as the ``rat`` package of git revision ``rev`` (put it first on PYTHONPATH)."""
    source = where / "src"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(source), rev], check=True,
                   capture_output=True)
    ns = where / "ns" / "rat"
    ns.mkdir(parents=True)
    for folder in ("precompute", "training", "shared", "data_manifests"):
        (ns / folder).symlink_to(source / folder)
    return where / "ns"


class Contender:
    """A version of the package: this checkout (``path`` None) or a shim folder of another revision."""

    def __init__(self, name: str, path: Path | None, cache: Path) -> None:
        self.name, self.path, self.cache = name, path, cache

    def run(self, tool: str, *args: object, check: bool = True) -> float:
        """Seconds of one command-line process of ``tool`` (precompute or train)."""
        module = "rat.precompute.cli" if tool == "precompute" else "rat.training.cli"
        env = {**os.environ, "RAT_CACHE_DIR": str(self.cache), "OMP_NUM_THREADS": "1"}
        if self.path is not None:
            env["PYTHONPATH"] = f"{self.path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        command = [sys.executable, "-c", f"from {module} import main; main()", *map(str, args)]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if check and done.returncode != 0:
            command_line = " ".join(map(str, args))
            raise RuntimeError(f"{self.name}: {tool} {command_line} failed:\n{done.stdout[-2000:]}"
                               f"{done.stderr[-3000:]}")
        return seconds


def measure(c: Contender, step: str, work: Path, root: Path, definition: Path, store: Path, n: int) -> float:
    """One timed run of ``step`` (its untimed preparation done here too)."""
    fresh = work / f"{c.name}-{step}-{time.monotonic_ns()}"
    common = ["--dataset", definition, "--root", root]
    if step == "masks":
        return c.run("precompute", "masks", *common, "--masks", fresh / "s.zarr", "--generator",
                     "superpixels", "--no-progress")
    if step == "rerun":
        return c.run("precompute", "masks", *common, "--masks", store, "--generator", "superpixels",
                     "--no-progress")
    if step == "info":
        return c.run("precompute", "info", store)
    if step == "verify":
        return c.run("precompute", "verify", store, "--root", root, "--no-progress")
    if step == "export":
        return c.run("precompute", "export", store, "--zip", fresh / "s.zip")
    if step == "merge":
        halves = [work / f"half{i}.zarr" for i in (0, 1)]
        return c.run("precompute", "merge", *halves, "--out", fresh / "m.zarr")
    val = ["--val-limit", "200"] if step == "val" else ["--val-limit", "0"]
    return c.run("train", "--masks", store, "--root", root, "--out", fresh, *TRAIN, *val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--baseline", default=None, help="git revision to compare with (e.g. HEAD~3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    contenders = [Contender("this", None, tmp / "cache-this")]
    if args.baseline:
        contenders.append(Contender(args.baseline, shim(args.baseline, tmp / "baseline"), tmp / "cache-base"))
    results: dict[tuple[str, str, int], float] = {}
    try:
        for n in args.sizes:
            work = tmp / f"n{n}"
            root, definition, store = work / "data", work / "synthetic.toml", work / "store.zarr"
            t0 = time.perf_counter()
            make_dataset(root, n)
            definition.write_text(DEFINITION)
            me = contenders[0]
            me.run("precompute", "masks", "--dataset", definition, "--root", root, "--masks", store,
                   "--generator", "superpixels", "--no-progress")
            for i in (0, 1):
                me.run("precompute", "masks", "--dataset", definition, "--root", root, "--masks",
                       work / f"half{i}.zarr", "--generator", "superpixels", "--shard", f"{i}/2",
                       "--no-progress")
            print(f"N = {n}: dataset, index and stores made in {time.perf_counter() - t0:.0f} s", flush=True)
            for c in contenders:  # warm: the file-hash cache and the image cache of each contender
                measure(c, "val" if "val" in args.steps else "train", work, root, definition, store, n)
            for step in args.steps:
                for c in contenders:
                    times = [measure(c, step, work, root, definition, store, n) for _ in range(args.repeats)]
                    results[(c.name, step, n)] = statistics.median(times)
                    print(f"  {c.name:>10} {step:<7} {results[(c.name, step, n)]:8.2f} s "
                          f"{1000 * results[(c.name, step, n)] / n:8.2f} ms/image", flush=True)
        report(results, contenders, args.steps, args.sizes)
    finally:
        if args.baseline:
            source = tmp / "baseline" / "src"
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)],
                           capture_output=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, contenders: list[Contender], steps: list[str], sizes: list[int]) -> None:
    print("\nmedian seconds (ms per image) by N; slope of log(time) against log(N)")
    header = f"{'step':<8}{'version':>12}" + "".join(f"{f'N={n}':>22}" for n in sizes) + f"{'slope':>8}"
    print(header)
    for step in steps:
        for c in contenders:
            row = [results[(c.name, step, n)] for n in sizes]
            cells = "".join(f"{t:10.2f} ({1000 * t / n:7.2f})" for t, n in zip(row, sizes, strict=True))
            slope = math.log(row[-1] / row[0]) / math.log(sizes[-1] / sizes[0]) if row[1:] else math.nan
            print(f"{step:<8}{c.name:>12}{cells}{slope:8.2f}")
        if len(contenders) > 1:
            base, this = contenders[1].name, contenders[0].name
            ratios = [results[(base, step, n)] / results[(this, step, n)] for n in sizes]
            print(f"{'':<8}{'ratio':>12}" + "".join(f"{r:>21.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
