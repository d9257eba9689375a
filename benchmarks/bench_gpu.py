"""Region attention backends on a GPU: dense vs sparse vs flex, one RAT training step each.

    python benchmarks/bench_gpu.py                    # both cases, fp32 and bf16, 3 rounds
    python benchmarks/bench_gpu.py --cases 512x1 --precisions bf16 --repeats 5
    python benchmarks/bench_gpu.py --smoke            # this script's whole path on the CPU, tiny

Cases: ``256x8``, the paper's recipe (batch 8 of 256 x 256 patches: the 8 rotations and flips
of one image and its label map), and ``512x1``, a whole 512 x 512 CT-sized slice. Each step is
our default model (``build_model("rat", backend=...)``, default memory policy): forward, focal
region loss, backward. ``fp32``: float32 weights and activations (PyTorch's defaults: TF32 off
for matrix products, on for cuDNN convolutions); ``bf16``:
float32 weights under ``torch.autocast(dtype=bfloat16)``, as ``rat-train`` trains on CUDA.

Every run is a fresh subprocess (see bench_attention.py, whose worker runs it), contenders
alternate round by round, the medians are printed with ratios to ``dense`` of the same precision,
with peak CUDA memory (torch.cuda.max_memory_allocated) and the max |difference| of the output
and two gradients to dense. A contender that runs out of memory is reported as failed. The flex
kernel compiles during the warm-up runs. Without CUDA it prints "skipped: no CUDA" and exits 0.

``--smoke`` runs the same code on the CPU at 64 x 64, batch 2, one round, no warm-up (flex has no
backward on the CPU and is reported as failed): a check that the script works before a GPU is lent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_attention import describe_map, photo_and_labels, report, spawn  # noqa: E402

CASES = {"256x8": (256, 8), "512x1": (512, 1), "64x2": (64, 2)}
BACKENDS = ("dense", "sparse", "flex")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="256x8,512x1")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--map", default="camera")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (processes per contender)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs (flex compiles in them)")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of this script's whole path")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        args.cases, args.repeats, args.warmup = "64x2", 1, 0
    elif not torch.cuda.is_available():
        print("skipped: no CUDA")
        return
    where = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {where}, {args.repeats} rounds, {args.warmup} warm-up run(s)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    for case in args.cases.split(","):
        size, batch = CASES[case]
        image, labels = photo_and_labels(args.map, size)
        np.save(tmp / "image.npy", image)
        np.save(tmp / "labels.npy", labels)
        for precision in args.precisions.split(","):
            print(f"\n== {case} {precision}: batch {batch}, {describe_map(args.map, size)}")
            names = args.backends.split(",")
            results: dict[str, list[dict]] = {name: [] for name in names}
            for round_ in range(args.repeats):
                for name in names:
                    save = tmp / f"{case}_{precision}_{name}_{round_}.pt"
                    spec = {"kind": "step", "device": device, "dtype": "float32", "threads": 1,
                            "warmup": args.warmup, "batch": batch, "size": size,
                            "image": str(tmp / "image.npy"), "labels": str(tmp / "labels.npy"),
                            "model": {"backend": name}, "amp": precision == "bf16",
                            "save": str(save)}
                    results[name].append({**spawn(spec), "save": save})
            report(results, names[0], device, None)


if __name__ == "__main__":
    main()
