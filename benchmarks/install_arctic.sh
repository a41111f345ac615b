#!/usr/bin/env bash
# Install SuffixDecoding's own implementation (arctic-inference) as a benchmark peer.
#
#     bash benchmarks/install_arctic.sh [PYTHON]      # default: .venv/bin/python
#
# arctic-inference ships only a source distribution on PyPI. Its setup.py imports torch and builds
# two native extensions: the CUDA custom ops (only with ARCTIC_INFERENCE_PRECOMPILED_OPS=1, so
# skipped here) and `arctic_inference.suffix_decoding._C`, a plain C++20 suffix tree bound with
# nanobind - no CUDA. It is built against the installed (CPU) torch without build isolation; the
# one missing build tool, nanobind, goes into a throw-away folder, not the environment. The gRPC
# stubs of its embedding server fail to generate without grpcio-tools; setup.py only warns, and
# the benchmark does not use them. Nothing of arctic-inference's own dependencies (vLLM) is
# installed: `--no-deps`.
#
# Needs: cmake >= 3.18, a C++20 compiler, ninja (optional), Python headers. It stays out of
# retrodraft's dependencies: `retrodraft bench --methods suffix` says how to install it when absent.
set -euo pipefail

PY=${1:-.venv/bin/python}
PY=$(command -v "$PY" || echo "$PY")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
ARCTIC_VERSION=${ARCTIC_VERSION:-0.3.0}
NANOBIND_VERSION=2.9.2   # arctic-inference's pyproject.toml pins this version

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PY" -m pip install --quiet --no-deps --target "$tools" "nanobind==$NANOBIND_VERSION"

# CMake must run the nanobind lookup with the same interpreter that pip builds for.
PYTHONPATH="$tools${PYTHONPATH:+:$PYTHONPATH}" \
CMAKE_ARGS="-DPython_EXECUTABLE=$PY" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-binary arctic-inference \
    "arctic-inference==$ARCTIC_VERSION"

"$PY" - <<'EOF'
from arctic_inference.suffix_decoding import SuffixDecodingCache
import numpy as np
c = SuffixDecodingCache(max_tree_depth=64)
c.start_request("check", np.array([1, 2, 3, 4, 1, 2, 3], dtype=np.int32))
# The full context is never matched (match lengths 1 .. len(context) - 1): [9, 1, 2] matches [1, 2].
d = c.speculate("check", np.array([9, 1, 2], dtype=np.int32), max_spec_tokens=4)
assert d.token_ids[:2] == [3, 4], d
print("arctic-inference SuffixDecodingCache works:", d.token_ids)
EOF
