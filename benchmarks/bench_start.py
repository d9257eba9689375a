"""The identity start, side by side: RAT's last convolution at zero (ours) against PyTorch's default init
of it (the authors' code), the same short training run from the same seed.

    python benchmarks/bench_start.py [--iters 200] [--batch-size 8] [--model rat-small]

Makes the sample dataset and its superpixel store in a temporary folder, then trains the CT group twice in
this process with ``rat-train``'s trainer (CPU, float32 unless CUDA is visible): once as the package builds
the model, once with ``ending.reset_parameters()`` after the model is built. Prints each run's final
validation PSNR and SSIM, the LQ input's, and the difference between the two starts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rat.precompute.cli import main as precompute
from rat.training.model import network
from rat.training.trainer import train


def run(start: str, store: Path, root: Path, out: Path, args: argparse.Namespace) -> dict:
    built = network.RAT.__init__

    def authors_init(self, *a, **k):
        built(self, *a, **k)
        self.ending.reset_parameters()  # PyTorch's default init of the layer, as the authors' code leaves it

    if start == "random":
        network.RAT.__init__ = authors_init
    try:
        summary = train({"masks": str(store), "root": str(root), "out": str(out / start), "group": "ct",
                         "model": args.model, "iters": args.iters, "batch_size": args.batch_size,
                         "eval_every": args.iters, "workers": 0, "progress": False, "seed": 0})
    finally:
        network.RAT.__init__ = built
    return summary["val"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="rat-small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, store = tmp / "sample", tmp / "sample.zarr"
        for command in (["sample-data", str(root)],
                        ["masks", "--dataset", "sample", "--root", str(root), "--out", str(store),
                         "--generator", "superpixels", "--no-progress"]):
            precompute.main(command, standalone_mode=False)
        vals = {start: run(start, store, root, tmp / "runs", args) for start in ("random", "zero")}
    lq = vals["zero"]
    print(f"\n{args.model}, {args.iters} steps at batch {args.batch_size}, sample CT validation image(s)")
    print(f"{'start':<28} {'PSNR (dB)':>10} {'SSIM':>8}")
    print(f"{'LQ input':<28} {lq['lq_psnr']:10.2f} {lq['lq_ssim']:8.4f}")
    for start, label in (("random", "random ending (authors')"), ("zero", "zero ending (ours)")):
        print(f"{label:<28} {vals[start]['psnr']:10.2f} {vals[start]['ssim']:8.4f}")
    print(f"zero - random: {vals['zero']['psnr'] - vals['random']['psnr']:+.2f} dB")


if __name__ == "__main__":
    main()
