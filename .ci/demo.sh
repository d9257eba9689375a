#!/usr/bin/env bash
# `make demo`: the main job end to end on the sample dataset built from files shipped in installed packages.
set -euo pipefail
D="${DEMO_DIR:-demo_out}"
mkdir -p "$D"
rat-precompute sample-data "$D/data"
rat-precompute manifest --dataset sample --root "$D/data"
