#!/usr/bin/env bash
# `make demo`: the main job end to end on the sample dataset built from files shipped in installed packages.
#   sample data -> index -> label maps (superpixels offline; SAM when RAT_SAM_CHECKPOINT names a checkpoint)
#   -> image cache -> a few minutes of CPU training of rat-small per group -> evaluation table and figures.
# Outputs under $DEMO_DIR (default demo_out): runs/<group>/ (checkpoints, metrics, curves.png),
# eval_<group>.csv (per-image PSNR/SSIM + mean/std), figure_<group>.png (LQ | restored | HQ | regions).
set -euo pipefail
D="${DEMO_DIR:-demo_out}"
ITERS="${DEMO_ITERS:-600}"   # steps per group; the paper's 200,000 are for GPUs
mkdir -p "$D"
rm -rf "$D/runs" "$D/restored"   # a rerun trains afresh; data, index and store are reused
start=$SECONDS

rat-precompute sample-data "$D/data"
rat-precompute manifest --dataset sample --root "$D/data" --no-progress
if [ -n "${RAT_SAM_CHECKPOINT:-}" ]; then
  rat-precompute masks --dataset sample --root "$D/data" --out "$D/store.zarr" --generator sam --no-progress
else
  echo "RAT_SAM_CHECKPOINT not set: regions from superpixels (offline stand-in for SAM)"
  rat-precompute masks --dataset sample --root "$D/data" --out "$D/store.zarr" --generator superpixels \
    --no-progress
fi
rat-precompute cache --dataset sample --root "$D/data" --out "$D/store.zarr" --no-progress

# The two groups train side by side, one thread each (2 cores). The short schedule uses a higher
# learning rate than the paper's 2e-4 (same cosine annealing to 1e-6) and the test split as validation.
for g in pathology ct; do
  OMP_NUM_THREADS=1 rat-train --masks "$D/store.zarr" --dataset sample --root "$D/data" --group "$g" \
    --out "$D/runs/$g" --model rat-small --iters "$ITERS" --batch-size 4 --lr 1e-3 --eval-every 200 \
    --log-every 50 --save-every 200 --workers 0 --no-progress > "$D/train_$g.log" 2>&1 &
done
fail=0
for job in $(jobs -p); do wait "$job" || fail=1; done
for g in pathology ct; do echo "== training $g"; cat "$D/train_$g.log"; done
[ "$fail" = 0 ] || { echo "training failed"; exit 1; }

for g in pathology ct; do
  echo "== test split, $g (final checkpoint)"
  rat-train eval --checkpoint "$D/runs/$g/last.pt" --csv "$D/eval_$g.csv" --figure "$D/figure_$g.png" \
    --no-progress
  rat-train restore --checkpoint "$D/runs/$g/last.pt" --out "$D/restored" --no-progress
done
echo "demo finished in $((SECONDS - start)) s; outputs in $D"
