"""Costs per image at the users' scale: each command on synthetic datasets of N small images, and growth.

    python benchmarks/bench_scale.py [--sizes 1000 10000] [--repeats 3] [--baseline REV] [--steps train ...]
                                     [--s3]
    python benchmarks/bench_scale.py --sizes 100000 --steps train rerun --repeats 1    # the largest: ~1 hour

A dataset of N pairs of 64 x 64 8-bit PNG images (LQ = HQ plus noise, one group, seeded split) is written once
per N into a temporary folder, indexed and given a superpixel label store by this checkout. Then every step is
timed as a user runs it, as a fresh command-line process (interpreter and imports included), warm (the index,
the file-hash cache and the image cache filled by an untimed first run):

- ``masks``: a fresh store, the superpixel generator (64 x 64 images: the cost outside the generator shows;
  it is also measured directly, in one ``masks`` run in the benchmark's process with the generator timed
  inside it, and printed per N);
- ``rerun``: ``masks`` again on the complete store (everything skipped);
- ``info``, ``verify``, ``export`` (``--zip``), ``merge`` (two halves into one store);
- ``train``: ``rat-train`` to its first step (one step of the smallest model, no validation), and
  ``val``: the same with one validation pass over ``--val-limit`` 200 images.

With ``--s3`` the stores live on an S3-protocol server (moto, in a process of its own, on loopback), the data
root stays local, and for each step the requests the server answered per image are printed too (counted at
the server). ``--baseline REV`` runs the same commands with the package as it was at git revision REV as well
(from a temporary checkout, side by side in the same run): its figures and the ratio REV / this checkout are
printed.
For each step: median seconds over ``--repeats``, milliseconds per image, and between sizes the slope of
log(time) against log(N) (1 = linear; the constant start-up cost makes it smaller at small N).
"""

from __future__ import annotations

import argparse
import json
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


