#!/usr/bin/env bash
# Issue #14, everything, in the order the sessions ran it: SmolLM2's sweep, the calibration-size
# study of every model, then Gemma3's and Qwen2.5's sweeps, then the report. Each part goes
# through a cache (run store, scan cache), so a stopped run started again does only what is
# missing. Wall times: outputs/cross_family/*.wall.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p outputs/cross_family
bash experiments/cross_family/run.sh smollm2-135m
for m in smollm2-135m gemma3-270m qwen2.5-0.5b; do
  start=$SECONDS
  .venv/bin/python -m layerprune.studies.calibration_size --model "$m" --out experiments/cross_family
  echo "[wall] $((SECONDS - start)) s: calibration_size $m" | tee -a outputs/cross_family/calibration_size.wall
done
bash experiments/cross_family/run.sh gemma3-270m
# Gemma3's deeper_layers and last_layers remove the same blocks at 1/4 and 1/2 ([12..16] and
# [8..16]), so its healed rows there compare one model with itself; at 3/8 they differ.
start=$SECONDS
.venv/bin/layerprune -m experiment=cross_family_healing model=gemma3-270m fraction=0.375 \
  store_dir=experiments/cross_family/runs hydra.sweep.dir=outputs/cross_family/gemma3-270m/healing_3_8
echo "[wall] $((SECONDS - start)) s: healing at 3/8, gemma3-270m" | tee -a outputs/cross_family/gemma3-270m.wall
bash experiments/cross_family/run.sh qwen2.5-0.5b
# what pruning buys (issue #30): every stored pruned job's model rebuilt from its plan and timed
# against its unpruned model, written into its results.json (speed=default sizes)
.venv/bin/layerprune-speed experiments/cross_family/runs
.venv/bin/python -m layerprune.studies.cross_family experiments/cross_family/runs --out experiments/cross_family
