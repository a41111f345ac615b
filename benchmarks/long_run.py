"""Long runs: one very long call, then many consecutive requests on one assistant.

    python benchmarks/long_run.py --part requests --requests 1000 --request-tokens 8 \
        --out benchmarks/results/long-run/smollm2-135m-fp32.json
    # the prefix cache held to a small byte budget, so that it binds: its bytes and RSS per request
    python benchmarks/long_run.py --part requests --requests 1000 --request-tokens 8 --prefix-bytes 33554432 \
        --out benchmarks/results/long-run/smollm2-135m-fp32-prefix-32mib.json
    python benchmarks/long_run.py --part long --tokens 10000 \
        --out benchmarks/results/long-run/smollm2-135m-fp32.json
    # the same long call sized on the curve's first context only, and with a fixed budget (stored beside it)
    python benchmarks/long_run.py --part long --tokens 10000 --sizing one-length \
        --out benchmarks/results/long-run/smollm2-135m-fp32-sizing.json
    # the memory yardstick: 3,000 tokens with and without retrodraft, each in a fresh process
    python benchmarks/long_run.py --part long --tokens 3000 --out benchmarks/results/long-run/smollm2-135m-fp32-3000.json
    python benchmarks/long_run.py --part long-plain --tokens 3000 --out benchmarks/results/long-run/smollm2-135m-fp32-3000.json

Each part is best run in its own process (``--part requests``, then ``--part long``: the second
keeps the first's figures in ``--out``), so neither inherits the other's resident memory.

Reports, for both runs: resident memory (RSS) at the start, along the way, at the end, its peak, and
(after the long call) what remains once freed memory is handed back to the OS; every
drafter table's bytes against its ``max_bytes`` bound; and the step time (seconds per
verification pass) at the start versus the end. The long call's KV cache grows with its context
by design, so its RSS growth is reported next to the cache's own size. Drafters: every learning
drafter at once (recycling, lookup, stand, aded, and history when present), so every table is
exercised; Stand and Aded get small ``max_bytes`` so the run also exercises eviction.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from retrodraft import RetroDraft, models
from retrodraft.bench.data import data_dir
from retrodraft.cost import CostModel
from retrodraft.drafters import DRAFTERS, make_drafter


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """The process's high-water resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _rss_after_release_mb() -> float:
    """RSS after garbage collection and glibc's ``malloc_trim``: what is still referenced.

    glibc keeps freed heap pages mapped, so RSS after a long call shows the call's high-water mark
    (the KV cache plus its transient copies), not a leak; trimming tells the two apart.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: report the untrimmed figure
        pass
    return _rss_mb()


class _Clock:
    """A streamer that stamps every committed token (the prompt's put is skipped)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def _tables(assistant: RetroDraft) -> list[dict]:
    """Every bounded structure a drafter holds, with its bytes and its bound."""
    out = []
    for d in assistant.drafters:
        for attr in ("table", "memory"):
            t = getattr(d, attr, None)
            if t is None or not hasattr(t, "nbytes"):
                continue
            bound = getattr(t, "max_bytes", None)
            out.append({"drafter": d.name, "structure": attr, "bytes": int(t.nbytes),
                        "max_bytes": None if bound is None else int(bound),
                        "within_bound": None if bound is None else bool(t.nbytes <= bound)})
        if d.name == "recycling":
            succ = getattr(d, "succ", None)
            if succ is not None:
                prob = getattr(d, "prob", None)
                out.append({"drafter": d.name, "structure": "matrix (vocab x k, fixed)",
                            "bytes": int(succ.nbytes + (prob.nbytes if prob is not None else 0)),
                            "max_bytes": None, "within_bound": None})
    return out


def _step_times(stamps: list[float], committed: list[int], window: int) -> tuple[float, float]:
    """Mean seconds per step over the first and the last ``window`` steps."""
    ends = np.cumsum(committed) - 1  # index of the last token each step committed
    t = np.asarray(stamps)
    ends = ends[ends < len(t)]
    step_t = np.diff(t[ends])
    w = min(window, len(step_t) // 2)
    return float(np.mean(step_t[:w])), float(np.mean(step_t[-w:]))


def _make_assistant(small_tables: int, prefix_bytes: int | None = None, sizing: dict | None = None) -> RetroDraft:
    names = ["recycling", "lookup", "stand", "aded"] + (["history"] if "history" in DRAFTERS else [])
    drafters = [make_drafter(n, max_bytes=small_tables) if n in ("stand", "aded") else make_drafter(n)
                for n in names]
    kw = dict(sizing or {})
    if prefix_bytes is not None:
        kw["prefix_cache"] = prefix_bytes
    return RetroDraft(drafters=drafters, **kw)


def _sizing(model, name: str) -> dict:
    """RetroDraft keywords for ``--sizing``: ``auto`` (the cost curve at the current context),
    ``one-length`` (the same curve's first context only, as before the curve had contexts) or
    ``fixed@B`` (B nodes every step)."""
    if name == "auto":
        return {}
    if name == "one-length":
        curve = CostModel.for_model(model)
        return {"cost": CostModel(curve.sizes, curve.seconds, curve.key, curve.device)}
    if name.startswith("fixed@") and name[6:].isdigit():
        return {"budget": int(name[6:])}
    raise SystemExit(f"--sizing: expected auto, one-length or fixed@B, got {name!r}")


def run_requests(model, encode, questions: list[str], args) -> dict:
    """``args.requests`` consecutive requests on one assistant, cycling through ``questions``."""
    assistant = _make_assistant(args.table_bytes, args.prefix_bytes)
    rss_trace, walls, mats, step_s = [], [], [], []
    per_request = []  # with --prefix-bytes: (request, prefix store bytes, rss MB, positions reused)
    rss0 = _rss_mb()
    for r in range(args.requests):
        ids = encode(questions[r % len(questions)])
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=args.request_tokens, do_sample=False, assistant=assistant)
        walls.append(time.perf_counter() - t0)
        st = assistant.stats
        mats.append(st.mean_accepted)
        step_s.append((st.draft_s + st.verify_s + st.bookkeeping_s) / max(st.steps, 1))
        if args.prefix_bytes is not None:
            store = assistant.prefix_cache
            per_request.append((r, 0 if store is None else store.nbytes, _rss_mb(), st.prefix_reused))
        if r % 50 == 0 or r == args.requests - 1:
            rss_trace.append((r, _rss_mb()))
            print(f"request {r}: rss {rss_trace[-1][1]:.0f} MB, wall {walls[-1]:.3f} s", flush=True)
    w = min(100, args.requests // 2)
    period = len(questions)
    cycles = args.requests // period
    same = {}
    if cycles >= 2:  # the same prompts a whole cycle apart: prompt lengths (prefill) cancel out
        same = {"request_s_first_cycle": float(np.mean(walls[:period])),
                "request_s_last_cycle": float(np.mean(walls[(cycles - 1) * period: cycles * period])),
                "cycle_prompts": period}
    prefix = {}
    if args.prefix_bytes is not None:
        stored = [b for _, b, _, _ in per_request]
        prefix = {"prefix_bytes": args.prefix_bytes, "prefix_store_max_bytes": max(stored),
                  "prefix_within_budget": all(b <= args.prefix_bytes for b in stored),
                  "prefix_reused_total": int(sum(x for *_, x in per_request)),
                  "prefix_requests_reusing": sum(1 for *_, x in per_request if x > 0),
                  "per_request": {"columns": ["request", "store_bytes", "rss_mb", "reused"], "rows": per_request}}
    return {
        "requests": args.requests, "new_tokens_each": args.request_tokens, **prefix,
        "rss_start_mb": rss0, "rss_end_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb(),
        "rss_by_request": rss_trace,
        "request_s_first_100": float(np.mean(walls[:w])), "request_s_last_100": float(np.mean(walls[-w:])),
        **same,
        "step_s_first_100": float(np.mean(step_s[:w])), "step_s_last_100": float(np.mean(step_s[-w:])),
        "mean_committed_first_100": float(np.mean(mats[:w])), "mean_committed_last_100": float(np.mean(mats[-w:])),
        "tables": _tables(assistant),
    }


def run_long(model, encode, args, plain: bool = False) -> dict:
    """One call of ``args.tokens`` new tokens, then plain greedy's per-token time at that context.

    ``plain``: the same call without retrodraft, the yardstick for the resident memory a call of
    that length leaves behind in this process (PyTorch and the C allocator, not the drafters).
    """
    assistant = None if plain else _make_assistant(args.table_bytes, sizing=_sizing(model, args.sizing))
    ids = encode("Write a long, detailed history of computing, chapter by chapter.")
    rss0 = _rss_mb()
    clock = _Clock()
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                         assistant=assistant, streamer=clock)
    wall = time.perf_counter() - t0
    stats = assistant.stats if assistant is not None else None
    committed = list(stats.committed) if stats is not None else [1] * (len(clock.stamps))
    first, last = _step_times(clock.stamps, committed, window=200)
    cfg = model.config
    kv_mb = (2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
             * out.shape[1] * model.dtype.itemsize) / 2**20
    res = {
        "new_tokens": int(out.shape[1] - ids.shape[1]), "wall_s": wall,
        "steps": stats.steps if stats else len(committed), "mean_committed": stats.mean_accepted if stats else 1.0,
        "rss_start_mb": rss0, "rss_end_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb(), "kv_cache_mb_at_end": kv_mb,
        "step_s_first_200": first, "step_s_last_200": last, "tables": _tables(assistant) if assistant else [],
    }
    res["rss_after_release_mb"] = _rss_after_release_mb()
    # What one plain greedy token costs at the same context: the yardstick for step_s_last_200.
    clock = _Clock()
    model.generate(out, max_new_tokens=21, min_new_tokens=21, do_sample=False, streamer=clock)
    res["greedy_token_s_at_end"] = float(np.mean(np.diff(clock.stamps)))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tokens", type=int, default=10_000, help="new tokens of the long call")
    ap.add_argument("--requests", type=int, default=1000, help="consecutive requests")
    ap.add_argument("--request-tokens", type=int, default=8, help="new tokens per request")
    ap.add_argument("--table-bytes", type=int, default=4 * 2**20, help="max_bytes of stand and aded")
    ap.add_argument("--prefix-bytes", type=int, default=None,
                    help="the prefix cache's byte budget (default: the library's), recorded per request with the "
                         "resident memory; 0 turns it off")
    ap.add_argument("--part", choices=["both", "requests", "long", "long-plain"], default="both",
                    help="run one part only; a fresh process per part keeps each part's RSS figures clean "
                         "(the other parts' figures already in --out are kept); long-plain: the long call "
                         "without retrodraft, the yardstick for its memory figures")
    ap.add_argument("--sizing", default="auto",
                    help="the long call's tree sizing: auto (default), one-length (the cost curve's first context "
                         "only) or fixed@B; other than auto it is stored as long_call_<sizing>")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.manual_seed(0)
    model, tok = models.load(args.model, dtype=args.dtype)
    questions = [json.loads(line)["turns"][0] for line in
                 (data_dir() / "spec_bench" / "question.jsonl").read_text().splitlines()]

    def encode(text: str) -> torch.Tensor:
        return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)["input_ids"]

    out = Path(args.out)
    result = json.loads(out.read_text()) if args.part != "both" and out.is_file() else {}
    command = "python benchmarks/long_run.py " + shlex.join(sys.argv[1:])
    result.update({"model": args.model, "dtype": args.dtype, "torch": torch.__version__,
                   "threads": torch.get_num_threads()})

    def save(part: str, figures: dict) -> None:
        result[part] = {"command": command, **figures}
        print(json.dumps(figures, indent=1), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")

    if args.part in ("both", "requests"):
        save("requests", run_requests(model, encode, questions, args))
    if args.part in ("both", "long"):
        save("long_call" if args.sizing == "auto" else f"long_call_{args.sizing}", run_long(model, encode, args))
    if args.part == "long-plain":
        save("long_call_plain", run_long(model, encode, args, plain=True))


if __name__ == "__main__":
    main()