def outside_generator(root: Path, definition: Path, store: Path, cache: Path) -> tuple[float, float]:
    """(ms per image outside the generator, ms per image in it) of one ``masks`` run over every image into a
    fresh local store, in this process, the superpixel generator timed inside the same run: the first is
    what ``masks`` costs beyond the generator, not a difference of two noisy timings."""
    from rat.precompute.runner import run_masks
    from rat.shared.datasets import load_dataset
    from rat.shared.index import load_index
    from rat.shared.regions.superpixels import SuperpixelGenerator

    class Timed(SuperpixelGenerator):
        seconds = 0.0

        def __call__(self, rgb: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            try:
                return super().__call__(rgb)
            finally:
                Timed.seconds += time.perf_counter() - start

    os.environ["RAT_CACHE_DIR"] = str(cache)
    ds = load_dataset(definition)
    entries = load_index(ds, root)
    start = time.perf_counter()
    outcomes = run_masks(ds, entries, root, store, Timed(), progress=False)
    total = time.perf_counter() - start
    assert all(o.status == "done" for o in outcomes), "the in-process masks run failed"
    return 1000 * (total - Timed.seconds) / len(entries), 1000 * Timed.seconds / len(entries)


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


SERVER = """
import json, logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
from collections import Counter
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
app, counts = DomainDispatcherApplication(create_backend_app), Counter()
def counting(environ, start_response):
    if environ["PATH_INFO"] == "/__requests__":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(counts).encode()]
    counts[environ["REQUEST_METHOD"]] += 1
    return app(environ, start_response)
server = make_server("127.0.0.1", 0, counting, threaded=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class S3Server:
    """A moto S3 server in its own process that counts the requests it answers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        self.endpoint = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="bench")

    def requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/__requests__") as answer:
            return sum(json.loads(answer.read()).values())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


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

    def __init__(self, name: str, path: Path | None, cache: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.path, self.cache, self.env = name, path, cache, env or {}

    def run(self, tool: str, *args: object, check: bool = True) -> float:
        """Seconds of one command-line process of ``tool`` (precompute or train)."""
        module = "rat.precompute.cli" if tool == "precompute" else "rat.training.cli"
        env = {**os.environ, **self.env, "RAT_CACHE_DIR": str(self.cache), "OMP_NUM_THREADS": "1"}
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


def measure(c: Contender, step: str, at, root: Path, definition: Path, n: int) -> float:
    """One timed run of ``step`` (its untimed preparation done here too); ``at(name)``: where a store goes."""
    fresh = f"{c.name}-{step}-{time.monotonic_ns()}"
    common = ["--dataset", definition, "--root", root]
    if step == "masks":
        return c.run("precompute", "masks", *common, "--masks", at(f"{fresh}.zarr"), "--generator",
                     "superpixels", "--no-progress")
    if step == "rerun":
        return c.run("precompute", "masks", *common, "--masks", at("store.zarr"), "--generator",
                     "superpixels", "--no-progress")
    if step == "info":
        return c.run("precompute", "info", at("store.zarr"))
    if step == "verify":
        return c.run("precompute", "verify", at("store.zarr"), "--root", root, "--no-progress")
    if step == "export":
        return c.run("precompute", "export", at("store.zarr"), "--zip", root.parent / f"{fresh}.zip")
    if step == "merge":
        return c.run("precompute", "merge", at("half0.zarr"), at("half1.zarr"), "--out", at(f"{fresh}.zarr"))
    val = ["--val-limit", "200"] if step == "val" else ["--val-limit", "0"]
    return c.run("train", "--masks", at("store.zarr"), "--root", root, "--out", root.parent / fresh, *TRAIN,
                 *val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--baseline", default=None, help="git revision to compare with (e.g. HEAD~3)")
    parser.add_argument("--s3", action="store_true", help="stores on an S3-protocol server (moto)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    server = S3Server() if args.s3 else None
    env = server.env if server else {}
    contenders = [Contender("this", None, tmp / "cache-this", env)]
    if args.baseline:
        contenders.append(Contender(args.baseline, shim(args.baseline, tmp / "baseline"), tmp / "cache-base",
                                    env))
    results: dict[tuple[str, str, int], float] = {}
    requests: dict[tuple[str, str, int], int] = {}
    try:
        for n in args.sizes:
            work = tmp / f"n{n}"
            root, definition = work / "data", work / "synthetic.toml"

            def at(name: str, n: int = n, work: Path = work) -> str:
                return f"s3://bench/n{n}/{name}" if server else str(work / name)

            t0 = time.perf_counter()
            make_dataset(root, n)
            definition.write_text(DEFINITION)
            me = contenders[0]
            made = ["precompute", "masks", "--dataset", definition, "--root", root, "--generator",
                    "superpixels", "--no-progress"]
            me.run(*made, "--masks", at("store.zarr"))
            for i in (0, 1) if "merge" in args.steps else ():
                me.run(*made, "--masks", at(f"half{i}.zarr"), "--shard", f"{i}/2")
            made_in = time.perf_counter() - t0
            outside, inside = outside_generator(root, definition, work / "in-process.zarr", tmp / "cache-in")
            shutil.rmtree(work / "in-process.zarr")
            print(f"N = {n}: dataset, index and stores made in {made_in:.0f} s; in one masks run in this "
                  f"process {outside:.2f} ms/image outside the generator ({inside:.2f} ms/image in it)",
                  flush=True)
            for c in contenders:  # warm: the file-hash cache and the image cache of each contender
                measure(c, "val" if "val" in args.steps else "train", at, root, definition, n)
            for step in args.steps:
                for c in contenders:
                    times = []
                    for _ in range(args.repeats):
                        before = server.requests() if server else 0
                        times.append(measure(c, step, at, root, definition, n))
                        requests[(c.name, step, n)] = (server.requests() - before) if server else 0
                    results[(c.name, step, n)] = statistics.median(times)
                    extra = f"{requests[(c.name, step, n)] / n:8.3f} requests/image" if server else ""
                    print(f"  {c.name:>10} {step:<7} {results[(c.name, step, n)]:8.2f} s "
                          f"{1000 * results[(c.name, step, n)] / n:8.2f} ms/image {extra}", flush=True)
        report(results, requests if server else None, contenders, args.steps, args.sizes)
    finally:
        if server:
            server.stop()
        if args.baseline:
            source = tmp / "baseline" / "src"
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(source)],
                           capture_output=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def slope(sizes: list[int], times: list[float]) -> str:
    """The slope of log(time) against log(N) between the smallest and the largest size, formatted for the
    table; "-" with one size (no slope to measure)."""
    if len(sizes) < 2 or sizes[-1] == sizes[0]:
        return "-"
    return f"{math.log(times[-1] / times[0]) / math.log(sizes[-1] / sizes[0]):.2f}"


def report(results: dict, requests: dict | None, contenders: list[Contender], steps: list[str],
           sizes: list[int]) -> None:
    print("\nmedian seconds (ms per image" + (", requests per image" if requests else "")
          + ") by N; slope of log(time) against log(N)")
    width = 30 if requests else 22
    print(f"{'step':<8}{'version':>12}" + "".join(f"{f'N={n}':>{width}}" for n in sizes) + f"{'slope':>8}")
    for step in steps:
        for c in contenders:
            row = [results[(c.name, step, n)] for n in sizes]
            cells = ""
            for t, n in zip(row, sizes, strict=True):
                per = f"{1000 * t / n:7.2f}"
                if requests:
                    per += f", {requests[(c.name, step, n)] / n:5.2f}"
                cells += f"{t:10.2f} ({per})".rjust(width)
            print(f"{step:<8}{c.name:>12}{cells}{slope(sizes, row):>8}")
        if len(contenders) > 1:
            base, this = contenders[1].name, contenders[0].name
            ratios = [results[(base, step, n)] / results[(this, step, n)] for n in sizes]
            print(f"{'':<8}{'ratio':>12}" + "".join(f"{r:>{width - 1}.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
