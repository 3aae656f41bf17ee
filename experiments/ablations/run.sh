#!/usr/bin/env bash
# Issue #7: the CPU-sized ablations on SmolLM2-135M at fraction 0.2, benchmark=quick.
#   offline_ablation_granularity: FinerCut (js) with block / attention / mlp / sublayer candidates
#   offline_ablation_metric: the criterion that chooses (deeper_layers: angular, cosine, l2;
#     shortgpt: block influence; finercut: js, kl, angular, l2)
# Calibration for all: 4 x 128 tokens of the offline Wikipedia calibration split, the same as
# offline_finercut, so the FinerCut js/sublayer search is one cached order for all three.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=outputs
.venv/bin/layerprune -m experiment=offline_ablation_granularity \
  hydra.sweep.dir=$OUT/offline_ablation_granularity
.venv/bin/layerprune -m experiment=offline_ablation_metric \
  hydra.sweep.dir=$OUT/offline_ablation_metric
for name in granularity metric; do
  .venv/bin/layerprune-report $OUT/offline_ablation_$name $OUT/offline_finercut/unpruned \
    --out experiments/ablations/$name --title "SmolLM2-135M, fraction 0.2: $name ablation"
done

# Issue #15: ppl one_shot / iterative added to the metric ablation (same calibration), joined
# to the committed rows without rerunning them.
.venv/bin/layerprune -m experiment=offline_ablation_metric combo=ppl_one_shot,ppl_iterative \
  hydra.sweep.dir=$OUT/offline_ablation_metric_ppl
.venv/bin/layerprune-report experiments/ablations/metric/all.parquet \
  $OUT/offline_ablation_metric_ppl --out experiments/ablations/metric \
  --title "SmolLM2-135M, fraction 0.2: metric ablation"
