#!/usr/bin/env bash
# `make demo`: the main job end to end on the sample dataset built from files shipped in installed packages,
# with the design card's own commands:
#   rat-precompute masks --dataset sample      (data root from RAT_DATA_ROOT; store ./sample.zarr)
#   rat-train --masks sample.zarr              (dataset, index and groups from the store)
# Regions come from superpixels offline, from SAM when RAT_SAM_CHECKPOINT names a checkpoint.
# The protocol: each run keeps best.pt by its validation images; the test images are scored once, after
# training (`eval`), and the paper's ablations on the CT group (window attention instead of region attention,
# regions from another source) are compared with the main run on them (`compare`: paired differences).
# Outputs under $DEMO_DIR (default demo_out): sample.zarr, runs/<name>/ (checkpoints, metrics, curves.png),
# eval_<group>.csv (per-image PSNR/SSIM + mean/std), figure_<group>.png (LQ | restored | HQ | regions),
# compare_ct.csv and compare_ct.png (the ablations), restored/ (test images in their own formats).
set -euo pipefail
D="${DEMO_DIR:-demo_out}"
ITERS="${DEMO_ITERS:-600}"   # steps per run; the paper's 200,000 are for GPUs
EVERY="${DEMO_PROGRESS_EVERY:-30}"   # seconds between the progress lines of the runs training
mkdir -p "$D"
cd "$D"
rm -rf runs restored   # a rerun trains afresh; data, index, stores and image cache are reused
start=$SECONDS

export RAT_DATA_ROOT="$PWD/data"            # the sample dataset lives in $RAT_DATA_ROOT/sample
export RAT_CACHE_DIR="${RAT_CACHE_DIR:-$PWD/cache}"
rat-precompute sample-data "$RAT_DATA_ROOT/sample"
if [ -n "${RAT_SAM_CHECKPOINT:-}" ]; then
  rat-precompute masks --dataset sample --no-progress
  OTHER=(--generator superpixels)                       # the other region source of the ablation
  OTHER_NAME=superpixels
else
  echo "RAT_SAM_CHECKPOINT not set: regions from superpixels (offline stand-in for SAM)"
  rat-precompute masks --dataset sample --generator superpixels --no-progress
  OTHER=(--generator superpixels --sp-method felzenszwalb)
  OTHER_NAME=felzenszwalb
fi
rat-precompute masks --dataset sample "${OTHER[@]}" --masks "sample_$OTHER_NAME.zarr" --no-progress > /dev/null
rat-precompute info sample.zarr

# Two runs side by side, one thread each (2 cores). The short schedule uses a higher learning rate than the
# paper's 2e-4 (same cosine annealing to 1e-6); each run validates on its own validation images.
RECIPE=(--model rat-small --iters "$ITERS" --batch-size 4 --lr 1e-3 --eval-every 100 --log-every 50
        --save-every 200 --workers 0 --no-progress)
progress() {  # progress NAME...: the last training step each run has logged
  local line="" name step
  for name in "$@"; do
    step=$(grep -o '"step": [0-9]*, "kind": "train"' "runs/$name/metrics.jsonl" 2>/dev/null | tail -n 1 |
           grep -o '[0-9][0-9]*' | head -n 1 || true)
    line+=" $name step ${step:-0}/$ITERS,"
  done
  echo "  [$((SECONDS - start)) s]${line%,}"
}
pair() {  # pair NAME1 "ARGS1" NAME2 "ARGS2": train two runs at once, showing progress, then print their logs
  local fail=0 waited=0
  echo "== training $1 and $3 side by side ($ITERS steps each; a line every $EVERY s)"
  OMP_NUM_THREADS=1 rat-train --out "runs/$1" $2 "${RECIPE[@]}" > "train_$1.log" 2>&1 &
  OMP_NUM_THREADS=1 rat-train --out "runs/$3" $4 "${RECIPE[@]}" > "train_$3.log" 2>&1 &
  while [ -n "$(jobs -rp)" ]; do
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % EVERY)) = 0 ] && [ -n "$(jobs -rp)" ]; then progress "$1" "$3"; fi
  done
  for job in $(jobs -p); do wait "$job" || fail=1; done
  for name in "$1" "$3"; do echo "== training $name"; cat "train_$name.log"; done
  [ "$fail" = 0 ] || { echo "training failed"; exit 1; }
}
pair pathology "--masks sample.zarr --group pathology" ct "--masks sample.zarr --group ct"
pair ct-wmsa "--masks sample.zarr --group ct --attention wmsa" \
     "ct-$OTHER_NAME" "--masks sample_$OTHER_NAME.zarr --group ct"

for g in pathology ct; do
  echo "== test split, $g (best.pt, chosen on validation)"
  rat-train eval --checkpoint "runs/$g/best.pt" --csv "eval_$g.csv" --figure "figure_$g.png" --no-progress
  rat-train restore --checkpoint "runs/$g/best.pt" --out restored --no-progress
done
echo "== ablations on the CT test images: region attention vs window attention vs $OTHER_NAME regions"
rat-train compare runs/ct runs/ct-wmsa "runs/ct-$OTHER_NAME" --csv compare_ct.csv --figure compare_ct.png \
  --no-progress
echo "demo finished in $((SECONDS - start)) s; outputs in $PWD"
