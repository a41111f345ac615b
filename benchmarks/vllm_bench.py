"""retrodraft inside vLLM against vLLM's own model-free speculators, on retrodraft's suites.

    python benchmarks/vllm_bench.py --model qwen2.5-coder-1.5b --dtype bfloat16 --suite refactor \\
        --requests 4 --max-new-tokens 256 --k 16 --concurrency 1 --methods none,ngram,suffix,retrodraft \\
        --out benchmarks/results/vllm-qwen2.5-coder-1.5b-bf16-refactor

Runs in .venv-vllm (`make vllm`; `suffix` needs `bash benchmarks/install_arctic.sh .venv-vllm/bin/python`).
Methods run by separate commands into the same ``--out`` (same other arguments) are merged into one
results.json, each with the command that ran it. Every method runs in its own process (a fresh
engine: vLLM's and retrodraft's caches start cold), on the same prompts in the same order, with the
same ``num_speculative_tokens``. Per method and concurrency: output tokens per second (wall clock of
``LLM.generate``, the engine start and a warm-up request excluded), mean acceptance length (vLLM's
counters: 1 + accepted / drafts), and for retrodraft the proposer's own drafting time per step.
Where the time goes, from each request's engine-core timestamps (``RequestOutput.metrics``):
prefill (scheduled to first token), decode (first to last token), decode-only tokens per second
(tokens after the first / decode seconds), decode steps (vLLM's per-request draft counts,
``per_request_spec_decode_metrics="detailed"``) and the ceiling: the run's time if every request
had decoded in the fewest steps ``k`` allows, at this method's measured seconds per step.
``--concurrency 4`` sends the prompts 4 at a time (one ``generate`` call each group); each
level runs on its own fresh engine. Chat prompts
use the model's chat template; multi-turn Spec-Bench prompts send their first turn only.
results.json stores the command.

``--server`` runs the same methods behind `vllm serve` instead (``_vllm_server.py``): per method
and concurrency a fresh server on 127.0.0.1 with the same engine settings and speculative config,
one warm-up request, then the same token-id prompts through the ``openai`` client, ``C`` requests
in flight (``--concurrency C``, a thread pool). Measured: output tokens per second (wall clock of
the whole run), each request's latency, the mean acceptance length (vLLM's counters from
``GET /metrics``) and retrodraft's drafting time per step. Offline and server runs of the same
configuration share one ``--out`` folder; report.md has a table per mode::

    python benchmarks/vllm_bench.py --model qwen2.5-coder-1.5b --dtype bfloat16 --suite refactor \\
        --requests 16 --max-new-tokens 128 --concurrency 1,4,16 --methods none,retrodraft --server \\
        --out benchmarks/results/vllm-qwen2.5-coder-1.5b-bf16-refactor-server
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _vllm_report import render, run_key

METHODS = ("none", "ngram", "suffix", "retrodraft")


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a retrodraft model cache name or a model folder")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--suite", default="refactor", help="comma-separated retrodraft.bench suites")
    ap.add_argument("--requests", type=int, default=None, help="requests per sequence suite (default: all)")
    ap.add_argument("--per-category", type=int, default=3, help="prompts per Spec-Bench category / HumanEval")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, default=16, help="num_speculative_tokens, every method")
    ap.add_argument("--concurrency", default="1", help="comma-separated, e.g. 1,4,16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--out", required=True)
    ap.add_argument("--server", action="store_true",
                    help="run each method behind `vllm serve` (OpenAI clients) instead of LLM.generate")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one method, write JSON
    return ap.parse_args(argv)


def _model_path(name: str) -> str:
    if Path(name).is_dir():
        return str(Path(name).resolve())
    from retrodraft.models import cached_path

    path = cached_path(name)
    if path is None:
        raise SystemExit(f"{name} is not in the model cache: python -m retrodraft.cli models fetch {name}")
    return str(path)


def _prompts(a, tokenizer) -> list[list[int]]:
    from retrodraft.bench.data import load_suite

    out = []
    for p in load_suite(a.suite.split(","), a.per_category, requests=a.requests):
        if p.messages is not None:
            msgs = p.messages
        elif p.chat:
            msgs = [{"role": "user", "content": p.turns[0]}]
        else:
            out.append(tokenizer(p.turns[0])["input_ids"])
            continue
        out.append(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    return out


def _spec(method: str, k: int, model: str, stats: str) -> dict | None:
    if method == "none":
        return None
    if method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    if method == "suffix":
        return {"method": "suffix", "num_speculative_tokens": k}
    if method == "retrodraft":
        from retrodraft.vllm import speculative_config

        return speculative_config(num_speculative_tokens=k, model=model, stats=stats)
    raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def _counters(llm) -> dict:
    out = {}
    for m in llm.get_metrics():
        if m.name in ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_accepted_tokens",
                      "vllm:spec_decode_num_draft_tokens"):
            out[m.name.split(":")[1]] = getattr(m, "value", 0)
    return out


def run_one(a) -> dict:
    """One method in this process: every concurrency level, on one engine."""
    _env()
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt

    model = _model_path(a.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = _prompts(a, tokenizer)
    stats = Path(tempfile.mkdtemp()) / "stats.json"
    t0 = time.perf_counter()
    spec = _spec(a.one, a.k, model, str(stats))
    llm = LLM(model=model, dtype=a.dtype, max_model_len=a.max_model_len, enforce_eager=True,
              max_num_seqs=max(int(c) for c in a.concurrency.split(",")), seed=0, disable_log_stats=False,
              speculative_config=spec, **({"per_request_spec_decode_metrics": "detailed"} if spec else {}))
    start_s = time.perf_counter() - t0
    params = SamplingParams(temperature=0.0, max_tokens=a.max_new_tokens)
    llm.generate([TokensPrompt(prompt_token_ids=tokenizer("Hello")["input_ids"])],
                 SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)  # warm-up
    runs = {}
    for c in (int(x) for x in a.concurrency.split(",")):
        before = _counters(llm)
        outputs, seconds, requests = [], 0.0, []
        split = {"prefill_s": 0.0, "decode_s": 0.0, "decode_steps": 0, "fewest_steps": 0}
        for i in range(0, len(prompts), c):
            group = [TokensPrompt(prompt_token_ids=p) for p in prompts[i:i + c]]
            t = time.perf_counter()
            res = llm.generate(group, params, use_tqdm=False)
            seconds += time.perf_counter() - t
            outputs += [list(r.outputs[0].token_ids) for r in res]
            reqs = [_request(r) for r in res]
            requests += reqs
            _add_group(split, reqs, a.k)
        after = _counters(llm)
        drafts = after.get("spec_decode_num_drafts", 0) - before.get("spec_decode_num_drafts", 0)
        acc = after.get("spec_decode_num_accepted_tokens", 0) - before.get("spec_decode_num_accepted_tokens", 0)
        tokens = sum(len(o) for o in outputs)
        drafted = after.get("spec_decode_num_draft_tokens", 0) - before.get("spec_decode_num_draft_tokens", 0)
        runs[str(c)] = {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds,
                        "mean_acceptance_length": 1 + acc / drafts if drafts else None, "drafts": drafts,
                        "accepted": acc, "drafted": drafted, "outputs": outputs}
        runs[str(c)].update(_split(split, requests))
    llm.llm_engine.engine_core.shutdown()
    own = json.loads(stats.read_text()) if stats.exists() else None
    if own is not None:
        own.pop("finished", None)
        own["draft_ms_per_step"] = 1000 * own["draft_seconds"] / own["steps"] if own["steps"] else None
    return {"method": a.one, "engine_start_s": start_s, "runs": runs, "proposer_stats": own,
            "prompt_tokens": [len(p) for p in prompts]}


def _request(r) -> dict:
    """One finished request's timings (engine-core clock) and vLLM's per-request draft counts."""
    m, o = r.metrics, r.outputs[0]
    spec = o.spec_decode_metrics.to_dict() if getattr(o, "spec_decode_metrics", None) is not None else None
    n = len(o.token_ids)
    out = {"prompt_tokens": len(r.prompt_token_ids), "tokens": n, "cached_prompt_tokens": r.num_cached_tokens,
           "scheduled_ts": getattr(m, "scheduled_ts", 0.0), "first_token_ts": getattr(m, "first_token_ts", 0.0),
           "last_token_ts": getattr(m, "last_token_ts", 0.0)}
    out["prefill_s"] = out["first_token_ts"] - out["scheduled_ts"]
    out["decode_s"] = out["last_token_ts"] - out["first_token_ts"]
    # Decode steps: vLLM's verify steps with a draft, plus the steps without one (one token each).
    # vLLM counts tokens accepted past max_tokens too (the last step's are cut from the output).
    spec_steps = spec["num_spec_steps"] if spec else 0
    spec_tokens = spec["num_spec_steps"] + spec["num_accepted_draft_tokens"] if spec else 0
    out["decode_steps"] = spec_steps + max(n - 1 - spec_tokens, 0)
    out["spec"] = spec
    return out


def _add_group(split: dict, reqs: list[dict], k: int) -> None:
    """Add one group of concurrent requests to ``split``: its prefill (first scheduled to the
    group's last first token), its decode (from there to its last token), its decode steps (its
    longest request's: the batch steps together) and the fewest steps ``k`` would allow (every
    drafted token accepted). With one request per group these are that request's own."""
    if not all(q["first_token_ts"] for q in reqs):
        split["missing"] = True
        return
    first = max(q["first_token_ts"] for q in reqs)
    split["prefill_s"] += first - min(q["scheduled_ts"] for q in reqs)
    split["decode_s"] += max(q["last_token_ts"] for q in reqs) - first
    split["decode_steps"] += max(q["decode_steps"] for q in reqs)
    split["fewest_steps"] += max(-(-(q["tokens"] - 1) // (k + 1)) for q in reqs)


def _split(split: dict, requests: list[dict]) -> dict:
    """Where a run's time went (see :func:`_add_group`), the decode-only rate (tokens after each
    request's first / decode seconds) and the ceiling: the run's time with this method's seconds
    per decode step but the fewest decode steps (``ceiling_tok_s``)."""
    if split.pop("missing", False):
        return {"requests": requests}
    after_first = sum(q["tokens"] - 1 for q in requests)
    step_s = split["decode_s"] / split["decode_steps"] if split["decode_steps"] else None
    ceiling_s = split["prefill_s"] + split["fewest_steps"] * step_s if step_s else None
    return split | {"decode_tok_s": after_first / split["decode_s"] if split["decode_s"] else None,
                    "decode_ms_per_step": 1000 * step_s if step_s else None, "ceiling_s": ceiling_s,
                    "ceiling_tok_s": sum(q["tokens"] for q in requests) / ceiling_s if ceiling_s else None,
                    "requests": requests}


def _env() -> None:
    """Environment defaults shared by both modes (the child processes inherit them)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on vLLM's CPU build
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # numba keys its kernel cache by Python version only: sharing retrodraft's __pycache__ with
    # another environment's numba (the main venv's), each overwrites the other's index and every
    # fresh engine worker compiles the drafting kernels again.
    from importlib.metadata import version

    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "retrodraft" / f"numba-{version('numba')}"))


def serve_one(a, method: str, concurrency: int) -> dict:
    """One method at one concurrency behind a fresh `vllm serve` (see ``_vllm_server``)."""
    import _vllm_server
    from transformers import AutoTokenizer

    _env()
    model = _model_path(a.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = _prompts(a, tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix=f"vllm-serve-{method}-"))  # the server's log, the proposer's stats
    stats = tmp / "stats.json"
    run = _vllm_server.run(model, prompts, tokenizer("Hello")["input_ids"],
                           _spec(method, a.k, model, str(stats)), concurrency=concurrency,
                           max_tokens=a.max_new_tokens, dtype=a.dtype, max_model_len=a.max_model_len,
                           stats=stats if method == "retrodraft" else None, log_dir=tmp, env=dict(os.environ))
    return run | {"prompt_tokens": [len(p) for p in prompts]}


def _offline_one(argv: list[str], method: str, c: str) -> dict:
    """One method at concurrency ``c`` through ``LLM.generate``, in a child process (:func:`run_one`)."""
    i = argv.index("--concurrency") if "--concurrency" in argv else -1
    argv = (argv[:i] + argv[i + 2:] if i >= 0 else argv) + ["--concurrency", c]
    r = subprocess.run([sys.executable, __file__, "--one", method] + argv, capture_output=True, text=True,
                       env=dict(os.environ))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    one = json.loads(r.stdout.strip().splitlines()[-1])
    return one["runs"][c] | {"mode": "offline", "concurrency": int(c), "engine_start_s": one["engine_start_s"],
                             "proposer_stats": one["proposer_stats"], "prompt_tokens": one["prompt_tokens"]}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = _args(argv)
    if a.one:
        print(json.dumps(run_one(a)))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import vllm

    command = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/vllm_bench.py"] + argv)
    # the same configuration in both modes: offline and server runs share a results folder
    config = {k: v for k, v in vars(a).items() if k not in ("one", "methods", "concurrency", "server")}
    config["vllm"] = vllm.__version__
    config["env"] = {k: os.environ.get(k, d) for k, d in (("VLLM_CPU_KVCACHE_SPACE", "2"), ("HF_HUB_OFFLINE", "1"))}
    results = {"config": config, "methods": {}}
    previous = out / "results.json"
    if previous.exists():  # methods run by earlier commands on the same configuration are kept
        old = json.loads(previous.read_text())
        if old.get("config") == config:
            results["methods"] = old["methods"]
    mode = "server" if a.server else "offline"
    for m in a.methods.split(","):
        for c in a.concurrency.split(","):  # each level on a fresh engine: no cache warmed by another level
            try:
                run = serve_one(a, m, int(c)) if a.server else _offline_one(argv, m, c)
            except Exception as e:  # noqa: BLE001 -- one method failing keeps the others' results
                results["methods"].setdefault(m, {"runs": {}})["error"] = f"{mode}: {e}"
                print(f"{m} {mode} x{c}: failed: {e}", file=sys.stderr)
                continue
            entry = results["methods"].setdefault(m, {"runs": {}})
            entry["prompt_tokens"] = run.pop("prompt_tokens", entry.get("prompt_tokens"))
            entry["runs"][run_key(mode, c)] = run | {"command": command}
            (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = render(results)
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
