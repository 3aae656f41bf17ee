#!/usr/bin/env bash
# Issue #5: SmolLM2-135M at fractions 0.25 and 0.4, deeper_layers and last_layers, healed with
# LoRA and QLoRA on the same token budget (healing.steps x batch_size x seq_len = 40 x 4 x 256
# = 40,960 tokens of the offline C4 healing split), evaluated on benchmark=quick (+ C4 loss).
# The unhealed rows come from experiments/block_pruning/run.sh (same configs, healing=none).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/healing
rm -rf "$OUT"
.venv/bin/layerprune -m pruning_method=deeper_layers,last_layers fraction=0.25,0.4 \
  healing=lora,qlora hydra.sweep.dir=$OUT/healed
.venv/bin/layerprune-report $OUT outputs/block_pruning --out experiments/healing \
  --query "method in ['deeper_layers', 'last_layers', 'none'] and fraction in [0, 0.25, 0.4]" \
  --title "SmolLM2-135M: healing after block pruning"
