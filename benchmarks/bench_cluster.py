"""Images per second of `masks`: the single-process runner against 1 and 2 dask workers, same images.

    python benchmarks/bench_cluster.py [--generator sam|superpixels] [--images 8] [--repeats 3]

CPU only. The sample dataset and a tiny SAM (random weights, the real generation code) are built in a temp
directory. Each timed run writes a fresh store and includes building the generator (the single process
builds it itself; the dask path registers the worker plugin, which builds it on every worker). The local
cluster is started once per worker count and its start-up time is printed apart. Workers share the cores
(1 worker: all cores for torch; 2 workers: half each), so the single process is timed with all cores and
with one torch thread: the cluster path's own overhead is "dask, 1 worker" against the first, and
"dask, 2 workers" against the second; this is one machine, not multi-node scaling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=["sam", "superpixels"], default="sam")
    parser.add_argument("--images", type=int, default=8, help="how many of the 16 sample images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points-per-side", type=int, default=4, help="tiny SAM prompt grid")
    args = parser.parse_args()

    import torch
    from distributed import Client

    from rat.precompute.cluster import generator_spec, local_cluster, run_masks_distributed
    from rat.precompute.runner import run_masks
    from rat.precompute.sample_data import make_sample_data
    from rat.shared.datasets import load_dataset
    from rat.shared.index.build import build_index
    from rat.shared.regions import build_generator
    from rat.shared.regions.sam import build_sam_tiny

    tmp = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    root = tmp / "data"
    make_sample_data(root)
    ds = load_dataset("sample")
    entries, _ = build_index(ds, root, progress=False)
    entries = sorted(entries, key=lambda e: e.id)[:: max(1, len(entries) // args.images)][: args.images]
    if args.generator == "sam":
        torch.manual_seed(0)
        ckpt = tmp / "sam_tiny.pth"
        torch.save(build_sam_tiny().state_dict(), ckpt)
        kwargs = {"checkpoint": str(ckpt), "model_type": "test_tiny", "device": "cpu",
                  "points_per_side": args.points_per_side, "pred_iou_thresh": 0.0,
                  "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    else:
        kwargs = {}
    n = len(entries)
    counter = iter(range(10**6))

    def single(threads: int) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        out = run_masks(ds, entries, root, tmp / f"s{next(counter)}.zarr",
                        build_generator(args.generator, **kwargs), progress=False)
        assert all(o.status == "done" for o in out)
        torch.set_num_threads(before)
        return time.perf_counter() - start

    def distributed(client: Client) -> float:
        start = time.perf_counter()
        out = run_masks_distributed(ds, entries, root, tmp / f"d{next(counter)}.zarr",
                                    generator_spec(args.generator, **kwargs), client, progress=False)
        assert all(o.status == "done" for o in out)
        return time.perf_counter() - start

    print(f"{n} sample images ({', '.join(sorted({e.group for e in entries}))}), generator {args.generator}"
          + (f" (tiny SAM, {args.points_per_side}x{args.points_per_side} points)" if kwargs else "")
          + f", {os.cpu_count()} CPU cores, {args.repeats} repeats")
    cores = torch.get_num_threads()
    results = {f"single, {cores} threads": [single(cores) for _ in range(args.repeats)],
               "single, 1 thread": [single(1) for _ in range(args.repeats)]}
    startup = {}
    for workers in (1, 2):
        start = time.perf_counter()
        with local_cluster(workers, gpus=[]) as cluster, Client(cluster) as client:
            client.wait_for_workers(workers)
            startup[workers] = time.perf_counter() - start
            name = f"dask, {workers} worker{'s' * (workers > 1)} x {max(1, cores // workers)} thr"
            results[name] = [distributed(client) for _ in range(args.repeats)]
    base = n / statistics.median(next(iter(results.values())))
    print(f"{'contender':<26} {'median s':>9} {'images/s':>9} {'vs first':>9}   runs (s)")
    for name, secs in results.items():
        rate = n / statistics.median(secs)
        print(f"{name:<26} {statistics.median(secs):>9.2f} {rate:>9.2f} {rate / base:>8.2f}x   "
              + " ".join(f"{s:.2f}" for s in secs))
    print("cluster start-up (not in the runs): "
          + ", ".join(f"{w} worker{'s' * (w > 1)} {s:.1f} s" for w, s in startup.items()))


if __name__ == "__main__":
    main()
