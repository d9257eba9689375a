"""Training patches per second: from the store's chunked image cache vs decoding the source files per patch.

Builds, in a temporary folder, a few pathology-sized RGB images (scikit-image's ihc.png upsampled to about
3000 x 3000 with noise added so that PNG compression is realistic; LQ = bicubic x4 down and up, as for TMA),
a label store with their label maps (SLIC superpixels of a downscaled copy, upsampled), and a copy of the
store with the image cache added by `rat.shared.image_cache.cache_images`. Then it reads aligned
256 x 256 (LQ, HQ, labels) patches through `rat.training.data.PatchDataset` both ways and prints the median
patches per second over several repeats, side by side, and their ratio (target: at least 20x).

    python benchmarks/bench_patches.py [--size 3000] [--images 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def make_images(root: Path, size: int, n: int) -> list:
    """n HQ/LQ PNG pairs of size x size x 3 under root; their index entries."""
    from PIL import Image
    from skimage.segmentation import slic

    from rat.precompute.sample_data import ihc_path
    from rat.shared.datasets.degrade import bicubic_down_up
    from rat.shared.index import Entry
    from rat.shared.io import read_image, sha256_file, write_image

    ihc, _ = read_image(ihc_path())  # (512, 512, 3)
    rng = np.random.default_rng(0)
    entries, labels = [], {}
    for i in range(n):
        base = Image.fromarray(np.ascontiguousarray(np.rot90(ihc, i, axes=(0, 1))).astype(np.uint8))
        hq = np.asarray(base.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        hq = np.clip(hq + rng.standard_normal(hq.shape, dtype=np.float32) * 6, 0, 255).round()
        lq = np.clip(bicubic_down_up(hq, 4), 0, 255).round()
        name = f"tma_{i:02d}"
        write_image(root / f"hq/{name}.png", hq)
        write_image(root / f"lq/{name}.png", lq)
        small = slic(lq[::8, ::8] / 255, n_segments=300, compactness=10, start_label=1)
        labels[name] = np.kron(small, np.ones((8, 8), small.dtype))[:size, :size].astype(np.uint16)
        entries.append(Entry(name, "tma", "train", f"lq/{name}.png", f"hq/{name}.png", None,
                             sha256_file(root / f"lq/{name}.png"), (size, size, 3), None))
    return entries, labels


def patches_per_second(dataset, first: int, count: int) -> float:
    start = time.perf_counter()
    for i in range(first, first + count):
        dataset[i]
    return count / (time.perf_counter() - start)


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3000, help="image edge in pixels")
    parser.add_argument("--images", type=int, default=3, help="number of images")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per contender")
    parser.add_argument("--store-patches", type=int, default=100, help="patches per repeat from the store")
    parser.add_argument("--source-patches", type=int, default=3, help="patches per repeat from the sources")
    args = parser.parse_args()

    from rat.shared import store as st
    from rat.shared.datasets import load_dataset
    from rat.shared.image_cache import cache_images
    from rat.training.data import PatchDataset

    group = load_dataset("tma").groups["tma"]
    group = replace(group, patch_size=256)
    with tempfile.TemporaryDirectory(prefix="bench_patches_") as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        entries, labels = make_images(root, args.size, args.images)
        plain = Path(tmp) / "labels.zarr"
        g = st.init_store(plain, st.make_provenance("bench", {"name": "slic-x8"}, {}))
        for e in entries:
            st.write_labels(g, e.id, labels[e.id], e.sha256)
        cached = Path(shutil.copytree(plain, Path(tmp) / "cached.zarr"))
        t1 = time.perf_counter()
        outcomes = cache_images(entries, root, cached, progress=False)
        assert all(o.status == "done" for o in outcomes), outcomes
        t2 = time.perf_counter()
        print(f"{args.images} RGB images {args.size}x{args.size}: PNG files {folder_mib(root):.0f} MiB, "
              f"image cache {folder_mib(cached / 'images'):.0f} MiB; made in {t1 - t0:.1f} s, "
              f"cached in {t2 - t1:.1f} s ({(t2 - t1) / args.images:.2f} s/image)")

        contenders = {
            "store (chunked image cache)": (PatchDataset(cached, entries, group, seed=0), args.store_patches),
            "decode source files per patch": (PatchDataset(plain, entries, group, root=root, seed=0),
                                              args.source_patches),
        }
        a, b = (d for d, _ in contenders.values())
        for i in range(3):  # same patches either way; also warms up the store's array handles
            x, y = a[i], b[i]
            assert all(bool((x[k] == y[k]).all()) for k in ("lq", "hq", "labels"))
        medians = {}
        for name, (dataset, count) in contenders.items():
            rates = [patches_per_second(dataset, 1000 + r * count, count) for r in range(args.repeats)]
            medians[name] = float(np.median(rates))
            print(f"  {name:32s} median {medians[name]:9.1f} patches/s  "
                  f"({1000 / medians[name]:8.2f} ms/patch; {args.repeats} repeats of {count})")
        store_rate, source_rate = medians.values()
        print(f"  ratio store / source: {store_rate / source_rate:.1f}x (target >= 20x); "
              f"patch {group.patch_size}x{group.patch_size}, aligned LQ + HQ + labels, rot90/flip on")


if __name__ == "__main__":
    main()
