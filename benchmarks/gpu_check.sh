#!/usr/bin/env bash
# The prepared GPU run: the paper profile's code path end to end on one GPU at reduced length
# (benchmarks/gpu_check.py: SD-2.1-sized UNet at 512 px in bf16, streamed cache, 200 fairbo steps
# with BO events, 64 DDIM samples, EfficientNet-B1 at 200 px). Prints images/s, steps/s, MFU and
# peak GPU memory per stage; exits non-zero on any error. Not yet run on a GPU for this repository, so its length there is unmeasured.
#
# The exact device command (device tool `run`, from the repository root):
#   command:   bash benchmarks/gpu_check.sh
#   carry:     [".whl"]
#   timeout_s: 600
# The GPU machine has torch, transformers, accelerate, botorch, torchmetrics, pandas and
# scikit-learn but not diffusers, so .whl/ must hold its wheel (pure Python), made here once:
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1
#   echo /.whl/ >> .git/info/exclude
# gpu_check.csv and gpu_check.json come back in $OUT (benchmarks/results/ when $OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers" 2>/dev/null; then
    ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check.sh: diffusers is missing and .whl/ holds no wheels (see above)" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"
timeout 560 python3 benchmarks/gpu_check.py --out "${OUT:-benchmarks/results}" --work /tmp/gpu_check_work "$@"
