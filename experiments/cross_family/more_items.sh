#!/usr/bin/env bash
# Issue #31 item 4: the verdicts that are "cannot tell" (or fragile) for lack of items, re-read
# on 1,000 items per task. Re-runs a model's unpruned, deeper_layers and last_layers jobs on
# the three tasks the claims read (ARC-Easy, PIQA, HellaSwag, 0-shot; lm-eval's --limit takes
# the first N documents, so the 200 items of the committed jobs are the first 200 of these and
# come from the request cache) into their own store, then builds the same claims from them
# (experiments/cross_family/more_items/: claims.md, table.md, runs/). No C4 loss (the
# committed jobs have it). Resumable.
#   bash experiments/cross_family/more_items.sh MODEL [FRACTIONS] [HEALED_FRACTIONS]
#     gemma3-270m 0.125,0.375 0.375    (its unhealed "cannot tell" and the healed gap at 3/8)
#     smollm2-135m 0.125,0.25,0.375,0.5 (its "holds, fragile")
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?model name: smollm2-135m, gemma3-270m or qwen2.5-0.5b}
FRACTIONS=${2:-0.125,0.25,0.375,0.5}
N=${ITEMS:-1000}
DIR=experiments/cross_family/more_items
OUT=outputs/cross_family_more/$MODEL
TASKS="benchmark.tasks=[{name:arc_easy,num_fewshot:0,limit:$N},{name:piqa,num_fewshot:0,limit:$N},{name:hellaswag,num_fewshot:0,limit:$N}]"
run() { .venv/bin/layerprune "$@" model="$MODEL" store_dir="$DIR/runs" speed=none "$TASKS" "benchmark.perplexity=[]"; }
step() { local start=$SECONDS; "$@"; echo "[wall] $((SECONDS - start)) s: $MODEL ${*:2:3}" | tee -a "$DIR/wall.log"; }
mkdir -p "$DIR"
step run experiment=cross_family pruning_method=none fraction=0 hydra.run.dir="$OUT/unpruned"
step run -m experiment=cross_family pruning_method=deeper_layers,last_layers \
  fraction="$FRACTIONS" hydra.sweep.dir="$OUT/blocks"
if [[ -n ${3:-} ]]; then
  step run -m experiment=cross_family_healing fraction="$3" hydra.sweep.dir="$OUT/healing"
fi
.venv/bin/python -m layerprune.studies.cross_family "$DIR/runs" --out "$DIR" > /dev/null
