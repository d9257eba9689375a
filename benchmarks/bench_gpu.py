"""One RAT training step on a GPU, side by side: the authors' public code, ours by default, and each lever.

    python benchmarks/bench_gpu.py                                   # ours: default, levers, sparse, dense
    python benchmarks/bench_gpu.py --reference PATH                  # + the authors' code (PATH: below)
    python benchmarks/bench_gpu.py --profile prof.txt                # + where the default step's time goes
    python benchmarks/bench_gpu.py --smoke                           # this script's whole path on the CPU

The step is the paper's recipe: a batch of 8 patches of 256 x 256, forward, loss, backward and an Adam step
(``--size``, ``--batch`` change it). Label maps: the 8 rotations and flips of a Felzenszwalb segmentation of
scikit-image's ``camera.png`` at 256 x 256 (10-40 regions per crop, the same range as real SAM ViT-B maps:
the authors' example map is not available offline); the images: that photograph and a noisy copy.

Contenders, each in a fresh process, median of ``--steps`` steps after ``--warmup`` (compilation happens in
the warm-up):

- ``authors fp32`` (with ``--reference PATH``, a checkout of github Yaziwel/Region-Attention-Transformer-
  for-Medical-Image-Restoration that the user fetched; never copied here): their ``Model_RAT.RAT`` with their
  ``FocalRegionLoss`` (beta 1e-3), float32 as their ``main_RAT.py`` trains, loaded with our model's weights
  (the state dicts are the same), so outputs can be compared. The baseline of the ratios when given.
- ``ours: default``: the model exactly as ``rat-train`` builds it on CUDA (TrainConfig's defaults: backend
  ``auto``, memory policy, ``--compile auto``; bf16 autocast), with our focal region loss.
- the levers, each one change from the default: ``flex eager`` (no compiled blocks), ``memory none`` /
  ``memory selective`` (the other policy), and the other backends ``sparse`` and ``dense`` (eager).

Printed: median ms per step, x faster than the baseline, peak CUDA memory (torch.cuda.max_memory_allocated
over the timed steps), x less, the share of the FLOP floor (below), and max |output - baseline's output|.
FLOP floor: the step's FLOPs counted by torch.utils.flop_counter (our model, nothing recomputed; the
attention kernels replaced by the within-region attention's own count, 12 E d per layer and head; depthwise
weight gradients counted as depthwise), at the bf16 matrix rate of an 8192^3 product measured in the same
run. ``--profile PATH`` writes the default step's profile (CUDA kernels by time, the host's share) to PATH
and prints its top rows. Without CUDA it prints "skipped: no CUDA" and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import (  # noqa: E402
    _conv_backward_flop,
    _dihedral,
    describe_map,
    photo_and_labels,
    within_region_entries,
)

GB = 1e9
#: Seconds a contender's process may take (compiling included) before it is reported as failed.
TIMEOUT = 300


def contenders(reference: str | None) -> list[dict]:
    from rat.training.config import TrainConfig

    cfg = TrainConfig()
    default = {"backend": cfg.backend, "memory": cfg.memory, "compile": cfg.compile}
    other = "none" if cfg.memory != "none" else "selective"
    names = [({"kind": "authors", "amp": False, "reference": reference}, "authors fp32")] if reference else []
    names += [
        ({**default}, "ours: default"),
        ({**default, "compile": "off"}, "ours: eager (no compile)"),
        ({**default, "memory": other}, f"ours: memory {other}"),
        ({**default, "backend": "sparse", "compile": "off"}, "ours: sparse, eager"),
        ({**default, "backend": "dense", "compile": "off"}, "ours: dense, eager"),
    ]
    return [{"kind": "ours", "amp": True, **spec, "name": name} for spec, name in names]


# ----------------------------------------------------------------------------- worker


def _inputs(spec: dict, device: torch.device):
    target = _dihedral(np.load(spec["image"]), spec["batch"])[:, None]
    noisy = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    labels = _dihedral(np.load(spec["labels"]), spec["batch"])
    return noisy.to(device), target.to(device), labels.to(device)


def _ours(spec: dict, device: torch.device):
    from rat.training.loss import focal_region_loss
    from rat.training.model.compiling import compile_blocks
    from rat.training.model.network import build_model

    torch.manual_seed(0)
    model = build_model("rat", backend=spec.get("backend", "auto"), memory=spec.get("memory", "selective"))
    model.to(device)
    if spec.get("compile") == "on" or (spec.get("compile") == "auto" and device.type == "cuda"):
        compile_blocks(model)
    noisy, target, labels = _inputs(spec, device)

    def loss():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["amp"]):
            out = model(noisy, labels)
        return focal_region_loss(out.float(), target, labels), out

    return model, loss


def _authors(spec: dict, device: torch.device):
    from rat.training.model.network import build_model

    sys.path.insert(0, spec["reference"])
    from losses import FocalRegionLoss  # the authors' files, from the user's checkout
    from Model_RAT import RAT

    model = RAT(loss_fun=FocalRegionLoss(beta=1e-3))
    torch.manual_seed(0)
    model.load_state_dict(build_model("rat").state_dict())  # our weights (as _ours seeds them): comparable
    model.to(device)
    noisy, target, labels = _inputs(spec, device)
    mask = labels.float()  # as their training script passes it

    def loss():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["amp"]):
            out = model(noisy, mask)
            return model.loss_fun(out, target, mask).mean(), out

    return model, loss


def _timed(spec: dict) -> dict:
    device = torch.device(spec["device"])
    model, loss = (_authors if spec["kind"] == "authors" else _ours)(spec, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    cuda = device.type == "cuda"

    def step():
        optimizer.zero_grad(set_to_none=True)
        value, out = loss()
        value.backward()
        optimizer.step()
        return out

    with torch.no_grad():
        first = loss()[1].detach().float().cpu()  # before any step: the same weights for every contender
    for _ in range(spec["warmup"]):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if spec.get("profile"):
        try:
            _profile(step, spec["profile"], cuda)
        except Exception as err:  # noqa: BLE001 - the timings above stand without the profile
            Path(spec["profile"]).write_text(f"profile failed: {type(err).__name__}: {err}\n")
    torch.save(first, spec["save"])
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return {"time": statistics.median(times), "times": times, "peak": peak}


def _profile(step, path: str, cuda: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / 3
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events) / 3
    head = (f"profile of 3 steps: {1e3 * wall:.1f} ms per step (profiled), kernels busy "
            f"{device_us / 1e3:.1f} ms per step ({100 * device_us / 1e6 / wall:.0f} % of it)\n")
    Path(path).write_text(head + events.table(sort_by=key, row_limit=40, max_name_column_width=70))


def _floor(spec: dict) -> dict:
    """FLOPs of our step (memory none, sparse, eager: nothing recomputed) without the attention kernels, the
    within-region attention's FLOPs, and the bf16 (GPU) or fp32 (CPU) matmul rate of this device."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(spec["device"])
    model, loss = _ours({**spec, "backend": "sparse", "memory": "none", "compile": "off",
                         "amp": device.type == "cuda"}, device)
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        loss()[0].backward()
    counts = counter.get_flop_counts()["Global"]
    kernels = sum(n for op, n in counts.items() if "scaled_dot_product" in str(op))
    outside = counter.get_total_flops() - kernels
    labels = _dihedral(np.load(spec["labels"]), spec["batch"])
    entries = within_region_entries(labels[:, ::4, ::4].reshape(spec["batch"], -1))
    heads, d, layers = 8, 32, 12
    attention = 12 * entries * d * heads * layers  # 4 E d per head forward, 8 E d backward
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(12):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    rate = 2 * n**3 / statistics.median(times[2:])
    return {"outside": outside, "attention": attention, "rate": rate}


