"""Corpus index benchmark: retrodraft's index against REST's ``draftretriever`` on one corpus.

    python benchmarks/index_bench.py --tokenizer qwen2.5-coder-1.5b --out benchmarks/results/index-NAME \
        SOURCE... [--include '*.py'] [--queries 2000]

Tokenizes the corpus once, then builds both indexes from the same token lists (build time, size
on disk, peak memory of the build) and times lookups on the same contexts: 16-token contexts
taken at random positions of the corpus, longest matching suffix of length 16 down to 2.
retrodraft is timed for the lookup alone (the suffix-array search, what a drafter step needs
first) and for the full query (plus continuations and their count trie); draftretriever for its
``search`` call (which also builds its draft tree). Writes ``results.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def _percentiles(ns: list[int]) -> dict:
    a = np.asarray(ns, np.float64) / 1e6
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--exclude", action="append", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--shard-tokens", type=int, default=50_000_000)
    ap.add_argument("--skip-draftretriever", action="store_true")
    ap.add_argument("--work", default="indexes/index-bench", help="where both indexes are built (kept out of --out)")
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from retrodraft import models
    from retrodraft.index import CorpusIndex, build_index
    from retrodraft.index.search import longest_match
    from retrodraft.index.sources import SourceStats, iter_documents, iter_files

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = models.load_tokenizer(args.tokenizer)
    files = iter_files(args.sources, args.include, args.exclude)
    stats = SourceStats()
    t0 = time.perf_counter()
    docs: list[np.ndarray] = []
    batch: list[str] = []
    for text in tqdm(iter_documents(files, stats), total=len(files), desc="tokenize", unit="file"):
        batch.append(text)
        if len(batch) == 64:
            docs += [np.asarray(x, np.int32) for x in tok(batch, add_special_tokens=False)["input_ids"]]
            batch = []
    if batch:
        docs += [np.asarray(x, np.int32) for x in tok(batch, add_special_tokens=False)["input_ids"]]
    tokenize_s = time.perf_counter() - t0
    n_tokens = int(sum(len(d) for d in docs))
    print(f"{n_tokens:,} tokens from {stats.files:,} files in {tokenize_s:.1f} s", flush=True)

    res: dict = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "tokens": n_tokens,
                 "files": stats.files, "bytes": stats.bytes, "tokenize_s": tokenize_s, "methods": {}}

    # --- retrodraft
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    idx_path = work / "retrodraft"
    t0 = time.perf_counter()
    build_index([], tok, idx_path, token_docs=docs, force=True, shard_tokens=args.shard_tokens,
                tokenizer_name=args.tokenizer, progress=False)
    rd_build = time.perf_counter() - t0
    idx = CorpusIndex(idx_path)
    rng = np.random.default_rng(0)
    stream = np.concatenate(docs)
    # Separate context sets for the lookup alone and for the full query, so neither is timed on
    # pages the other just touched; draftretriever gets the full query's set.
    contexts = [stream[p - 16:p].astype(np.int32) for p in rng.integers(16, len(stream), size=args.queries)]
    lookup_contexts = [stream[p - 16:p].astype(np.int32) for p in rng.integers(16, len(stream), size=args.queries)]
    for tk, sa in idx.shards:  # compile and touch once
        longest_match(tk, sa, contexts[0], 2)
    idx.query(contexts[0])
    look, full = [], []
    for c in lookup_contexts:
        t = time.perf_counter_ns()
        for tk, sa in idx.shards:
            longest_match(tk, sa, c, 2)
        look.append(time.perf_counter_ns() - t)
    for c in contexts:
        t = time.perf_counter_ns()
        idx.query(c, max_len=16, min_len=2, depth=8, max_matches=64)
        full.append(time.perf_counter_ns() - t)
    res["methods"]["retrodraft"] = {"build_s": rd_build, "tokens_per_s": n_tokens / rd_build,
                                    "size_bytes": _du(idx_path), "shards": len(idx.shards),
                                    "lookup": _percentiles(look), "query": _percentiles(full)}
    print(json.dumps(res["methods"]["retrodraft"], indent=1), flush=True)

    # --- draftretriever (REST)
    if not args.skip_draftretriever:
        import draftretriever

        dr_path = work / "draftretriever.idx"
        t0 = time.perf_counter()
        w = draftretriever.Writer(str(dr_path), 512 * 1024 * 1024)
        for d in docs:
            w.add_entry(d.tolist())
        w.finalize()
        dr_build = time.perf_counter() - t0
        reader = draftretriever.Reader(str(dr_path))
        lat = []
        for c in contexts:
            cl = c.tolist()
            t = time.perf_counter_ns()
            for length in range(16, 1, -1):
                r = reader.search(cl[-length:], None, 64, None)
                if r[0]:
                    break
            lat.append(time.perf_counter_ns() - t)
        res["methods"]["draftretriever"] = {"build_s": dr_build, "tokens_per_s": n_tokens / dr_build,
                                            "size_bytes": _du(dr_path), "search": _percentiles(lat)}
        print(json.dumps(res["methods"]["draftretriever"], indent=1), flush=True)
        dr_path.unlink()

    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "results.json").write_text(json.dumps(res, indent=1))
    m = res["methods"]
    lines = [f"# Corpus index: retrodraft vs draftretriever\n", f"Command: `{res['command']}`\n",
             f"Corpus: {res['files']:,} files, {res['bytes'] / 1e6:,.0f} MB, {n_tokens:,} tokens "
             f"(tokenized once in {tokenize_s:.0f} s, not counted below). Peak RSS {res['peak_rss_mb']:,.0f} MB.\n",
             "| index | build s | tokens/s | size MB | lookup p50 / p99 ms | lookup + continuations p50 / p99 ms |",
             "|---|---:|---:|---:|---|---|"]
    r = m["retrodraft"]
    lines.append(f"| retrodraft ({r['shards']} shards) | {r['build_s']:.1f} | {r['tokens_per_s']:,.0f} | "
                 f"{r['size_bytes'] / 1e6:,.0f} | {r['lookup']['p50_ms']:.3f} / {r['lookup']['p99_ms']:.3f} | "
                 f"{r['query']['p50_ms']:.3f} / {r['query']['p99_ms']:.3f} |")
    if "draftretriever" in m:
        d = m["draftretriever"]
        lines.append(f"| draftretriever (REST) | {d['build_s']:.1f} | {d['tokens_per_s']:,.0f} | "
                     f"{d['size_bytes'] / 1e6:,.0f} | - | {d['search']['p50_ms']:.3f} / {d['search']['p99_ms']:.3f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
