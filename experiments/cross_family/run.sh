#!/usr/bin/env bash
# Issue #14 for one model: bash experiments/cross_family/run.sh smollm2-135m
# (or qwen2.5-0.5b, gemma3-270m). Every job goes through the run store, which for this
# experiment is committed (experiments/cross_family/runs: results.json and figures, no
# weights), so a run stopped at any point, on this machine or a fresh clone, and started
# again runs only what is missing. Appends each step's wall time to outputs/cross_family/MODEL.wall.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?model name: smollm2-135m, qwen2.5-0.5b or gemma3-270m}
OUT=outputs/cross_family/$MODEL
STORE=store_dir=experiments/cross_family/runs
step() { local start=$SECONDS; "$@"; echo "[wall] $((SECONDS - start)) s: ${*:2}" | tee -a "$OUT.wall"; }
mkdir -p outputs/cross_family
step .venv/bin/layerprune experiment=cross_family model="$MODEL" pruning_method=none fraction=0 \
  "$STORE" hydra.run.dir="$OUT/unpruned"
step .venv/bin/layerprune -m experiment=cross_family model="$MODEL" "$STORE" hydra.sweep.dir="$OUT/blocks"
step .venv/bin/layerprune -m experiment=cross_family_finercut model="$MODEL" "$STORE" \
  hydra.sweep.dir="$OUT/finercut"
step .venv/bin/layerprune -m experiment=cross_family_healing model="$MODEL" "$STORE" \
  hydra.sweep.dir="$OUT/healing"
