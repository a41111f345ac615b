"""The `vllm serve` half of ``vllm_bench.py --server``: one OpenAI-compatible server per run.

Start ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` command of vLLM's CPU build
exits at start) on 127.0.0.1 with the offline run's engine settings and speculative config, wait
until it answers, warm it up, send the prompts (token ids) through the ``openai`` client with
``concurrency`` requests in flight, and read vLLM's Prometheus counters from ``/metrics`` before
and after. Also used by tests/vllm/test_serve.py (:func:`free_port`, :func:`start`, :func:`stop`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

# vLLM's speculative-decoding counters (prometheus_client adds ``_total`` to a counter's name).
SPEC_COUNTERS = ("spec_decode_num_drafts", "spec_decode_num_accepted_tokens", "spec_decode_num_draft_tokens")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model: str, port: int, *, dtype: str, max_model_len: int, max_num_seqs: int,
                   spec: dict | None, seed: int = 0) -> list[str]:
    """The server's argv: the offline run's engine (``LLM(model, dtype, max_model_len,
    enforce_eager=True, max_num_seqs, seed)``) and the same ``speculative_config`` dict.

    ``--generation-config vllm``: the offline run passes its own ``SamplingParams``, so the model's
    ``generation_config.json`` (a repetition penalty, say) must not become the server's defaults.
    """
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--enforce-eager", "--max-num-seqs", str(max_num_seqs), "--seed", str(seed),
           "--generation-config", "vllm"]
    if spec is not None:
        cmd += ["--speculative-config", json.dumps(spec)]
    return cmd


def start(cmd: list[str], log: IO, env: dict | None = None, timeout: float = 300):
    """Start the server ``cmd`` (with ``--port``) in its own session; return ``(process, client)``
    once ``GET /v1/models`` answers. Raises RuntimeError if it exits or does not answer in time."""
    import openai

    port = cmd[cmd.index("--port") + 1]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}; see {log.name}")
        try:
            client.models.list()
            return proc, client
        except openai.APIConnectionError:
            time.sleep(1)
    stop(proc)
    raise RuntimeError(f"vllm serve did not answer in {timeout:.0f} s; see {log.name}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server, then every process it started (they share its process group)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the server shuts its engine down itself
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def parse_metrics(text: str) -> dict[str, float]:
    """vLLM's speculative-decoding counters in a Prometheus ``/metrics`` text, summed over label sets.

    ``vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 12.0`` -> ``{"spec_decode_num_drafts": 12.0}``;
    ``_created`` samples and other metrics are skipped; a counter never exported (no speculation) is absent.
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:spec_decode_num_"):
            continue
        name, value = line.rsplit(None, 1)
        name = name.split("{", 1)[0].removeprefix("vllm:")
        if not name.endswith("_total") or name.removesuffix("_total") not in SPEC_COUNTERS:
            continue
        key = name.removesuffix("_total")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def metrics_text(client) -> str:
    """The server's ``GET /metrics`` (Prometheus text format)."""
    import httpx

    base = str(client.base_url).rstrip("/").removesuffix("/v1")
    return httpx.get(f"{base}/metrics", timeout=30).text


def _metrics(client) -> dict[str, float]:
    return parse_metrics(metrics_text(client))


def _complete(client, model: str, prompt: list[int], max_tokens: int) -> dict:
    t = time.perf_counter()
    r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, timeout=3600,
                                  extra_body={"return_token_ids": True})
    seconds = time.perf_counter() - t
    choice = r.choices[0]
    return {"seconds": seconds, "tokens": r.usage.completion_tokens, "token_ids": list(choice.token_ids),
            "finish_reason": choice.finish_reason}


def _stats(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def measure(client, model: str, prompts: list[list[int]], concurrency: int, max_tokens: int,
            warmup: list[int], stats: Path | None = None) -> dict:
    """Send ``prompts`` (token ids, in order) with ``concurrency`` requests in flight, greedy.

    ``warmup``: a short prompt sent first (8 tokens), as the offline run does.
    Returns the run's wall clock (first send to last answer), ``tok_s`` (usage.completion_tokens
    over it), per-request latencies (mean, p50, p90), vLLM's counters over the run (mean acceptance
    length = 1 + accepted / drafts) and, with ``stats`` (retrodraft's proposer stats file), the
    proposer's steps and drafting seconds over the run. The proposer notices a request's end at
    its next step and only then writes the file, so a 1-token request after the warm-up and another
    after the run (once the counters are read) mark both ends; the first one's step (a chain drafted,
    never verified) is the only step counted that is not the run's.
    """
    _complete(client, model, warmup, 8)
    if stats is not None:
        _complete(client, model, warmup, 1)
    own0 = _stats(stats)
    before = _metrics(client)
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(lambda p: _complete(client, model, p, max_tokens), prompts))
    seconds = time.perf_counter() - t
    after = _metrics(client)
    own = None
    if stats is not None:
        _complete(client, model, warmup, 1)
        own = _own_stats(own0, _stats(stats))
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in SPEC_COUNTERS}
    drafts, acc = int(d["spec_decode_num_drafts"]), int(d["spec_decode_num_accepted_tokens"])
    lat = sorted(x["seconds"] for x in done)
    tokens = sum(x["tokens"] for x in done)
    return {"mode": "server", "concurrency": concurrency, "seconds": seconds, "tokens": tokens,
            "tok_s": tokens / seconds, "mean_acceptance_length": 1 + acc / drafts if drafts else None,
            "drafts": drafts, "accepted": acc, "drafted": int(d["spec_decode_num_draft_tokens"]),
            "latency_mean_s": sum(lat) / len(lat), "latency_p50_s": _quantile(lat, 0.5),
            "latency_p90_s": _quantile(lat, 0.9), "outputs": [x["token_ids"] for x in done],
            "requests": [{"seconds": x["seconds"], "tokens": x["tokens"], "finish_reason": x["finish_reason"]}
                         for x in done], "proposer_stats": own}


def _quantile(xs: list[float], q: float) -> float:
    """Linear-interpolation quantile of sorted ``xs`` (numpy's default): [1, 2, 3, 4] at 0.5 -> 2.5."""
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _own_stats(before: dict | None, after: dict | None) -> dict | None:
    """The proposer's counts over the run (``after - before``) and its drafting ms per step."""
    if after is None:
        return None
    before = before or {}
    keys = ("steps", "row_steps", "drafted", "accepted", "draft_seconds", "requests")
    own = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    own["runner_adapter"] = after.get("runner_adapter")
    own["draft_ms_per_step"] = 1000 * own["draft_seconds"] / own["steps"] if own["steps"] else None
    return own


def run(model: str, prompts: list[list[int]], warmup: list[int], spec: dict | None, *, concurrency: int,
        max_tokens: int, dtype: str, max_model_len: int, stats: Path | None, log_dir: Path, env: dict) -> dict:
    """One server (fresh engine, cold caches) for one concurrency level; see :func:`measure`."""
    cmd = server_command(model, free_port(), dtype=dtype, max_model_len=max_model_len,
                         max_num_seqs=concurrency, spec=spec)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"serve-c{concurrency}.log", "w") as log:
        t0 = time.perf_counter()
        proc, client = start(cmd, log, env)
        start_s = time.perf_counter() - t0
        try:
            out = measure(client, model, prompts, concurrency, max_tokens, warmup, stats)
            (log_dir / "metrics.txt").write_text(metrics_text(client))
        finally:
            stop(proc)
    return out | {"engine_start_s": start_s}
