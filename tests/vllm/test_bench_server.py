"""``benchmarks/vllm_bench.py --server`` end to end on SmolLM2-135M float32: two `vllm serve` runs
(no speculation, retrodraft) on 2 prompts of 16 tokens, their rows in results.json and report.md.
Runs in .venv-vllm (`make test-vllm`); skipped without vllm/openai."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
if not hasattr(vllm, "LLM"):  # where vLLM is not installed, "vllm" finds this test folder (tests/ is on the path)
    pytest.skip("vllm is not installed (make vllm; make test-vllm)", allow_module_level=True)
pytest.importorskip("openai")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import vllm_bench  # noqa: E402

pytestmark = pytest.mark.vllm


def test_server_mode_runs_both_methods_and_reports_them(tmp_path):
    if subprocess.run([sys.executable, "-m", "retrodraft.cli", "models", "path", "smollm2-135m"],
                      capture_output=True).returncode != 0:
        pytest.skip("smollm2-135m is not in the model cache")
    out = tmp_path / "out"
    argv = ["--model", "smollm2-135m", "--dtype", "float32", "--suite", "json", "--requests", "2",
            "--max-new-tokens", "16", "--max-model-len", "1024", "--concurrency", "2",
            "--methods", "none,retrodraft", "--server", "--out", str(out)]
    assert vllm_bench.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    none, retro = (res["methods"][m]["runs"]["server:2"] for m in ("none", "retrodraft"))
    assert "error" not in res["methods"]["none"] and "error" not in res["methods"]["retrodraft"]
    for run in (none, retro):
        assert run["mode"] == "server" and run["concurrency"] == 2 and len(run["outputs"]) == 2
        assert run["tokens"] == sum(len(o) for o in run["outputs"]) > 0
        assert all(len(o) <= 16 for o in run["outputs"])
        assert 0 < run["latency_p50_s"] <= run["latency_p90_s"] <= run["seconds"]
    assert retro["outputs"] == none["outputs"]  # lossless behind the server too (float32)
    assert none["mean_acceptance_length"] is None and none["proposer_stats"] is None
    assert retro["drafts"] > 0 and retro["mean_acceptance_length"] >= 1
    own = retro["proposer_stats"]  # bracketed by the 1-token requests: the run's 2 and the first of them
    assert own["requests"] == 3 and own["steps"] > 0 and own["draft_ms_per_step"] > 0
    report = (out / "report.md").read_text()
    assert "| server | retrodraft | 2 |" in report and "Offline:" not in report
