#!/usr/bin/env bash
# Issue #4: SmolLM2-135M, deeper_layers vs last_layers vs shortgpt, no healing,
# fractions 0..0.5, benchmark=quick (200 ARC-E / PIQA / WinoGrande items + wiki ppl + C4 loss).
# One scan (C4 calibration split, 32 sequences x 256 tokens) serves every deeper_layers and
# shortgpt job through the scan cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/block_pruning
rm -rf "$OUT"
.venv/bin/layerprune -m pruning_method=none fraction=0 hydra.sweep.dir=$OUT/none
.venv/bin/layerprune -m pruning_method=deeper_layers,last_layers,shortgpt \
  fraction=0.1,0.2,0.3,0.4,0.5 hydra.sweep.dir=$OUT/pruned
# 0.25 too, for the unhealed rows of the healing experiment (experiments/healing/)
.venv/bin/layerprune -m pruning_method=deeper_layers,last_layers fraction=0.25 \
  hydra.sweep.dir=$OUT/extra
.venv/bin/layerprune-report $OUT --out experiments/block_pruning \
  --title "SmolLM2-135M, block pruning without healing"
cp "$(ls -d $OUT/pruned/*/ | head -1)distance_heatmap.png" experiments/block_pruning/
