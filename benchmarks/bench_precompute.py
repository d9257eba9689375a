"""Precompute costs: time outside SAM's `generate`, bytes per label map, peak memory on a TMA-sized image.

Run: python benchmarks/bench_precompute.py [--quick]

1. A 512 x 512 image through the real per-image path with SAM ViT-B (random weights: timing only): read the
   file, window to 8-bit RGB, SAM's own `generate` (RLE output), resolve masks into a label map, write to the
   store. Prints each phase's median and the share of time spent outside `generate` (target <= 5%).
2. Bytes per label map: the zarr store's chunk files against raw uint16 and a 16-bit PNG, on label maps with
   realistic region counts (Felzenszwalb on real images from scikit-image's data folder).
3. Peak host memory (VmHWM of a fresh process) and time for one 3249 x 3249 pathology image through SAM's
   generator, side by side: segment-anything's own `SamAutomaticMaskGenerator` against ours in bounded memory
   (the same class, its post-processing in parts within --max-memory), at points_per_batch 16 and 64; the
   records of all runs must be identical.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _ihc() -> np.ndarray:
    import skimage

    return np.asarray(Image.open(Path(skimage.__file__).parent / "data" / "ihc.png").convert("RGB"))


def _vit_b_checkpoint(tmp: Path) -> Path:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


def _pathology_png(tmp: Path, size: int) -> Path:
    tile = _ihc()
    reps = -(-size // tile.shape[0])
    big = np.tile(tile, (reps, reps, 1))[:size, :size]
    path = tmp / f"ihc_{size}.png"
    Image.fromarray(big).save(path)
    return path


def time_phases(ckpt: Path, image: Path, repeats: int, points_per_side: int) -> dict[str, list[float]]:
    from rat.shared import store as st
    from rat.shared.datasets import Window
    from rat.shared.io import read_image, sha256_file
    from rat.shared.regions.labels import resolve_rle_masks
    from rat.shared.regions.sam import SamGenerator
    from rat.shared.regions.window import render_for_sam

    # Random weights give near-identical masks that NMS would collapse to one; without the thresholds and
    # NMS every prompt's masks survive, so resolution sees more masks than a trained SAM gives (~50-150).
    gen = SamGenerator(ckpt, model_type="vit_b", device="cpu", points_per_side=points_per_side,
                       pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    times: dict[str, list[float]] = {k: [] for k in ("hash+read", "window", "generate", "resolve", "write")}
    with tempfile.TemporaryDirectory() as d:
        group = st.init_store(Path(d) / "s.zarr", st.make_provenance("bench", gen.provenance(), {}))
        for _ in range(repeats):
            t0 = time.perf_counter()
            sha = sha256_file(image)
            arr, _ = read_image(image)
            t1 = time.perf_counter()
            rgb = render_for_sam(arr, Window("none"))
            t2 = time.perf_counter()
            with torch.inference_mode():
                records = gen._generator.generate(rgb)
            t3 = time.perf_counter()
            labels = resolve_rle_masks(records, rgb.shape[:2])
            t4 = time.perf_counter()
            st.write_labels(group, "img", labels, sha)
            t5 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[k].append(v)
    times["masks"] = [float(len(records))]
    return times


def store_bytes() -> list[tuple[str, int, int, int, int]]:
    import skimage
    from skimage.segmentation import felzenszwalb

    from rat.shared import store as st
    from rat.shared.regions.labels import compact

    rows = []
    data = Path(skimage.__file__).parent / "data"
    with tempfile.TemporaryDirectory() as d:
        group = st.init_store(Path(d) / "s.zarr", st.make_provenance("bench", {"name": "f"}, {}))
        for name in ("ihc.png", "camera.png", "astronaut.png", "coffee.png"):
            img = np.asarray(Image.open(data / name).convert("RGB").resize((512, 512)))
            labels = compact(felzenszwalb(img, scale=300, sigma=1.0, min_size=700).astype(np.int64) + 1)
            st.write_labels(group, name, labels, "0" * 64)
            zbytes = sum(p.stat().st_size for p in (Path(d) / "s.zarr" / "labels" / name / "c").rglob("*")
                         if p.is_file())
            png = Path(d) / f"{name}.png"
            Image.fromarray(labels.astype(np.uint16)).save(png, optimize=True)
            rows.append((name, int(labels.max()), zbytes, labels.size * 2, png.stat().st_size))
    return rows


def _vm_hwm() -> int:
    """Peak resident set size of this process image, bytes (VmHWM; unlike ru_maxrss, not inherited
    from the parent that forked us)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_child(ckpt: str, image: str, contender: str, points_per_batch: int) -> None:
    """Runs in a fresh process: one image through SAM's generator (the package's own, or ours in bounded
    memory), then resolved into a label map; prints peak RSS (bytes), time and a hash of the records."""
    import hashlib

    from segment_anything import SamAutomaticMaskGenerator

    from rat.shared.regions.labels import resolve_rle_masks
    from rat.shared.regions.sam import SamGenerator

    torch.set_num_threads(2)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    before = _vm_hwm()
    params = {"points_per_side": 8, "points_per_batch": points_per_batch, "pred_iou_thresh": 0.0,
              "stability_score_thresh": 0.0}
    if contender == "package":
        model, _ = SamGenerator.load_model(ckpt, "vit_b")
        gen = SamAutomaticMaskGenerator(model, output_mode="uncompressed_rle", **params)
        generate = gen.generate
    else:
        generate = SamGenerator(ckpt, model_type="vit_b", device="cpu", **params).records
    after_load = _vm_hwm()
    t0 = time.perf_counter()
    with torch.inference_mode():
        records = generate(rgb)
    seconds = time.perf_counter() - t0
    labels = resolve_rle_masks(records, rgb.shape[:2])
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    print(json.dumps({"baseline": before, "after_model": after_load, "peak": _vm_hwm(), "seconds": seconds,
                      "masks": len(records), "regions": int(labels.max()), "records_sha256": digest}))


