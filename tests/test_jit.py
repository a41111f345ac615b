"""numba's on-disk cache: a stale index (pickled types that moved) is compiled again, never an error."""

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import retrodraft
from retrodraft.jit import _TolerantIndex

ROOT = Path(__file__).resolve().parents[1]

# Plants, for every cached kernel of the automaton, an index of this numba version whose pickled
# signatures name retrodraft.memory.Arrays - where Arrays lived before it moved to automaton.py.
PLANT_AND_CALL = r"""
import json, os, pickle
import numba
import numpy as np
from numba.core.caching import IndexDataCacheFile
from retrodraft import automaton

kernels = [v for v in vars(automaton).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
stale = pickle.dumps(numba.__version__) + b"\x80\x02cretrodraft.memory\nArrays\n."
raised = []
for k in kernels:
    index = k._cache._cache_file
    os.makedirs(index._cache_path, exist_ok=True)
    with open(index._index_path, "wb") as f:
        f.write(stale)
    try:
        IndexDataCacheFile._load_index(index)  # numba's own reader
    except AttributeError as e:
        raised.append(str(e))
sa = automaton.SuffixAutomaton()
sa.add(np.array([5, 6, 7, 5, 6, 8], np.int64))
m = sa.match(np.array([9, 5, 6], np.int64))
def rewritten(k):  # read by numba's own reader; kernels the calls did not compile keep the planted index
    try:
        return bool(IndexDataCacheFile._load_index(k._cache._cache_file))
    except AttributeError:
        return False
rewritten = [k.__name__ for k in kernels if rewritten(k)]
print(json.dumps({"kernels": len(kernels), "raised": raised, "match": m.length, "rewritten": rewritten}))
"""


def test_a_stale_cache_index_is_compiled_again_and_rewritten(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PLANT_AND_CALL], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # the planted index breaks numba's own reader exactly as the moved type did
    assert got["kernels"] >= 5 and len(got["raised"]) == got["kernels"]
    assert all("Can't get attribute 'Arrays'" in e for e in got["raised"])
    # the automaton still works, and the kernels it called have a readable index again
    assert got["match"] == 2 and len(got["rewritten"]) >= 2


def _package_modules():
    for info in pkgutil.walk_packages(retrodraft.__path__, "retrodraft."):
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # an optional dependency (vllm, arctic-inference) missing
            continue


def test_every_cached_kernel_of_the_package_tolerates_a_stale_index():
    numba = pytest.importorskip("numba")
    kernels = [(m.__name__, name) for m in _package_modules() for name, v in vars(m).items()
               if isinstance(v, numba.core.registry.CPUDispatcher) and v.__module__ == m.__name__]
    assert len(kernels) >= 30
    plain = [f"{mod}.{name}" for mod, name in kernels
             if not isinstance(getattr(getattr(importlib.import_module(mod), name)._cache, "_cache_file", None),
                               _TolerantIndex)]
    assert plain == [], "declare cached kernels with retrodraft.jit.njit, not numba.njit(cache=True)"
