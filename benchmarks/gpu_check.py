"""The first GPU hour: every CUDA path of this project once, in at most 9 minutes on one GPU.

    make gpu-check                            # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --reference PATH   # + the authors' code in the bench (see bench_gpu.py)
    python benchmarks/gpu_check.py --work /scratch/check --scale 2     # twice the time bounds
    python benchmarks/gpu_check.py --smoke    # the same steps on the CPU, tiny: checks this script

On a machine without registry access (a closed cluster, a lent GPU), build wheels where pip works and
carry them: ``../shared/tools/gpu-prepare`` in a checkout (or ``pip download`` of zarr, numcodecs,
dask[distributed], pydicom, nibabel, segment-anything and ``pip wheel --no-deps .``), then ``pip install
--no-index --no-deps .whl/*.whl`` there and run this script with that Python (not ``make gpu-check``, which
builds a venv from the registry).

Steps, each in processes of its own and bounded in time (the bounds add up to 9 minutes; a step past its
bound fails with "timed out"):

- ``cuda``: torch sees a CUDA device (name, memory, torch and CUDA versions, bf16, FlexAttention).
- ``data``: the sample dataset and its superpixel label store (``rat-precompute sample-data``, ``masks``).
- ``tests``: the GPU tests (``pytest -m gpu``): flex and sparse against dense, forward and backward, one
  compilation for every shape, ``--backend auto`` choosing flex after its check.
- ``bench``: ``benchmarks/bench_gpu.py`` on the paper's recipe (256 x 256, batch 8): the default training
  step against each lever, sparse and dense (and the authors' code with ``--reference``), median of 10
  steps after 3, with the share of the FLOP floor and a profile of the default step (``profile.txt``); it
  fails if a contender fails.
- ``train``: 200 steps of the paper's model (``rat``) on the sample dataset's CT group as ``rat-train`` does
  by default on CUDA (bf16, compiled blocks, batch 8 of 96 x 96 patches), validated at the end; it fails if
  ``auto`` fell back from flex to sparse, or if the restored validation images score below their LQ input.
- ``masks``: ``rat-precompute masks`` with SAM ViT-B on CUDA over the sample dataset, then
  ``benchmarks/bench_masks_gpu.py``: segment-anything's own generator against ours on one image (the same
  records required); the ViT-B has random weights, built by segment_anything and saved as a checkpoint file
  here (nothing is downloaded).

Prints one table (step, status, seconds, key figure; the end of a failed step's log above it) and exits 0
when every step passed, 1 when any failed. Without CUDA (no device visible, or a CPU-only build of torch) it
stops after ``cuda``, prints a line "no CUDA: skipped ..." with the reason and exits 3: nothing was checked.
Logs and outputs stay in the work folder (default: a new temporary folder), the SAM checkpoint excepted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Time bounds of the steps on a GPU, in seconds (9 minutes in all); --smoke multiplies them by SMOKE_SCALE.
BOUNDS = {"cuda": 20, "data": 30, "tests": 120, "bench": 220, "train": 100, "masks": 70}
NEEDS = {"train": "data", "masks": "data"}  # a step that needs another's output is skipped when that failed
SMOKE_SCALE = 4
NO_CUDA = 3  # exit status: nothing was checked on a GPU
FALLBACK = re.compile(r"region attention on \S+ \([^)]*\): flex .*; using sparse instead")


@dataclass
class Result:
    step: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    figure: str
    log: str = ""


def table(results: list[Result]) -> str:
    """The summary: one row per step."""
    rows = [f"{'step':<7}{'status':<8}{'seconds':>8}  key figure"]
    rows += [f"{r.step:<7}{r.status:<8}{r.seconds:>8.1f}  {r.figure}" for r in results]
    return "\n".join(rows)


def exit_status(results: list[Result], cuda: bool) -> int:
    """0: every step passed; 1: a step failed; 3: no CUDA, so nothing was checked."""
    if any(r.status == "FAIL" for r in results):
        return 1
    return 0 if cuda else NO_CUDA


def run(command: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
        ) -> tuple[int | None, str]:
    """Run ``command`` in its own process group, its output appended to ``log``: (exit status, or None when
    it ran past ``timeout`` and was killed; its output)."""
    start = log.stat().st_size if log.is_file() else 0
    with open(log, "a") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True, env={**os.environ, **(env or {})})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and every process it started
            proc.wait()
            code = None
    return code, log.read_text(errors="replace")[start:]


class Check:
    """The steps, sharing a work folder; each returns (status, key figure, log text)."""

    def __init__(self, work: Path | None, smoke: bool, scale: float, reference: Path | None = None) -> None:
        self.work, self.smoke, self.reference = work, smoke, reference
        self.scale = scale * (SMOKE_SCALE if smoke else 1)
        self.device = "cpu" if smoke else "cuda"
        self.timed_out: set[str] = set()

    def bound(self, step: str) -> float:
        return BOUNDS[step] * self.scale

    def command(self, step: str, command: list[str]) -> tuple[int | None, str]:
        env = {"RAT_CACHE_DIR": str(self.work / "cache"), "PYTHONUNBUFFERED": "1"}
        code, out = run(command, self.work / f"{step}.log", self.bound(step), env)
        if code is None:
            self.timed_out.add(step)
        return code, out

    def cuda(self) -> tuple[str, str, str]:
        if self.smoke:
            return "PASS", f"--smoke: on the CPU (torch {torch.__version__})", ""
        if torch.version.cuda is None:
            return "SKIP", f"no CUDA: torch {torch.__version__} is a CPU-only build", ""
        if not torch.cuda.is_available():
            return "SKIP", f"no CUDA: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU", ""
        from rat.training.model import flex

        props = torch.cuda.get_device_properties(0)
        return "PASS", (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} "
                        f"device(s); torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 "
                        f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}, FlexAttention "
                        f"{'yes' if flex.available() else 'no'}"), ""

    def data(self) -> tuple[str, str, str]:
        data, store = self.work / "data", self.work / "sample.zarr"
        code, out = self.command("data", [str(BIN / "rat-precompute"), "sample-data", str(data)])
        if code == 0:
            code, more = self.command("data", [str(BIN / "rat-precompute"), "masks", "--dataset", "sample",
                                               "--root", str(data), "--generator", "superpixels", "--masks",
                                               str(store), "--no-progress"])
            out += more
        return _status(code), f"sample dataset and superpixel store in {self.work}", out

    def tests(self) -> tuple[str, str, str]:
        code, out = self.command("tests", [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p",
                                           "no:cacheprovider"])
        counts = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out)
        figure = ", ".join(f"{n} {what}" for n, what in counts if what != "deselected") or "no summary"
        return _status(code), figure, out

    def bench(self) -> tuple[str, str, str]:
        args = ["--smoke"] if self.smoke else []
        if self.reference:
            args += ["--reference", str(self.reference)]
        args += ["--profile", str(self.work / "profile.txt")]
        code, out = self.command("bench", [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), *args])
        status, figure = bench_result(out)
        return (status if code == 0 else "FAIL"), figure, out

    def train(self) -> tuple[str, str, str]:
        out_dir = self.work / "run"
        model = (["--model", "rat-small", "--iters", "5", "--batch-size", "2", "--patch-size", "32",
                  "--precision", "fp32", "--log-every", "1"] if self.smoke else
                 ["--model", "rat", "--iters", "200", "--batch-size", "8", "--precision", "bf16",
                  "--log-every", "50"])
        code, out = self.command("train", [
            str(BIN / "rat-train"), "--masks", str(self.work / "sample.zarr"), "--root",
            str(self.work / "data"), "--group", "ct", "--out", str(out_dir), "--device", self.device,
            "--eval-every", "1000", "--save-every", "1000", "--workers", "2", "--no-progress", *model])
        records = [json.loads(line) for line in _lines(out_dir / "metrics.jsonl")]
        losses = [r["loss"] for r in records if r["kind"] == "train"]
        val = next((r for r in records if r["kind"] == "val"), None)
        fallback = FALLBACK.search(out)
        if code != 0 or not losses or val is None:
            return _status(code), "no metrics" if code == 0 else "", out
        last = [r for r in records if r["kind"] == "train"][-1]
        figure = (f"{last['step']} steps, {last['it_s']:.1f} it/s, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
                  f"val PSNR {val['psnr']:.2f} dB (LQ {val['lq_psnr']:.2f})")
        if fallback and not self.smoke:
            return "FAIL", f"auto fell back to sparse: {fallback.group(0)[:160]}", out
        finite = all(x == x and abs(x) != float("inf") for x in losses)
        if not finite:
            return "FAIL", figure + "; non-finite loss", out
        if val["psnr"] <= val["lq_psnr"] and not self.smoke:  # 5 CPU steps of a tiny model prove nothing
            return "FAIL", figure + "; below the LQ input", out
        return "PASS", figure, out

    def masks(self) -> tuple[str, str, str]:
        from segment_anything import sam_model_registry

        # random weights: never name it sam_vit_b_01ec64.pth (that name is refused unless it is the real file)
        checkpoint = self.work / "sam_vit_b_random_weights.pth"
        torch.manual_seed(0)
        torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), checkpoint)
        extra = ["--limit", "1", "--points-per-side", "4"] if self.smoke else []
        try:
            code, out = self.command("masks", [
                str(BIN / "rat-precompute"), "masks", "--dataset", "sample", "--root",
                str(self.work / "data"), "--checkpoint", str(checkpoint), "--model-type", "vit_b", "--device",
                self.device, "--masks", str(self.work / "sam.zarr"), "--no-progress", *extra])
        finally:
            checkpoint.unlink(missing_ok=True)  # 375 MB of random numbers
        speed = re.search(r"median (\d+\.\d+) s/image", out)
        done = re.search(r"(\d+) done", out)
        figure = (f"{done.group(1) if done else '?'} image(s), ViT-B (random weights), "
                  f"{speed.group(1) if speed else '?'} s/image (median)")
        if code != 0:
            return _status(code), figure, out
        code, more = self.command("masks", [sys.executable, str(REPO / "benchmarks" / "bench_masks_gpu.py"),
                                            *(["--smoke"] if self.smoke else [])])
        ratio = re.search(r"^\s+ours\s+(\d+\.\d+) s/image .* x (\d+\.\d+)$", more, re.M)
        size = re.search(r": (\d+ x \d+) RGB", more)
        same = "records identical: True" in more
        size = size.group(1) if size else "?"
        figure += (f"; one {size} image: ours {ratio.group(1)} s, x {ratio.group(2)} against "
                   f"segment-anything's generator, records {'identical' if same else 'DIFFER'}" if ratio else
                   "; side by side: no result")
        return ("PASS" if code == 0 and ratio and same else "FAIL"), figure, out + more


def bench_result(out: str) -> tuple[str, str]:
    """Status and key figure of bench_gpu.py's output: PASS when every contender ran."""
    rows = dict(re.findall(r"^(authors fp32|ours: [^\n]*?)\s{2,}(\d[\d.]*\s.*)$", out, re.M))
    failed = re.findall(r"^(authors fp32|ours: .*?)\s+failed: (.*)$", out, re.M)
    default = rows.get("ours: default", "").split()
    figure = ""
    if len(default) >= 5:
        ms, faster, peak, less, floor = default[:5]
        against = "the authors' fp32 step" if "authors fp32" in rows else "the first contender"
        figure = (f"default step {ms} ms, {peak} GB: {faster}x faster, {less}x less memory than {against}; "
                  f"{floor} % of the FLOP floor")
    figure = "; ".join([figure] * bool(figure) + [f"{n} failed: {why[:80]}" for n, why in failed])
    return ("FAIL" if failed or not default else "PASS"), figure or "no results"


