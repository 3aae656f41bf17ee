#!/usr/bin/env bash
# Issue #31: re-run a model's cross-family jobs on the five 0-shot tasks with per-item logging
# (into a separate store, no speed stage), then copy the items into the committed jobs whose
# accuracies they reproduce (add_items.py). The paired claims read those items. Resumable: a
# job in the separate store is skipped. Order: what the paired claims need first.
#   bash experiments/cross_family/rescore_items.sh MODEL [STEP...]   (steps: see below)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?model name: smollm2-135m, gemma3-270m or qwen2.5-0.5b}
shift
STEPS=${*:-unpruned blocks healing shortgpt}  # Gemma3: add healing38
OUT=outputs/cross_family_items
# ITEMS_TASKS=boolq re-runs BoolQ alone (its constant answers; add_items.py adds its items
# to the jobs' others)
case ${ITEMS_TASKS:-five} in
  five) TASKS="benchmark.tasks=[{name:arc_easy,num_fewshot:0,limit:200},{name:arc_challenge,num_fewshot:0,limit:200},{name:piqa,num_fewshot:0,limit:200},{name:winogrande,num_fewshot:0,limit:200},{name:hellaswag,num_fewshot:0,limit:200}]" ;;
  boolq) TASKS="benchmark.tasks=[{name:boolq,num_fewshot:0,limit:200}]"; EXTRA="benchmark.perplexity=[]" ;;
  *) echo "ITEMS_TASKS: five or boolq" >&2; exit 2 ;;
esac
run() { .venv/bin/layerprune "$@" model="$MODEL" store_dir="$OUT/runs" speed=none "$TASKS" ${EXTRA:-}; }
for step in $STEPS; do
  case $step in
    unpruned) run experiment=cross_family pruning_method=none fraction=0 hydra.run.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/unpruned" ;;
    blocks) run -m experiment=cross_family pruning_method=deeper_layers,last_layers hydra.sweep.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/blocks" ;;
    healing) run -m experiment=cross_family_healing hydra.sweep.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/healing" ;;
    healing38) # Gemma3 only (run_all.sh): at 1/4 and 1/2 its two methods remove the same blocks
      run -m experiment=cross_family_healing fraction=0.375 hydra.sweep.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/healing38" ;;
    shortgpt) run -m experiment=cross_family pruning_method=shortgpt hydra.sweep.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/shortgpt" ;;
    finercut) run -m experiment=cross_family_finercut hydra.sweep.dir="$OUT/$MODEL/${ITEMS_TASKS:-five}/finercut" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
.venv/bin/python experiments/cross_family/add_items.py "$OUT/runs"
