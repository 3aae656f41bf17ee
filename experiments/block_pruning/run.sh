#!/usr/bin/env bash
# Issue #4: SmolLM2-135M, deeper_layers vs last_layers vs shortgpt, no healing, fractions
# 0..0.5 on benchmark=quick: the offline_gromov experiment (+ its unpruned point). One scan
# (C4 calibration split, 32 sequences x 256 tokens) serves every deeper_layers and shortgpt job.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/offline_gromov
.venv/bin/layerprune experiment=offline_gromov pruning_method=none fraction=0 \
  hydra.run.dir=$OUT/unpruned
.venv/bin/layerprune -m experiment=offline_gromov hydra.sweep.dir=$OUT/sweep
.venv/bin/layerprune-report $OUT --out experiments/block_pruning \
  --title "SmolLM2-135M, block pruning without healing"
cp "$(grep -l '"method": "deeper_layers"' $OUT/sweep/*/results.json | head -1 | xargs dirname)/distance_heatmap.png" \
  experiments/block_pruning/

# Issue #15: the perplexity criterion (ppl one_shot = Shortened LLaMA, iterative = SLEB) at the
# same fractions, added to the committed table (its unpruned row included) without rerunning
# the jobs above.
.venv/bin/layerprune -m experiment=offline_ppl hydra.sweep.dir=outputs/offline_ppl/sweep
.venv/bin/layerprune-report experiments/block_pruning/all.parquet outputs/offline_ppl \
  --out experiments/block_pruning --title "SmolLM2-135M, block pruning without healing"
