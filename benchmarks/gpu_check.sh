#!/usr/bin/env bash
# The GPU check (issue #41, items 6 and 7), tiny and random-weight models, about 5 minutes on one
# H100 (every step has a time limit; the whole stays under 8 minutes):
#   1. the GPU tier, `pytest -m gpu tests/test_gpu.py`: every stage of a job in bf16 on one GPU
#      and on a model split over cuda:0 and the CPU (scan, FinerCut js, ppl, LoRA, QLoRA with
#      gradient checkpointing, KD, perplexity, the shared-prefix scorer against stock lm-eval,
#      speed), asserted against the CPU float32 reference; no built assets needed;
#   2. benchmarks/speed_memory.py: each model's memory alone, per device, at SmolLM2-135M's
#      shape (bf16, 1/4 of the blocks removed), one GPU and split, beside the allocator's
#      shared peak (what the speed stage read before);
#   3. benchmarks/pruning_speed.py --random at the peers' sizes: SmolLM2-135M's shape, then
#      Qwen2.5-0.5B's if time is left.
# Run from the repository root on the GPU machine: `bash benchmarks/gpu_check.sh [OUT_DIR]`
# (default $OUT, else outputs/gpu_check). Each step's log and summary.md land in OUT_DIR;
# summary.md is printed at the end: paste it into benchmarks/README.md ("The GPU check").
# Where the machine has no internet, carry the packages its image lacks as wheels in .whl/,
# made here by `bash benchmarks/gpu_wheels.sh` (34 MB); they are installed into /tmp/site.
# GPU_CHECK_DEVICE=cpu: a dry run of this script on a CPU machine (the tier's dry run, tiny
# benchmark sizes); PYTEST_ARGS: more pytest arguments (e.g. `-k split`).
set -uo pipefail
OUT_DIR=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
SITE=
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  SITE=:/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD$SITE PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
LIMIT=430  # seconds for the three steps; the install and the summary take ~30 s more
DEVICE=${GPU_CHECK_DEVICE:-cuda:0}
SPEED=()  # the benchmarks' own sizes (the peers')
MEMORY=()
if [[ $DEVICE == cpu ]]; then
  export LAYERPRUNE_TEST_DEVICE=cpu
  SPEED=(speed.prefill_batches=[1] speed.prefill_length=16 speed.decode_batches=[1]
    speed.prompt_length=4 speed.new_tokens=4 speed.rounds=1 speed.min_run_time=0.05)
  MEMORY=(--dtype float32 speed.decode_batches=[1] speed.prompt_length=4 speed.new_tokens=4)
fi

{
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
    '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU',
    '| transformers', transformers.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(date -u '+%Y-%m-%d %H:%M UTC')"
} 2>&1 | tee "$OUT_DIR/device.txt"

SECONDS=0
timeout 300 $PY -m pytest -q -m gpu -p no:cacheprovider -rA --durations=10 tests/test_gpu.py \
  ${PYTEST_ARGS:-} > "$OUT_DIR/pytest.log" 2>&1
echo "pytest exit $? after ${SECONDS}s" | tee -a "$OUT_DIR/pytest.log"
timeout 90 $PY -m benchmarks.speed_memory --device "$DEVICE" "${MEMORY[@]}" \
  > "$OUT_DIR/speed_memory.log" 2>&1
echo "speed_memory exit $? after ${SECONDS}s" | tee -a "$OUT_DIR/speed_memory.log"
for model in smollm2-135m qwen2.5-0.5b; do
  left=$((LIMIT - SECONDS))
  if ((left < 60)); then
    echo "pruning_speed $model: not run (${left}s left)" | tee "$OUT_DIR/pruning_speed_$model.log"
    continue
  fi
  timeout "$left" $PY benchmarks/pruning_speed.py "${SPEED[@]}" --random --device "$DEVICE" \
    --dtype bfloat16 --speed paper --models "$model" > "$OUT_DIR/pruning_speed_$model.log" 2>&1
  echo "pruning_speed $model exit $? after ${SECONDS}s" | tee -a "$OUT_DIR/pruning_speed_$model.log"
done

# the summary: what benchmarks/README.md needs; progress bars and library warnings left out
clean() {
  tr '\r' '\n' < "$1" | sed -E 's/^[^|]*[0-9]+%\|[^]]*\]//' |
    grep -v -E 'Warning|warn\(|offloaded to the|^\s*$'
}
{
  echo "#### $(head -1 "$OUT_DIR/device.txt")"
  echo
  echo '```'
  tail -n +2 "$OUT_DIR/device.txt"
  echo
  grep -E '^(PASSED|FAILED|ERROR|SKIPPED)|passed|failed|pytest exit' "$OUT_DIR/pytest.log"
  sed -n '/slowest/,/^$/p' "$OUT_DIR/pytest.log"
  echo
  clean "$OUT_DIR/speed_memory.log"
  for model in smollm2-135m qwen2.5-0.5b; do
    echo
    clean "$OUT_DIR/pruning_speed_$model.log" | grep -v '^sizes:'
  done
  echo '```'
} > "$OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
