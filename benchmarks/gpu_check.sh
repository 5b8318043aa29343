#!/usr/bin/env bash
# On a lent GPU machine: install the pinned environment (CUDA torch instead of the CPU pin) and run
# the SD-2.1-sized training check. Prints images/s and MFU; leaves benchmarks/results/gpu_check.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install -q --upgrade pip
.venv-gpu/bin/pip install -q torch $(grep -E '^(diffusers|transformers|tokenizers|accelerate|safetensors|huggingface_hub|numpy|pandas|pyyaml|tqdm)==' requirements.txt)
timeout 300 .venv-gpu/bin/python benchmarks/gpu_check.py "$@"
