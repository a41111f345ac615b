"""retrodraft inside a real vLLM engine (vLLM's CPU build, float32): token ids identical to vLLM
without speculation, memory used across requests, bad configurations refused before any engine
starts. Runs in .venv-vllm (`make test-vllm`); skipped where vllm is not installed.

Engines are shared per module (each start costs 20-40 s): per architecture one engine without
speculation, whose outputs are kept, then one with retrodraft.
"""

import gc
import json
import os
import subprocess
import sys

import pytest

vllm = pytest.importorskip("vllm")
if not hasattr(vllm, "LLM"):  # where vLLM is not installed, "vllm" finds this test folder (tests/ is on the path)
    pytest.skip("vllm is not installed (make vllm; make test-vllm)", allow_module_level=True)

from retrodraft.errors import ConfigError, IndexMismatchError, StateError  # noqa: E402
from retrodraft.vllm import speculative_config  # noqa: E402

pytestmark = pytest.mark.vllm

K = 16
MAX_TOKENS = 48
PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The capital of France is",
    "Rewrite with `rows` instead of `data`:\n\ndef total(data):\n    s = 0\n    for x in data:\n        s += x\n"
    "    return s\n\ndef total(rows):\n",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Q: What is 12 times 12?\nA:",
    "import numpy as np\n\nclass Matrix:\n    def __init__(self, rows, cols):\n        self.rows = rows\n"
    "        self.cols = cols\n        self.data = np.zeros((rows, cols))\n\n    def transpose(self):\n",
    "Once upon a time",
    "<html>\n<body>\n<ul>\n  <li>one</li>\n  <li>two</li>\n",
]


def _model_path(name):
    out = subprocess.run([sys.executable, "-m", "retrodraft.cli", "models", "path", name], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"{name} is not in the model cache (python -m retrodraft.cli models fetch {name})")
    return out.stdout.strip()


def _engine(path, spec=None):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return vllm.LLM(model=path, dtype="float32", max_model_len=1024, enforce_eager=True, max_num_seqs=8, seed=0,
                    speculative_config=spec)


def _stop(llm):
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def _ids(llm, prompts):
    params = vllm.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]


def _run(name, tmp_path_factory):
    """Outputs without speculation (batch, one at a time), then the retrodraft engine and its stats file."""
    path = _model_path(name)
    base = _engine(path)
    batch, single = _ids(base, PROMPTS), [_ids(base, [p])[0] for p in PROMPTS]
    _stop(base)
    stats = tmp_path_factory.mktemp("stats") / "stats.json"
    llm = _engine(path, speculative_config(num_speculative_tokens=K, stats=stats))
    return path, batch, single, llm, stats


@pytest.fixture(scope="module", params=["smollm2-135m", "qwen2.5-coder-0.5b"])
def arch(request, tmp_path_factory):
    path, batch, single, llm, stats = _run(request.param, tmp_path_factory)
    yield {"name": request.param, "path": path, "batch": batch, "single": single, "llm": llm, "stats": stats}
    _stop(llm)


def test_greedy_token_ids_are_vllm_s_in_a_batch_and_one_at_a_time(arch):
    llm = arch["llm"]
    assert _ids(llm, PROMPTS) == arch["batch"]
    assert [_ids(llm, [p])[0] for p in PROMPTS] == arch["single"]
    assert arch["batch"] == arch["single"]  # float32: batching itself changes nothing


def test_memory_across_requests_is_used_and_requests_are_followed_by_the_runner(arch):
    llm = arch["llm"]
    fresh = "A list of the planets, one per line, with their order from the sun:\n"
    _ids(llm, [fresh])
    _ids(llm, [fresh])
    _ids(llm, ["Hi"])  # its first step ends the repeat, which writes the stats
    stats = json.loads(arch["stats"].read_text())
    assert stats["runner_adapter"], "vLLM's runner internals changed: update retrodraft/vllm/_runner.py"
    first, repeat = stats["finished"][-2], stats["finished"][-1]
    assert repeat["accepted"] > first["accepted"] and repeat["steps"] < first["steps"], stats["finished"][-2:]
    assert stats["accepted"] > 0 and stats["mean_accepted_length"] > 1.0


def test_bad_configurations_are_refused_in_one_line_before_an_engine_starts(tmp_path):
    with pytest.raises(ConfigError) as e:
        speculative_config(drafters=["recycling"])
    assert "\n" not in str(e.value)
    smol, qwen = _model_path("smollm2-135m"), _model_path("qwen2.5-coder-0.5b")
    index = _index_for(qwen, tmp_path)
    with pytest.raises(IndexMismatchError) as e:
        speculative_config(index=index, model=smol)
    assert "\n" not in str(e.value)
    speculative_config(index=index, model=qwen)  # its own tokenizer: accepted
    state = _state_for(qwen, tmp_path)
    with pytest.raises(StateError) as e:
        speculative_config(state=state, model=smol)
    assert "\n" not in str(e.value)


def _index_for(model, tmp_path):
    from transformers import AutoTokenizer

    from retrodraft.index.build import build_index

    tok = AutoTokenizer.from_pretrained(model)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("def add(a, b):\n    return a + b\n" * 20)
    build_index([str(docs)], tok, tmp_path / "index", workers=1, progress=False)
    return tmp_path / "index"


def _state_for(model, tmp_path):
    from transformers import AutoTokenizer

    from retrodraft.drafters.history import History
    from retrodraft.vllm._state_io import save_history

    h = History()
    h.memory.add([1, 2, 3, 4])
    save_history(tmp_path / "state", AutoTokenizer.from_pretrained(model), h)
    return tmp_path / "state"
