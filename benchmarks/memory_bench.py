"""Cross-request memory benchmark: lookup latency at a million tokens of history, and the budget.

    python benchmarks/memory_bench.py --out benchmarks/results/memory/memory_bench.json [--tokens 1000000]

History: synthetic requests of 200-2000 tokens over a 50k vocabulary, Zipf-distributed, where
half of each request copies spans (20-200 tokens) of earlier ones - the repetition the memory
exists for. Measured, single-threaded:

- ``SuffixMemory.add`` per token while filling (the suffix automaton, incremental);
- per query, the longest-suffix ``match`` (64-token window) and the history drafter's suffix-tree
  policy (``SuffixTree.draft``: match plus the continuation trie as a ``DraftTree``, 32 and 64
  nodes), on contexts taken from the history (long matches) and on fresh Zipf text (short ones);
- the alternative for a growing history: a suffix array (libdivsufsort, as the corpus indexes
  use) must be rebuilt for every request added; its build time on the same tokens and the
  lookup of ``retrieve`` (longest match, 64 continuations, count trie) are timed for comparison;
- a small budget (16 MiB) filled with the same requests: the largest ``nbytes`` ever seen and
  the add latency including eviction rebuilds.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def _requests(total: int, seed: int = 0, vocab: int = 50_000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, n = [], 0
    while n < total:
        length = int(rng.integers(200, 2001))
        parts, have = [], 0
        while have < length:
            if out and rng.random() < 0.5:
                src = out[int(rng.integers(len(out)))]
                span = int(min(rng.integers(20, 201), src.size))
                a = int(rng.integers(0, src.size - span + 1))
                piece = src[a: a + span]
            else:
                piece = np.minimum(rng.zipf(1.2, int(rng.integers(5, 60))), vocab - 1)
            parts.append(piece)
            have += piece.size
        r = np.concatenate(parts)[:length].astype(np.int64)
        out.append(r)
        n += r.size
    return out


def _stats(ns: list[int]) -> dict:
    a = np.asarray(ns, np.float64) / 1e3
    return {"p50_us": round(float(np.percentile(a, 50)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "max_us": round(float(a.max()), 2), "mean_us": round(float(a.mean()), 2)}


def _time(fn, contexts) -> list[int]:
    ns = []
    for c in contexts:
        t = time.perf_counter_ns()
        fn(c)
        ns.append(time.perf_counter_ns() - t)
    return ns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--small-budget-mib", type=int, default=16)
    args = ap.parse_args()

    from retrodraft.drafters._confidence import confidence
    from retrodraft.drafters.suffix_tree import SuffixTree
    from retrodraft.memory import SuffixMemory, warm_up

    warm_up()
    reqs = _requests(args.tokens)
    mem = SuffixMemory()
    t = time.perf_counter()
    for r in reqs:
        mem.add(r)
    build_s = time.perf_counter() - t
    stream = np.concatenate(reqs)
    rng = np.random.default_rng(1)
    seen = [stream[p - 256: p] for p in rng.integers(256, stream.size, args.queries)]
    fresh = [np.minimum(rng.zipf(1.2, 256), 49_999).astype(np.int64) for _ in range(args.queries)]
    policy = SuffixTree(confidence(np.arange(200), ceil=0.985), max_depth=64)
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__, "numba": __import__("numba").__version__},
        "history": {"requests": mem.n_requests, "tokens": mem.n_tokens, "nbytes": mem.nbytes,
                    "max_bytes": mem.max_bytes, "bytes_per_token_held": round(mem.nbytes / mem.n_tokens, 1)},
        "add_us_per_token": round(build_s * 1e6 / stream.size, 3),
        "lookup": {},
    }
    for label, ctxs in (("seen", seen), ("fresh", fresh)):
        lengths = [mem.match(c).length for c in ctxs]
        result["lookup"][label] = {
            "match_len_mean": round(float(np.mean(lengths)), 1),
            "match": _stats(_time(lambda c: mem.match(c), ctxs)),
            "draft_32": _stats(_time(lambda c: policy.draft(mem.shared, c, 32), ctxs)),
            "draft_64": _stats(_time(lambda c: policy.draft(mem.shared, c, 64), ctxs)),
        }

    from retrodraft.index.build import suffix_array
    from retrodraft.index.corpus import retrieve

    tok32 = np.concatenate([np.append(r, -1) for r in reqs]).astype(np.int32)
    t = time.perf_counter()
    sa = suffix_array(tok32)
    sa_s = time.perf_counter() - t
    shards = [(tok32, sa.astype(np.int32))]
    retrieve(shards, seen[0], max_len=64)
    result["suffix_array_alternative"] = {
        "rebuild_ms_per_request_added": round(sa_s * 1e3, 1),
        "retrieve_seen": _stats(_time(lambda c: retrieve(shards, c, max_len=64, depth=32), seen)),
        "retrieve_fresh": _stats(_time(lambda c: retrieve(shards, c, max_len=64, depth=32), fresh)),
    }

    small = SuffixMemory(max_bytes=args.small_budget_mib << 20)
    ns, peak, gens = [], 0, small.generation
    for r in reqs:
        t0 = time.perf_counter_ns()
        small.add(r)
        ns.append(time.perf_counter_ns() - t0)
        peak = max(peak, small.nbytes)
    result["small_budget"] = {"max_bytes": small.max_bytes, "peak_nbytes": peak,
                              "within_budget": peak <= small.max_bytes, "evictions": small.generation - gens,
                              "requests_kept": small.n_requests, "tokens_kept": small.n_tokens,
                              "add_request": _stats(ns)}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
