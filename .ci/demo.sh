#!/usr/bin/env bash
# `make demo`: the main job end to end on the sample dataset built from files shipped in installed packages,
# with the design card's own commands:
#   rat-precompute masks --dataset sample      (data root from RAT_DATA_ROOT; store ./sample.zarr)
#   rat-train --masks sample.zarr              (dataset, index and groups from the store)
# Regions come from superpixels offline, from SAM when RAT_SAM_CHECKPOINT names a checkpoint.
# Outputs under $DEMO_DIR (default demo_out): sample.zarr, runs/<group>/ (checkpoints, metrics, curves.png),
# eval_<group>.csv (per-image PSNR/SSIM + mean/std), figure_<group>.png (LQ | restored | HQ | regions),
# restored/ (test images in their own formats).
set -euo pipefail
D="${DEMO_DIR:-demo_out}"
ITERS="${DEMO_ITERS:-600}"   # steps per group; the paper's 200,000 are for GPUs
mkdir -p "$D"
cd "$D"
rm -rf runs restored   # a rerun trains afresh; data, index, store and image cache are reused
start=$SECONDS

export RAT_DATA_ROOT="$PWD/data"            # the sample dataset lives in $RAT_DATA_ROOT/sample
export RAT_CACHE_DIR="${RAT_CACHE_DIR:-$PWD/cache}"
rat-precompute sample-data "$RAT_DATA_ROOT/sample"
if [ -n "${RAT_SAM_CHECKPOINT:-}" ]; then
  rat-precompute masks --dataset sample --no-progress
else
  echo "RAT_SAM_CHECKPOINT not set: regions from superpixels (offline stand-in for SAM)"
  rat-precompute masks --dataset sample --generator superpixels --no-progress
fi
rat-precompute info sample.zarr

# The two groups train side by side, one thread each (2 cores). The short schedule uses a higher
# learning rate than the paper's 2e-4 (same cosine annealing to 1e-6) and the test split as validation.
for g in pathology ct; do
  OMP_NUM_THREADS=1 rat-train --masks sample.zarr --group "$g" --out "runs/$g" --model rat-small \
    --iters "$ITERS" --batch-size 4 --lr 1e-3 --eval-every 200 --log-every 50 --save-every 200 --workers 0 \
    --no-progress > "train_$g.log" 2>&1 &
done
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
for g in pathology ct; do echo "== training $g"; cat "train_$g.log"; done
[ "$fail" = 0 ] || { echo "training failed"; exit 1; }

for g in pathology ct; do
  echo "== test split, $g (final checkpoint)"
  rat-train eval --checkpoint "runs/$g/last.pt" --csv "eval_$g.csv" --figure "figure_$g.png" --no-progress
  rat-train restore --checkpoint "runs/$g/last.pt" --out restored --no-progress
done
echo "demo finished in $((SECONDS - start)) s; outputs in $PWD"
