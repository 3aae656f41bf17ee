#!/usr/bin/env bash
# Issues #6/#7: SmolLM2-135M, finercut (js) vs deeper_layers (angular) vs shortgpt (block
# influence) at fractions 0.125, 0.25, 0.375, benchmark=quick (ARC-E/PIQA/WinoGrande, offline
# wiki perplexity, C4 loss): the offline_finercut experiment + its unpruned point. Methods are
# compared at matching parameter reduction (x axis: parameters removed), since a FinerCut
# fraction counts sublayers and an attention sublayer holds fewer weights than an MLP.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs/offline_finercut
.venv/bin/layerprune experiment=offline_finercut pruning_method=none fraction=0 \
  hydra.run.dir=$OUT/unpruned
.venv/bin/layerprune -m experiment=offline_finercut hydra.sweep.dir=$OUT/sweep
.venv/bin/layerprune-report $OUT --out experiments/finercut --x params_removed \
  --title "SmolLM2-135M: FinerCut vs block pruning (no healing)"
JOB="$(.venv/bin/python -c "
import json, pathlib, sys
for p in pathlib.Path('$OUT/sweep').glob('*/results.json'):
    d = json.loads(p.read_text())
    if d['config']['pruning_method']['name'] == 'finercut' and d['fraction'] == 0.375:
        print(p.parent)")"
cp "$JOB/removed_sublayers.png" "$JOB/discrepancy_curve.png" experiments/finercut/

# Issue #15: ppl one_shot / iterative in the FinerCut comparison (same calibration: 4 x 128
# Wikipedia tokens; one search to 0.375 per mode), joined to the committed rows.
.venv/bin/layerprune -m experiment=offline_finercut pruning_method=ppl \
  pruning_method.mode=one_shot,iterative hydra.sweep.dir=$OUT/ppl
.venv/bin/layerprune-report experiments/finercut/all.parquet $OUT/ppl --out experiments/finercut \
  --x params_removed --title "SmolLM2-135M: FinerCut vs block pruning (no healing)"