def _status(code: int | None) -> str:
    return "PASS" if code == 0 else "FAIL"


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step's time bound")
    parser.add_argument("--smoke", action="store_true", help="the same steps on the CPU, tiny")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a checkout of the authors' code for the bench step (see bench_gpu.py)")
    args = parser.parse_args(argv)
    check = Check(args.work, args.smoke, args.scale, args.reference)
    results: list[Result] = []
    cuda = True
    for step in BOUNDS:
        if step == "data" and cuda:  # the first step that writes
            check.work = (args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))).resolve()
            check.work.mkdir(parents=True, exist_ok=True)
        if not cuda:
            results.append(Result(step, "SKIP", 0.0, "needs CUDA"))
            continue
        needed = next((r for r in results if r.step == NEEDS.get(step)), None)
        if needed is not None and needed.status != "PASS":
            results.append(Result(step, "SKIP", 0.0, f"needs the {needed.step} step"))
            continue
        print(f"== {step} (at most {check.bound(step):.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            status, figure, log = getattr(check, step)()
        except Exception as err:  # noqa: BLE001 - a step that breaks is a failed step, the others still run
            status, figure, log = "FAIL", f"{type(err).__name__}: {err}"[:200], ""
        seconds = time.perf_counter() - t0
        if step in check.timed_out:
            status, figure = "FAIL", f"timed out after {check.bound(step):.0f} s; {figure}"
        results.append(Result(step, status, seconds, figure, log))
        cuda = not (step == "cuda" and status == "SKIP")
    for r in results:
        if r.status == "FAIL" and r.log:
            print(f"\n-- end of the {r.step} log ({check.work / (r.step + '.log')}):")
            print("\n".join(r.log.splitlines()[-25:]))
    print()
    print(table(results))
    if not cuda:
        reason = results[0].figure.removeprefix("no CUDA: ")
        print(f"no CUDA: skipped {', '.join(r.step for r in results[1:])} ({reason}); exit status {NO_CUDA}")
    else:
        print(f"work folder: {check.work}")
    return exit_status(results, cuda)


if __name__ == "__main__":
    sys.exit(main())
