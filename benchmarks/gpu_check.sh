#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes): CUDA exactness of every drafter and budget, then the
# cost curve T=1..128 and per-step overhead on Qwen2.5-shaped random-weight models.
# Usage on a GPU machine, from the repository root:  OUT=some/dir benchmarks/gpu_check.sh
# Needs a python with CUDA torch and transformers; retrodraft is taken from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-benchmarks/results/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RETRODRAFT_COST_CACHE="$OUT/cost-cache"
"$PY" -c "import torch, transformers, numba; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 470 "$PY" benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