def side_by_side(ckpt: Path, image: Path, rounds: int) -> dict[tuple[str, int], list[dict]]:
    """Each contender at points_per_batch 16 and 64, ``rounds`` times, alternating, in fresh processes."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for ppb in (16, 64):
            for contender in ("package", "bounded"):
                out = subprocess.run([sys.executable, __file__, "--child", str(ckpt), str(image), contender,
                                      str(ppb)], capture_output=True, text=True, check=True).stdout
                runs.setdefault((contender, ppb), []).append(json.loads(out.strip().splitlines()[-1]))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and points (smoke run)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the side-by-side memory run")
    ap.add_argument("--only-memory", action="store_true", help="only part 3")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_memory_child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    torch.set_num_threads(2)
    repeats, pps = (1, 8) if args.quick else (3, 16)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = _vit_b_checkpoint(tmp)
        img512 = _pathology_png(tmp, 512)
        if not args.only_memory:
            print(f"== 1. per-image time, 512 x 512, SAM ViT-B (random weights), points_per_side={pps}, "
                  f"{repeats} repeats, CPU threads {torch.get_num_threads()}")
            t = time_phases(ckpt, img512, repeats, pps)
            masks = int(t.pop("masks")[0])
            med = {k: statistics.median(v) for k, v in t.items()}
            total = sum(med.values())
            for k, v in med.items():
                print(f"  {k:10s} {v:9.3f} s  {100 * v / total:6.2f} %")
            outside = total - med["generate"]
            print(f"  masks from SAM: {masks}; outside generate: {outside:.3f} s of {total:.3f} s = "
                  f"{100 * outside / total:.2f} % (target <= 5 %)")

            print("== 2. bytes per 512 x 512 label map: zarr (zstd, 256 chunks) vs raw uint16 vs 16-bit PNG")
            for name, regions, zb, raw, png in store_bytes():
                print(f"  {name:14s} {regions:4d} regions  zarr {zb:7d} B  raw {raw:7d} B  png {png:7d} B  "
                      f"raw/zarr {raw / zb:6.1f}x  png/zarr {png / zb:5.2f}x")

        size = 3249
        big = _pathology_png(tmp, size)
        rounds = 1 if args.quick else args.rounds
        print(f"== 3. {size} x {size} RGB pathology image, SAM ViT-B (random weights), points_per_side=8, "
              f"no filters (all 192 masks post-processed), CPU threads 2: segment-anything's generator vs "
              f"ours in bounded memory (--max-memory default), fresh process each, medians of {rounds}")
        runs = side_by_side(ckpt, big, rounds)
        gib = 2 ** 30
        print("  | points per batch | generator | peak RSS (GiB) | beyond model (GiB) | time (s) | x time |")
        print("  |---|---|---|---|---|---|")
        for ppb in (16, 64):
            base = statistics.median(r["seconds"] for r in runs[("package", 64)])
            for contender in ("package", "bounded"):
                rs = runs[(contender, ppb)]
                peak = statistics.median(r["peak"] for r in rs)
                beyond = statistics.median(r["peak"] - r["after_model"] for r in rs)
                sec = statistics.median(r["seconds"] for r in rs)
                print(f"  | {ppb} | {contender} | {peak / gib:.2f} | {beyond / gib:.2f} | {sec:.1f} | "
                      f"{sec / base:.2f} |")
        hashes = {r["records_sha256"] for rs in runs.values() for r in rs}
        print(f"  records identical across contenders and batch sizes: {len(hashes) == 1} "
              f"({runs[('package', 64)][0]['masks']} masks); model loaded at "
              f"{statistics.median(r['after_model'] for r in runs[('package', 64)]) / gib:.2f} GiB; "
              f"x time: against segment-anything's generator at points_per_batch 64")


if __name__ == "__main__":
    main()