def worker(spec: dict) -> dict:
    return _floor(spec) if spec["kind"] == "floor" else _timed(spec)


# ----------------------------------------------------------------------------- parent


def spawn(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if done.returncode != 0:
        lines = [x for x in done.stderr.splitlines() if x.strip()] or [f"exit status {done.returncode}"]
        return {"error": lines[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", help="a checkout of the authors' code (holds Model_RAT.py, losses.py)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per contender (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--only", help="comma-separated contender names to run (default: all)")
    parser.add_argument("--profile", help="write the default step's profile here")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per contender")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of this script's whole path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.size, args.batch, args.steps, args.warmup = 64, 2, 1, 1
    elif not torch.cuda.is_available():
        print("skipped: no CUDA")
        return
    if args.reference and not (Path(args.reference) / "Model_RAT.py").is_file():
        parser.error(f"--reference {args.reference}: no Model_RAT.py there")
    where = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {where}; batch {args.batch} of {args.size} x {args.size}, "
          f"{describe_map('camera', args.size)}; median of {args.steps} steps after {args.warmup}",
          flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    image, labels = photo_and_labels("camera", args.size)
    np.save(tmp / "image.npy", image)
    np.save(tmp / "labels.npy", labels)
    base = {"device": device, "batch": args.batch, "image": str(tmp / "image.npy"),
            "labels": str(tmp / "labels.npy"), "warmup": args.warmup, "steps": args.steps}
    entries = contenders(str(Path(args.reference).resolve()) if args.reference else None)
    if args.only:
        entries = [e for e in entries if e["name"] in args.only.split(",")]
    results = {}
    for e in entries:
        profile = args.profile if (args.profile and e["name"] == "ours: default") else None
        spec = {**base, **e, "save": str(tmp / f"{len(results)}.pt"), "profile": profile}
        results[e["name"]] = {**spawn(spec, args.timeout), "save": spec["save"]}
        r = results[e["name"]]
        print(f"  {e['name']}: " + (r["error"] if "error" in r else
                                    f"{1e3 * r['time']:.1f} ms, {r['peak'] / GB:.2f} GB"), flush=True)
    floor = spawn({**base, "kind": "floor"}, args.timeout)
    report(results, floor)
    if args.profile and Path(args.profile).is_file():
        print(f"\n{args.profile} (top rows):")
        print("\n".join(Path(args.profile).read_text().splitlines()[:22]))


def report(results: dict[str, dict], floor: dict) -> None:
    ok = {name: r for name, r in results.items() if "error" not in r}
    if not ok:
        return
    baseline = next(iter(ok))
    t0, p0 = ok[baseline]["time"], ok[baseline]["peak"]
    ref = torch.load(ok[baseline]["save"])
    floor_s = None
    if "error" not in floor:
        flops = floor["outside"] + floor["attention"]
        floor_s = flops / floor["rate"]
        print(f"\nfloor: {floor['outside'] / 1e12:.2f} TFLOP outside attention + "
              f"{floor['attention'] / 1e12:.2f} TFLOP within regions at {floor['rate'] / 1e12:.3g} TFLOP/s "
              "(matmul measured here) = "
              f"{1e3 * floor_s:.2f} ms")
    else:
        print(f"\nfloor: failed ({floor['error']})")
    print(f"\n{'contender':<30}{'ms/step':>9}{'x faster':>10}{'peak GB':>9}{'x less':>8}{'floor %':>9}"
          f"{'max|out-base|':>15}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<30} failed: {r['error']}")
            continue
        diff = (torch.load(r["save"]) - ref).abs().max().item()
        share = f"{100 * floor_s / r['time']:>9.1f}" if floor_s else f"{'-':>9}"
        less = f"{p0 / r['peak']:>8.1f}" if r["peak"] else f"{'-':>8}"
        print(f"{name:<30}{1e3 * r['time']:>9.1f}{t0 / r['time']:>10.2f}{r['peak'] / GB:>9.2f}{less}{share}"
              f"{diff:>15.2e}")
    print(f"(x faster, x less: against {baseline}; spread: " + "; ".join(
        f"{n} {1e3 * min(r['times']):.0f}-{1e3 * max(r['times']):.0f} ms" for n, r in ok.items()) + ")")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
