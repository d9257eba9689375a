"""A RAT training step against the authors' formulation: time, peak memory, fraction of the floor.

    python benchmarks/bench_attention.py                        # CPU, float32, step256 + memory
    python benchmarks/bench_attention.py --cases step256 --repeats 5 --maps camera

Cases. ``step256``: one training step at 256 x 256, batch 1: forward, focal region loss,
backward. Contenders: the authors' formulation (baseline: the paper's dense masked R-MSA with a
(B, 1, N, N) additive -1000 mask, explicit matmul-softmax attention, plain autograd LayerNorm2d,
their layer structure, nothing recomputed; written here from the paper's equations, same
weights), our model exactly as ``build_model("rat")`` returns it (default memory policy
``selective``) and our other memory policies. ``batch8`` / ``ct512``: our default model at the
paper's recipe (batch 8 at 256 x 256) and on a whole 512 x 512 slice (batch 1): peak memory, with
the dense formulation's attention memory computed on paper (the batch: the 8 rotations and
flips of one image and its label map). The backends on a GPU: bench_gpu.py.

Every run is a fresh subprocess; contenders alternate round by round (load drift on a shared
machine hits them alike); medians over rounds are printed with ratios to the baseline and the
max |difference| of the output and two gradients (``intro.weight``; the first layer's
``lambda_ra``, which depends on region attention) to the baseline's. Time: the run after one
warm-up run. CPU memory: a separate process per round with glibc's mmap threshold at
64 KiB (freed tensors leave RSS, the same for every contender); its ru_maxrss ("peak", which
includes about 0.8 GB of PyTorch itself) and the increase over its RSS just before the step
("step"). CUDA: torch.cuda.max_memory_allocated. Floor: FLOPs counted by
torch.utils.flop_counter over our step (nothing recomputed; region attention kernels excluded)
plus the plan's attention FLOPs, 12 x E x d x heads per R-MSA layer (E within-region query-key
pairs: 4 E d per head forward, 8 E d backward), over a float32 2048^3 matmul peak measured in the
same run; "floor %" = floor time / median time. PyTorch's counter counts the weight gradient of
a depthwise convolution as if it were dense (about 150 GFLOP too many here): "fixed %" uses the
corrected count.

Label maps: the authors' example SAM label map is not available offline; Felzenszwalb
segmentations of scikit-image's sample photographs stand in, tuned to 10-40 regions per 256 x 256
crop and 15-30 % of the dense attention entries (real SAM maps: 10-21 regions, 14-34 %).
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
import torch.nn.functional as F

# skimage sample image and Felzenszwalb scale per input size
MAPS = {"camera": ("camera.png", {64: 800, 256: 800, 512: 400}),
        "coffee": ("coffee.png", {64: 800, 256: 800, 512: 400})}
CASES = {"step256": ("step", 256, 1), "batch8": ("memory", 256, 8), "ct512": ("memory", 512, 1)}
GB = 1e9


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


def within_region_entries(labels: torch.Tensor) -> int:
    """Number of (query, key) pairs in the same region over the batch; labels (B, N)."""
    from rat.training.model.attention_plan import region_ids

    _, counts = torch.unique(region_ids(labels), return_counts=True)
    return int((counts.long() ** 2).sum())


def needed_fraction(labels: torch.Tensor) -> float:
    """Fraction of the B * N^2 dense attention entries that lie within a region; labels (B, N)."""
    b, n = labels.shape
    return within_region_entries(labels) / (b * n * n)


def describe_map(name: str, size: int) -> str:
    _, labels = photo_and_labels(name, size)
    tokens = torch.from_numpy(labels[::4, ::4].copy()).reshape(1, -1)
    crops = [len(np.unique(labels[i:i + 256, j:j + 256]))
             for i in range(0, size, 256) for j in range(0, size, 256)]
    return (f"map '{name}' {size}x{size}: {labels.max() + 1} regions "
            f"({min(crops)}-{max(crops)} per 256x256 crop), "
            f"{needed_fraction(tokens):.1%} of dense attention entries needed")


# ----------------------------------------------------------------------------- the authors' formulation


def _ln(x, m, eps=1e-6):  # channel LayerNorm2d as plain autograd ops (saves its inputs)
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    return m.weight.view(1, -1, 1, 1) * ((x - mu) / (var + eps).sqrt()) + m.bias.view(1, -1, 1, 1)


def _attend(q, k, v, scale, mask=None):  # explicit matmul-softmax attention
    attn = (q @ k.transpose(-2, -1)) * scale
    return (attn if mask is None else attn + mask).softmax(dim=-1) @ v


def _naf(blk, inp):
    x = blk.conv2(blk.conv1(_ln(inp, blk.norm1)))
    x1, x2 = x.chunk(2, dim=1)
    x = x1 * x2
    y = inp + blk.conv3(x * blk.sca(x)) * blk.beta
    x1, x2 = blk.conv4(_ln(y, blk.norm2)).chunk(2, dim=1)
    return y + blk.conv5(x1 * x2) * blk.gamma


def _layer(layer, x, mask):
    b, c, h, w = x.shape
    ra, wa = layer.ra, layer.wa
    q, k, v = (t.reshape(b, ra.heads, c // ra.heads, h * w).transpose(-1, -2)
               for t in ra.qkv(_ln(x, layer.norm_ra)).chunk(3, dim=1))
    out = _attend(q, k, v, ra.scale, mask).transpose(-1, -2).reshape(b, c, h, w)
    x = x + layer.lambda_ra * ra.project_out(out)
    x = x + layer.mlp_ra(_ln(x, layer.norm_ra_mlp))
    s = wa.window
    win = _ln(x, layer.norm_wa).view(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1)
    qkv = wa.qkv(win.reshape(-1, s * s, c)).reshape(-1, s * s, 3, wa.heads, c // wa.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    out = wa.proj_out(_attend(q, k, v, wa.scale).transpose(1, 2).reshape(-1, s * s, c))
    out = out.view(b, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
    x = x + layer.lambda_wa * out
    return x + layer.mlp_wa(_ln(x, layer.norm_wa_mlp))


def authors_forward(model, image, labels, region_lambda=-1000.0):
    """The paper's RAT over ``model``'s parameters: (B, 1, N, N) mask, nothing recomputed."""
    b = image.shape[0]
    tokens = F.interpolate(labels[:, None].float(), scale_factor=0.25, mode="nearest").reshape(b, -1)
    mask = torch.zeros(b, 1, tokens.shape[1], tokens.shape[1])
    mask.masked_fill_(tokens[:, None, :, None] != tokens[:, None, None, :], region_lambda)
    x, skips = model.intro(image), []
    for encoder, down in zip(model.encoders, model.downs, strict=True):
        for blk in encoder:
            x = _naf(blk, x)
        skips.append(x)
        x = down(x)
    shortcut = x
    for group in model.middle_blks:
        start = x
        for layer in group.layers:
            x = _layer(layer, x, mask)
        x = group.conv(x) + start
    x = x + shortcut
    for decoder, up, skip in zip(model.decoders, model.ups, skips[::-1], strict=True):
        x = up(x) + skip
        for blk in decoder:
            x = _naf(blk, x)
    return model.ending(x) + image


def dense_attention_bytes(batch: int, size: int, heads: int = 8, layers: int = 12) -> dict:
    """On paper: the dense formulation's (B, heads, N, N) float32 scores, N = (size/4)^2. Kept
    for backward: each R-MSA layer's softmax output; transient: about two more per layer."""
    one = batch * heads * (size // 4) ** 4 * 4
    return {"per_matrix": one, "kept": layers * one, "with_transient": (layers + 2) * one,
            "mask": batch * (size // 4) ** 4 * 4}


# ----------------------------------------------------------------------------- worker


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _dihedral(a: np.ndarray, batch: int) -> torch.Tensor:
    """A batch of the up to 8 rotations and flips of a square array (batch, H, W)."""
    views = [np.rot90(a, k) for k in range(4)]
    views += [v[:, ::-1] for v in views]
    return torch.from_numpy(np.stack([views[i % 8] for i in range(batch)]).copy())


def _step_run(spec: dict, device: torch.device, dtype: torch.dtype):
    from rat.training.loss import focal_region_loss
    from rat.training.model.network import build_model
    torch.manual_seed(0)
    model = build_model("rat", **spec.get("model", {})).to(device, dtype)
    target = _dihedral(np.load(spec["image"]), spec["batch"])[:, None]
    noisy = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    target, noisy = target.to(device, dtype), noisy.to(device, dtype)
    labels = _dihedral(np.load(spec["labels"]), spec["batch"]).to(device)
    forward = (lambda: authors_forward(model, noisy, labels)) if spec.get("authors") else (
        lambda: model(noisy, labels))
    layer0 = model.middle_blks[0].layers[0]

    def run():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.get("amp", False)):
            out = forward()
        focal_region_loss(out.float(), target, labels).backward()  # as the trainer does
        return out.detach(), torch.cat([model.intro.weight.grad.flatten(), layer0.lambda_ra.grad.flatten()])

    return run


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """Each of a convolution's input and weight gradients costs its forward FLOPs; PyTorch's own
    formula counts a grouped (depthwise) convolution's weight gradient as if it were dense."""
    from torch.utils.flop_counter import conv_flop_count

    transposed, output_mask = args[4], args[7]
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _floor(spec: dict) -> dict:
    """FLOPs of our step (nothing recomputed) outside region attention, and the plan's."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = {}
    for name, mapping in (("counted", None), ("fixed", {
            torch.ops.aten.convolution_backward: _conv_backward_flop})):
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        run = _step_run({**spec, "model": {"memory": "none", "backend": "sparse"}},
                        torch.device("cpu"), torch.float32)
        with counter:
            run()
        attention_ops = sum(n for op, n in counter.get_flop_counts()["Global"].items()
                            if "scaled_dot_product" in str(op))
        counted[name] = counter.get_total_flops() - attention_ops
    labels = _dihedral(np.load(spec["labels"]), spec["batch"])
    entries = within_region_entries(labels[:, ::4, ::4].reshape(spec["batch"], -1))
    return {**counted, "attention": 12 * entries * 32 * 8 * 12}


def matmul_peak(threads: int, repeats: int = 5) -> float:
    """float32 FLOP/s of a 2048^3 matrix product (median of ``repeats``) on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times)


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "floor":
        return {**_floor(spec), "peak_flops": matmul_peak(spec["threads"])}
    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    run = _step_run(spec, device, dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
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
        elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save({"out": out.float().cpu(), "grad": grad.float().cpu()}, spec["save"])
    return {"time": elapsed, "peak": peak, "base": base}


# ----------------------------------------------------------------------------- parent


def contenders(kind: str, extra: bool) -> list[dict]:
    ours = [{"name": "ours: default (selective)"},
            {"name": "ours: memory=none", "model": {"memory": "none"}},
            {"name": "ours: memory=full", "model": {"memory": "full"}}]
    if kind == "memory":
        return ours[:1]
    if extra:
        ours.append({"name": "ours: dense backend", "model": {"backend": "dense"}})
    return [{"name": "authors' formulation", "authors": True}, *ours]


def spawn(spec: dict) -> dict:
    """Time in one worker process, CPU memory in another (see the module docstring)."""

    def run(spec: dict, env: dict) -> dict:
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
        if done.returncode != 0:
            raise RuntimeError((done.stderr.strip().splitlines() or ["killed"])[-1])
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        if spec.get("kind") == "floor" or spec["device"] == "cuda":
            return run(spec, {})
        memory = run({**spec, "warmup": 0}, {"MALLOC_MMAP_THRESHOLD_": "65536"})
        timed = run(spec, {})
    except RuntimeError as err:
        return {"error": str(err)}
    return {**memory, "time": timed["time"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="step256,batch8,ct512")
    parser.add_argument("--maps", default="camera,coffee")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (processes per contender)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed one")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--extra", action="store_true", help="also our model with the dense backend")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, "
          f"{args.threads} threads, {args.repeats} rounds, {args.warmup} warm-up run(s)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_attention_"))
    base = {"threads": args.threads, "device": args.device, "dtype": args.dtype,
            "warmup": args.warmup}
    for case in args.cases.split(","):
        kind, size, batch = CASES[case]
        for map_name in args.maps.split(",")[: 1 if kind == "memory" else None]:
            print(f"\n== {case} (batch {batch}): {describe_map(map_name, size)}")
            image, labels = photo_and_labels(map_name, size)  # workers load them: no skimage
            np.save(tmp / "image.npy", image)
            np.save(tmp / "labels.npy", labels)
            files = {"image": str(tmp / "image.npy"), "labels": str(tmp / "labels.npy"),
                     "size": size, "batch": batch}
            floor = None
            if kind == "step" and args.device == "cpu":
                floor = spawn({**base, **files, "kind": "floor"})
            entries = contenders(kind, args.extra)
            results: dict[str, list[dict]] = {e["name"]: [] for e in entries}
            for _ in range(1 if kind == "memory" else args.repeats):
                for e in entries:
                    save = tmp / f"{case}_{map_name}_{len(results[e['name']])}_{e['name']}.pt"
                    spec = {**base, **files, **e, "kind": "step", "save": str(save)}
                    results[e["name"]].append({**spawn(spec), "save": save})
            report(results, entries[0]["name"], args.device, floor)
            if kind == "memory":
                paper = dense_attention_bytes(batch, size)
                print(f"dense formulation on paper: (B, 8, N, N) float32 scores, N = {(size // 4) ** 2}:"
                      f" {paper['per_matrix'] / GB:.2f} GB per R-MSA layer, {paper['kept'] / GB:.1f} GB"
                      f" kept for backward (12 layers), about {paper['with_transient'] / GB:.1f} GB with"
                      f" the transient ones, + {paper['mask'] / GB:.2f} GB mask")


