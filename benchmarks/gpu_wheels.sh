#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on a GPU machine without internet, into .whl/
# (ignored by git): run here, from the repository root, then carry .whl/ with the checkout.
#
# The image seen on the lent H100 / H200 machines (2026-11: Python 3.12, torch 2.11 for CUDA 13,
# transformers 5.17, accelerate, peft, pandas, pyarrow, huggingface-hub 1.33) lacks the rest
# of what the GPU tier imports: these, at this venv's versions (the versions tested here).
# transformers >= 5.24 (pyproject) needs huggingface-hub 2.x, which needs httpx2. bitsandbytes
# keeps its CPU and CUDA 13 libraries only (the wheel is 43 MB with every CUDA version's; the
# carried checkout may hold 64 MiB in all).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
PACKAGES="transformers huggingface-hub httpx2 httpcore2 truststore regex bitsandbytes peft accelerate
  hydra-core omegaconf antlr4-python3-runtime lm_eval datasets evaluate dill multiprocess sqlitedict
  pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet word2number
  more-itertools"
PINS=$($PY - $PACKAGES <<'EOF'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))
EOF
)
mkdir -p .whl
for pin in $PINS; do  # a wheel for the GPU machine's Python, or one built here (pure Python)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" 2>/dev/null ||
    python3 -m pip wheel -q --no-deps -w .whl "$pin"
done
# bitsandbytes: drop the libraries of other CUDA / ROCm / XPU versions (and their RECORD lines)
$PY - .whl/bitsandbytes-*.whl <<'EOF'
import re, sys, zipfile
from pathlib import Path

path = Path(sys.argv[1])
keep = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
drop = lambda name: "libbitsandbytes_" in name and not keep.search(name)  # noqa: E731
with zipfile.ZipFile(path) as z:
    items = [(i, z.read(i)) for i in z.infolist() if not drop(i.filename)]
tmp = path.with_suffix(".tmp")
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for info, data in items:
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(ln for ln in lines if not drop(ln.split(",")[0])).encode()
        z.writestr(info, data)
tmp.replace(path)
EOF
du -ch .whl/*.whl | tail -1
