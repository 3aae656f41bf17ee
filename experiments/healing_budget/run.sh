#!/usr/bin/env bash
# Issue #29's healing-budget experiment, every job in the order it was run (see README.md).
# Hours on 2 CPU cores: the budget points that are cheap for every arm first, the 1M-token
# points last (each continues its arm's 327,680-token snapshot). A relaunch skips what the run
# store holds, and a healing run killed midway resumes from its last snapshot.
set -euo pipefail
LP=${LAYERPRUNE:-layerprune}
# SmolLM2-135M-Instruct: unpruned, unhealed at 1/4, healed to 20k / 80k / 320k tokens
$LP experiment=healing_budget pruning_method=none fraction=0 healing=none
for method in deeper_layers last_layers; do
  $LP experiment=healing_budget healing=none pruning_method=$method
done
$LP -m experiment=healing_budget healing.steps=10,40,160
# Qwen2.5-Coder-0.5B-Instruct: unpruned, deeper_layers unhealed, CE vs KD at 20k and 160k
$LP experiment=healing_budget_qwen pruning_method=none fraction=0 healing=none
$LP experiment=healing_budget_qwen healing=none
$LP -m experiment=healing_budget_qwen
# SmolLM2: every arm on to 1,003,520 tokens
$LP -m experiment=healing_budget healing.steps=490
