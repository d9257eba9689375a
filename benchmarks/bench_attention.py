"""Region attention backends against the paper's dense formulation: time and peak memory.

    python benchmarks/bench_attention.py                      # CPU, float32, all cases
    python benchmarks/bench_attention.py --cases layer256 --repeats 5 --threads 1
    python benchmarks/bench_attention.py --device cuda --dtype bfloat16

Cases: ``layer256`` / ``layer512``: one R-MSA layer (1x1-conv QKV, attention, projection; 256
channels, 8 heads) at the latent of a 256 / 512 px input, forward + backward, region plan (or
dense mask) built inside the timing. ``step256``: one training step of the default RAT at
256 x 256, batch 1: forward, focal region loss, backward.

Every run is a fresh subprocess, contenders alternate round by round (so load drift on a shared
machine hits them alike), and the medians over rounds are printed with ratios to the dense
baseline. All contenders use the same seeded weights and inputs; the max |difference| of their
outputs and input gradients to the dense ones is printed. Time: one timed run after warm-up, in
a process with default settings. CPU memory: a separate process per round, with glibc's mmap
threshold fixed at 64 KiB so that freed tensors leave RSS (the same for every contender); its
ru_maxrss ("peak") and the increase over its RSS just before the run ("step"). CUDA memory:
torch.cuda.max_memory_allocated. Label maps: Felzenszwalb segmentations of scikit-image's
sample photographs, tuned to 10-40 regions per 256 x 256 crop (the density of SAM label maps).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# skimage sample image and Felzenszwalb scale per input size, chosen for 10-40 regions per
# 256 x 256 crop and 15-30 % of the dense attention entries (real SAM maps: 14-34 %)
MAPS = {"camera": ("camera.png", {256: 800, 512: 400}),
        "coffee": ("coffee.png", {256: 800, 512: 400})}
CASES = {
    "layer256": ("layer", 256),
    "layer512": ("layer", 512),
    "step256": ("step", 256),
}


# ----------------------------------------------------------------------------- inputs


def photo_and_labels(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey (size, size) float image in [0, 1] and a Felzenszwalb label map of it (int64)."""
    import skimage
    from skimage import color, io, segmentation, transform, util

    file, scales = MAPS[name]
    img = util.img_as_float(io.imread(Path(skimage.__file__).parent / "data" / file))
    img = transform.resize(img, (size, size), anti_aliasing=True)
    labels = segmentation.felzenszwalb(img, scale=scales[size], sigma=0.8,
                                       min_size=int(50 * (size / 256) ** 2))
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    return img.astype(np.float32), labels.astype(np.int64)


def describe_map(name: str, size: int) -> str:
    from rat.training.attention import needed_fraction

    _, labels = photo_and_labels(name, size)
    tokens = torch.from_numpy(labels[::4, ::4].copy()).reshape(1, -1)
    crops = [len(np.unique(labels[i:i + 256, j:j + 256]))
             for i in range(0, size, 256) for j in range(0, size, 256)]
    return (f"map '{name}' {size}x{size}: {labels.max() + 1} regions "
            f"({min(crops)}-{max(crops)} per 256x256 crop), "
            f"{needed_fraction(tokens):.1%} of dense attention entries needed")