def report(results: dict[str, list[dict]], baseline: str, device: str, floor: dict | None) -> None:
    mem = "peak alloc" if device == "cuda" else "peak RSS"
    if floor is not None and "error" not in floor:
        floor_s = (floor["counted"] + floor["attention"]) / floor["peak_flops"]
        fixed_s = (floor["fixed"] + floor["attention"]) / floor["peak_flops"]
        print(f"floor: {floor['counted'] / GB:.0f} GFLOP counted by torch.utils.flop_counter + "
              f"{floor['attention'] / GB:.0f} GFLOP within-region attention at "
              f"{floor['peak_flops'] / GB:.0f} GFLOP/s (2048^3 matmul) = {floor_s:.2f} s; with the "
              f"depthwise weight gradients counted as depthwise ({floor['fixed'] / GB:.0f} GFLOP): "
              f"{fixed_s:.2f} s")
    print(f"{'contender':<28}{'median s':>9}{'x faster':>9}{mem + ' GB':>14}{'x less':>8}"
          f"{'step GB':>9}{'x less':>8}{'floor %':>9}{'fixed %':>9}{'max|out-base|':>15}"
          f"{'max|grad-base|':>16}")
    summary = {}
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"{name:<28} failed: {runs[0]['error']}")
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
        has_floor = floor is not None and "error" not in floor
        share = f"{100 * floor_s / t:>9.0f}{100 * fixed_s / t:>9.0f}" if has_floor else f"{'-':>9}" * 2
        print(f"{name:<28}{t:>9.2f}{t0 / t:>9.2f}{p / GB:>14.2f}{p0 / p:>8.2f}"
              f"{d / GB:>9.2f}{d0 / d:>8.2f}{share}{dout:>15.2e}{dgrad:>16.2e}")
    for name, runs in results.items():  # the spread behind the medians
        print(f"  {name}: rounds " + " ".join(f"{r['time']:.2f}s/{r['peak'] / GB:.2f}GB"
                                           for r in runs if "error" not in r))


if __name__ == "__main__":
    main()
