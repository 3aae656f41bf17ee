#!/usr/bin/env bash
# Issue #5: SmolLM2-135M at fractions 0.25 and 0.4, deeper_layers and last_layers, healed with
# LoRA and QLoRA on the same token budget (20 steps x 4 x 256 = 20,480 tokens of the offline
# C4 healing split): the offline_healing experiment. Unhealed rows: offline_gromov.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/offline_healing
.venv/bin/layerprune -m experiment=offline_healing hydra.sweep.dir=$OUT
.venv/bin/layerprune-report $OUT outputs/offline_gromov --out experiments/healing \
  --query "method in ['deeper_layers', 'last_layers'] and fraction in [0, 0.25, 0.4]" \
  --title "SmolLM2-135M: healing after block pruning"