# ----------------------------------------------------------------------------- worker


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _layer_run(spec: dict, device: torch.device, dtype: torch.dtype):
    from rat.training.attention import (
        RegionAttention,
        dense_region_attention,
        plan_region_attention,
    )

    size, backend = spec["size"], spec["backend"]
    torch.manual_seed(0)
    layer = RegionAttention(256, heads=8).to(device, dtype)
    labels = torch.from_numpy(np.load(spec["labels"])).to(device)
    x = torch.randn(1, 256, size // 4, size // 4, generator=torch.Generator().manual_seed(1))
    x = x.to(device, dtype).requires_grad_()
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    head_group = spec.get("head_group", 8)

    def run():
        tokens = labels[::4, ::4].reshape(1, -1)
        plan = plan_region_attention(tokens, backend)
        if head_group == 8:
            out = layer(x, plan)
        else:  # the same dense formula, a few heads at a time (peak memory of 8 at once: >24 GB)
            b, c, h, w = x.shape
            q, k, v = (t.reshape(b, 8, c // 8, h * w).transpose(-1, -2)
                       for t in layer.qkv(x).chunk(3, dim=1))
            parts = [dense_region_attention(q[:, i:i + head_group], k[:, i:i + head_group],
                                            v[:, i:i + head_group], plan.bias, layer.scale)
                     for i in range(0, 8, head_group)]
            out = torch.cat(parts, dim=1).transpose(-1, -2).reshape(b, c, h, w)
            out = layer.project_out(out)
        (out * upstream).sum().backward()
        return out.detach(), x.grad

    return run


def _step_run(spec: dict, device: torch.device, dtype: torch.dtype):
    from rat.training.loss import focal_region_loss
    from rat.training.model import RAT

    torch.manual_seed(0)
    model = RAT(backend=spec["backend"], checkpoint=spec.get("checkpoint", False))
    model = model.to(device, dtype)
    target = torch.from_numpy(np.load(spec["image"]))[None, None]
    noisy = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    target, noisy = target.to(device, dtype), noisy.to(device, dtype)
    labels = torch.from_numpy(np.load(spec["labels"]))[None].to(device)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(noisy, labels)
        focal_region_loss(out, target, labels).backward()
        # lambda_ra's gradient depends on the region attention output (zero-initialised scale)
        return out.detach(), model.middle_blks[0].layers[0].lambda_ra.grad

    return run


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    make = _layer_run if spec["kind"] == "layer" else _step_run
    run = make(spec, device, dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(spec["warmup"] + 1):
        if i == spec["warmup"]:  # the timed run
            base = _rss_bytes()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
        sync()
        start = time.perf_counter()
        out, grad = run()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save({"out": out.float().cpu(), "grad": grad.float().cpu()}, spec["save"])
    return {"time": times[-1], "peak": peak, "base": base}


# ----------------------------------------------------------------------------- parent


def contenders(kind: str, size: int, device: str, extra: bool) -> list[dict]:
    dense = {"name": "dense", "backend": "dense"}
    if kind == "layer" and size > 256 and device == "cpu":
        dense = {"name": "dense (heads 1 by 1)", "backend": "dense", "head_group": 1}
    found = [dense, {"name": "sparse", "backend": "sparse"}]
    if device == "cuda":
        found.append({"name": "flex", "backend": "flex"})
    if kind == "step":
        found.append({"name": "sparse + checkpoint", "backend": "sparse", "checkpoint": True})
        if extra:
            found.insert(1, {"name": "dense + checkpoint", "backend": "dense",
                             "checkpoint": True})
    return found


def spawn(spec: dict) -> dict:
    """Time in one worker process, CPU memory in another (see the module docstring)."""

    def run(spec: dict, env: dict) -> dict:
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["killed"])[-1])
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        timed = run(spec, {})
        if spec["device"] == "cuda":
            return timed
        memory = run({**spec, "warmup": 0}, {"MALLOC_MMAP_THRESHOLD_": "65536"})
    except RuntimeError as err:
        return {"error": str(err)}
    return {**memory, "time": timed["time"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="layer256,layer512,step256")
    parser.add_argument("--maps", default="camera,coffee")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (processes per contender)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed one")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--extra", action="store_true", help="also dense + checkpoint (slow)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, "
          f"{args.threads} threads, {args.repeats} rounds, {args.warmup} warm-up run(s)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_attention_"))
    for case in args.cases.split(","):
        kind, size = CASES[case]
        for map_name in args.maps.split(","):
            print(f"\n== {case}: {describe_map(map_name, size)}")
            image, labels = photo_and_labels(map_name, size)  # workers load them: no skimage
            np.save(tmp / "image.npy", image)
            np.save(tmp / "labels.npy", labels)
            entries = contenders(kind, size, args.device, args.extra)
            results: dict[str, list[dict]] = {e["name"]: [] for e in entries}
            for _ in range(args.repeats):
                for e in entries:
                    save = tmp / f"{case}_{map_name}_{len(results[e['name']])}_{e['name']}.pt"
                    spec = {**e, "kind": kind, "size": size, "map": map_name,
                            "threads": args.threads, "device": args.device,
                            "dtype": args.dtype, "warmup": args.warmup, "save": str(save),
                            "image": str(tmp / "image.npy"), "labels": str(tmp / "labels.npy")}
                    results[e["name"]].append({**spawn(spec), "save": save})
            report(results, entries[0]["name"], args.device)


def report(results: dict[str, list[dict]], baseline: str, device: str) -> None:
    mem = "peak alloc" if device == "cuda" else "peak RSS"
    print(f"{'contender':<24}{'median s':>10}{'x faster':>10}{mem + ' GB':>15}{'x less':>8}"
          f"{'step GB':>9}{'x less':>8}{'max|out-dense|':>16}{'max|grad-dense|':>17}")
    summary = {}
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"{name:<24} failed: {runs[0]['error']}")
            continue
        summary[name] = (statistics.median(r["time"] for r in ok),
                         statistics.median(r["peak"] for r in ok),
                         statistics.median(r["peak"] - r["base"] for r in ok), ok[0]["save"])
    if baseline not in summary:
        return
    t0, p0, d0, ref_file = summary[baseline]
    ref = torch.load(ref_file)
    for name, (t, p, d, file) in summary.items():
        other = torch.load(file)
        dout = (other["out"] - ref["out"]).abs().max().item()
        dgrad = (other["grad"] - ref["grad"]).abs().max().item()
        print(f"{name:<24}{t:>10.3f}{t0 / t:>10.2f}{p / 1e9:>15.3f}{p0 / p:>8.2f}"
              f"{d / 1e9:>9.3f}{d0 / d:>8.2f}{dout:>16.2e}{dgrad:>17.2e}")


if __name__ == "__main__":
    main()
