#!/usr/bin/env bash
# Issue #6: SmolLM2-135M, finercut/js at fractions 0.125, 0.25, 0.375 of its 60 sublayers vs
# deeper_layers at matching parameter reduction, benchmark=quick (+ offline wiki perplexity).
# CPU-sized calibration: 4 x 128 tokens of the offline Wikipedia calibration split (the
# official code uses 10 x 256 of WikiText-2 train: calibration.num_sequences=10 seq_len=256).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/finercut
rm -rf "$OUT"
.venv/bin/layerprune -m pruning_method=finercut metric=js calibration=wiki \
  calibration.num_sequences=4 calibration.seq_len=128 calibration.batch_size=4 \
  pruning_method.search_fraction=0.375 fraction=0.125,0.25,0.375 hydra.sweep.dir=$OUT/finercut
.venv/bin/layerprune-report $OUT outputs/offline_gromov --out experiments/finercut \
  --query "method in ['finercut', 'deeper_layers']" \
  --x params_removed --title "SmolLM2-135M: FinerCut vs deeper_layers"
cp "$(ls -d $OUT/finercut/*/ | tail -1)removed_sublayers.png" experiments/finercut/
cp "$(ls -d $OUT/finercut/*/ | tail -1)discrepancy_curve.png" experiments/finercut/
