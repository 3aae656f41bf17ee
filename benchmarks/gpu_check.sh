#!/usr/bin/env bash
# The CUDA checks (issues #30 / #28), tiny models, a few minutes on one GPU:
#   1. `pytest -m gpu` (tests/test_gpu.py): the speed stage's allocator peak, pruned models'
#      KV-cache generation on CUDA, bf16 against float32, QLoRA's nf4 reload training, and
#      lm-eval's CLI with the shared-prefix scorer against stock on --device cuda (1e-4);
#   2. pruning_speed.py on random weights of SmolLM2-135M's and Qwen2.5-0.5B's shapes, bf16,
#      the peers' sizes: measured prefill / decode speedups against the FLOP / byte ideal.
# Run from the repository root on the GPU machine: `bash benchmarks/gpu_check.sh [OUT_DIR]`.
# Where the machine has no internet, carry the packages its image lacks as wheels in .whl/
# (hydra-core, omegaconf, antlr4-python3-runtime, bitsandbytes, peft, lm-eval and its
# dependencies), fetched here with `pip download --only-binary=:all: --python-version 3.12 ...`.
set -euo pipefail
OUT_DIR=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT_DIR/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT_DIR/device.txt"
$PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT_DIR/pytest.log"
$PY benchmarks/pruning_speed.py --random --device cuda --dtype bfloat16 --speed paper \
  2>&1 | tee "$OUT_DIR/pruning_speed.log"
