"""`vllm serve` with retrodraft on 127.0.0.1: 4 concurrent OpenAI clients get what the server
without speculation returns. Runs in .venv-vllm (`make test-vllm`); skipped without vllm/openai."""

import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
if not hasattr(vllm, "LLM"):  # where vLLM is not installed, "vllm" finds this test folder (tests/ is on the path)
    pytest.skip("vllm is not installed (make vllm; make test-vllm)", allow_module_level=True)
openai = pytest.importorskip("openai")

from retrodraft.vllm import serve_command  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _vllm_server import free_port, start, stop  # noqa: E402  (shared with vllm_bench.py --server)

pytestmark = pytest.mark.vllm

PROMPTS = [
    "def is_prime(n):\n",
    "The three primary colours are",
    "for i in range(10):\n    print(i)\nfor j in range(10):\n",
    "JSON list of three fruits with their colours:\n[",
]


def _model():
    out = subprocess.run([sys.executable, "-m", "retrodraft.cli", "models", "path", "smollm2-135m"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("smollm2-135m is not in the model cache")
    return out.stdout.strip()


def _serve(args, log):
    """Start ``args`` (a `python -m ...` server line, split) on a free port; wait until it answers."""
    cmd = [sys.executable] + args[1:] + ["--host", "127.0.0.1", "--port", str(free_port()), "--dtype", "float32",
                                   "--max-model-len", "1024", "--enforce-eager", "--max-num-seqs", "8", "--seed", "0"]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", PYTHONPATH=os.getcwd())
    try:
        return start(cmd, log, env, timeout=240)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None


def _complete(client, model):
    def one(p):
        r = client.completions.create(model=model, prompt=p, max_tokens=40, temperature=0, timeout=300)
        return r.choices[0].text

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, PROMPTS))


def test_four_concurrent_clients_get_the_plain_server_s_outputs(tmp_path):
    model = _model()
    stats = tmp_path / "stats.json"
    # the documented line for vLLM's CPU build
    spec_args = shlex.split(serve_command(model, cpu_build=True, num_speculative_tokens=16, stats=stats))
    outputs = []
    for args in (["python", "-m", "vllm.entrypoints.openai.api_server", "--model", model], spec_args):
        with open(tmp_path / f"serve-{len(outputs)}.log", "w") as log:
            proc, client = _serve(args, log)
            try:
                outputs.append(_complete(client, model))
            finally:
                stop(proc)
    assert outputs[0] == outputs[1]
    assert all(len(t) > 0 for t in outputs[0])
    drafted = json.loads(stats.read_text())
    assert drafted["accepted"] > 0 and drafted["runner_adapter"]
