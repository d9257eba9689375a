"""SAM's automatic masks on a GPU, side by side: segment-anything's own generator against ours.

    python benchmarks/bench_masks_gpu.py                 # CUDA: 1024 x 1024 pathology image, 3 rounds
    python benchmarks/bench_masks_gpu.py --smoke         # the same path on the CPU, tiny

Ours is ``rat.shared.regions.sam.SamGenerator``, what ``rat-precompute masks`` runs: the package's own
``SamAutomaticMaskGenerator`` class with its post-processing in bounded memory (``--max-memory`` default).
Both get the same ViT-B (random weights, built by segment_anything and saved as a checkpoint file here;
nothing is downloaded) and the same parameters, with the quality filters off so that every mask is
post-processed (the most work per image). Each round runs both on the same image, alternating; printed:
median seconds per image, images per second, the ratio, and whether the records are identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_precompute import _ihc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        device, args.size, args.rounds, args.points_per_side = "cpu", 256, 1, 4
    elif not torch.cuda.is_available():
        print("skipped: no CUDA")
        return
    else:
        device = "cuda"
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    from rat.shared.regions.sam import SamGenerator

    tile = _ihc()
    reps = -(-args.size // tile.shape[0])
    rgb = np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[: args.size, : args.size])
    params = {"points_per_side": args.points_per_side, "points_per_batch": 64, "pred_iou_thresh": 0.0,
              "stability_score_thresh": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "sam_vit_b_random_weights.pth"
        torch.manual_seed(0)
        torch.save(sam_model_registry["vit_b"]().state_dict(), ckpt)
        model, _ = SamGenerator.load_model(ckpt, "vit_b")
        package = SamAutomaticMaskGenerator(model.to(device), output_mode="uncompressed_rle", **params)
        ours = SamGenerator(ckpt, model_type="vit_b", device=device, **params)

    def run(generate) -> tuple[float, str, int]:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            records = generate(rgb)
        if device == "cuda":
            torch.cuda.synchronize()
        digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
        return time.perf_counter() - start, digest, len(records)

    run(package.generate)  # warm-up: cuDNN and kernel selection
    times: dict[str, list[float]] = {"segment-anything": [], "ours": []}
    digests, masks = set(), 0
    for _ in range(args.rounds):
        for name, generate in (("segment-anything", package.generate), ("ours", ours.records)):
            seconds, digest, masks = run(generate)
            times[name].append(seconds)
            digests.add(digest)
    where = "CPU smoke run" if args.smoke else torch.cuda.get_device_name()
    print(f"{where}: {args.size} x {args.size} RGB, SAM ViT-B (random weights), points_per_side "
          f"{args.points_per_side}, {masks} masks per image, {args.rounds} rounds")
    base = statistics.median(times["segment-anything"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<17} {med:7.3f} s/image  {1 / med:6.2f} images/s  x {base / med:.2f}")
    print(f"  records identical: {len(digests) == 1}")


if __name__ == "__main__":
    main()
