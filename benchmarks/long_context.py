"""Long contexts: tree sizing priced at the current length against the old one-length curve and fixed budgets.

    python benchmarks/long_context.py --model qwen2.5-coder-1.5b --dtype bfloat16 \
        --contexts 2048,8192,16384 --new-tokens 128 --budgets 4,8,16 \
        --out benchmarks/results/long-context/qwen2.5-coder-1.5b-bf16.json
    # the prefix cache at its byte budget: resident memory over many distinct long requests
    python benchmarks/long_context.py --part memory --model qwen2.5-coder-1.5b --dtype bfloat16 \
        --prefix-bytes 268435456 --requests 40 --out benchmarks/results/long-context/qwen2.5-coder-1.5b-bf16-memory.json

Prompts: Python standard-library source (on every machine with Python), concatenated file after
file and cut at the context length, so the model continues code mid-file. Each prompt is prefilled
once (in chunks of 2,048 tokens) and every method gets its own copy of that cache, so the figures
compare decoding at that context, not prefill. Each method has a fresh assistant (prefix cache off);
with ``--warm-tokens N`` every assistant first writes N tokens after another 1,024-token stretch of
the standard library (not timed), so the tree sizer's calibration and the drafters start warm, as in
a server that has been running, instead of from their cold-start prior:

- ``greedy``: plain ``generate``;
- ``auto``: ``RetroDraft()``, sized with the cost surface measured at several context lengths;
- ``auto-one-length``: the same, sized with that surface's first row only (the curve before
  context-aware sizing: a 256-token prefix at every length);
- ``auto-pooled``: ``auto`` with one acceptance calibration for all drafters (the sizer before
  it kept one per drafter origin);
- ``fixed@B``: ``RetroDraft(budget=B)`` for every ``--budgets`` value.

``--part memory`` sends ``--requests`` distinct prompts of ``--memory-context`` tokens through one
assistant whose prefix cache holds ``--prefix-bytes``, and records the store's bytes and the
process's resident memory after every request.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from retrodraft import RetroDraft, models
from retrodraft.cost import CostModel
from retrodraft.sizing import TreeSizer


def _code_ids(tok, n_tokens: int, skip_files: int = 0) -> torch.Tensor:
    """``(1, n_tokens)`` ids of standard-library source, files in sorted order from ``skip_files``."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[skip_files:]
    ids: list[int] = []
    for f in files:
        ids += tok(f.read_text(errors="replace") + "\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens:
            return torch.tensor([ids[:n_tokens]])
    raise SystemExit(f"the standard library holds fewer than {n_tokens} tokens")


class _PooledSizer(TreeSizer):
    """The sizer before calibration was kept per drafter origin: one calibration for all."""

    def _row(self, origins, n, grow):
        return super()._row(None, n, grow)


def _pooled(curve: CostModel) -> RetroDraft:
    assistant = RetroDraft(cost=curve, prefix_cache=0)
    assistant.sizer = _PooledSizer(curve, budget=assistant.budget)  # begin() keeps a sizer on the given curve
    return assistant


def _methods(curve: CostModel, budgets: list[int]) -> dict:
    one = CostModel(curve.sizes, curve.seconds, curve.key, curve.device)
    out = {"greedy": None, "auto": lambda: RetroDraft(cost=curve, prefix_cache=0),
           "auto-one-length": lambda: RetroDraft(cost=one, prefix_cache=0),
           "auto-pooled": lambda: _pooled(curve)}
    for b in budgets:
        out[f"fixed@{b}"] = lambda b=b: RetroDraft(budget=b, prefix_cache=0)
    return out


@torch.no_grad()
def _prefilled(model, ids: torch.Tensor, chunk: int = 2048):
    """A DynamicCache holding every prompt position but the last, filled ``chunk`` tokens at a time."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for start in range(0, ids.shape[1] - 1, chunk):
        model(input_ids=ids[:, start: min(start + chunk, ids.shape[1] - 1)], cache=cache, use_cache=True)
    return cache


def _copy(cache, config):
    from transformers import DynamicCache

    out = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys, layer.values, i)  # cat into an empty layer: a copy
    return out


def run_contexts(model, tok, args) -> list[dict]:
    curve = CostModel.for_model(model)
    rows = []
    for context in args.contexts:
        ids = _code_ids(tok, context)
        t0 = time.perf_counter()
        shared = _prefilled(model, ids)
        prefill_s = time.perf_counter() - t0
        outputs = {}
        for name, make in _methods(curve, args.budgets).items():
            if args.methods and name not in args.methods and name != "greedy":
                continue
            assistant = make() if make else None
            if assistant is not None and args.warm_tokens:
                warm = _code_ids(tok, 1024, skip_files=150)
                model.generate(warm, max_new_tokens=args.warm_tokens, do_sample=False, assistant=assistant)
            cache = _copy(shared, model.config)
            t0 = time.perf_counter()
            out = model.generate(ids, cache=cache, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=False, assistant=assistant)
            wall = time.perf_counter() - t0
            outputs[name] = out[0, ids.shape[1]:].tolist()
            row = {"context": context, "method": name, "new_tokens": int(out.shape[1] - ids.shape[1]),
                   "decode_s": wall, "shared_prefill_s": prefill_s}
            if assistant is not None:
                s = assistant.stats
                row.update(steps=s.steps, mean_committed=s.mean_committed, mean_tree=s.mean_tree_size,
                           same_as_greedy=outputs[name] == outputs["greedy"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            del cache
        greedy = next(r for r in rows if r["context"] == context and r["method"] == "greedy")
        for r in rows:
            if r["context"] == context:
                r["speedup"] = (r["new_tokens"] / r["decode_s"]) / (greedy["new_tokens"] / greedy["decode_s"])
    return rows


def run_memory(model, tok, args) -> dict:
    proc = psutil.Process()
    assistant = RetroDraft(prefix_cache=args.prefix_bytes)
    trace = []
    rss0 = proc.memory_info().rss / 2**20
    for r in range(args.requests):
        ids = _code_ids(tok, args.memory_context, skip_files=3 * r)
        model.generate(ids, max_new_tokens=16, do_sample=False, assistant=assistant)
        store = assistant.prefix_cache
        trace.append({"request": r, "store_bytes": store.nbytes, "entries": len(store),
                      "rss_mb": proc.memory_info().rss / 2**20})
        print(json.dumps(trace[-1]), flush=True)
    return {"prefix_bytes": args.prefix_bytes, "requests": args.requests, "context": args.memory_context,
            "rss_start_mb": rss0, "trace": trace,
            "within_budget": all(t["store_bytes"] <= args.prefix_bytes for t in trace)}


def report(result: dict) -> str:
    """A markdown table of a ``--part contexts`` result (written next to the JSON as ``.md``)."""
    lines = [f"# Long contexts: {result['model']} ({result['dtype']}), {result['threads']} threads\n",
             f"Made by: `{result['command']}`\n",
             "Decoding only (each context prefilled once, every method on a copy of that cache); speedup = "
             "tokens/s over greedy at the same context. `auto` is sized on the cost surface measured at several "
             "context lengths, `auto-one-length` on its first row (256 cached positions) only.\n",
             *([f"Every assistant was warmed first with {result['warm_tokens']} tokens on another prompt (not timed).\n"]
               if result.get("warm_tokens") else ["Every assistant starts cold.\n"]),
             *(["In bfloat16 a tree pass rounds differently from one-token passes, so outputs may part from greedy's "
                "(exactness is claimed, and tested, in float32).\n"] if result["dtype"] != "float32" else []),
             "| context | method | new tokens | decode s | speedup | MAT | mean tree | same as greedy |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        mat = f"{r['mean_committed']:.2f}" if "mean_committed" in r else "-"
        tree = f"{r['mean_tree']:.1f}" if "mean_tree" in r else "-"
        same = {True: "yes", False: "no"}.get(r.get("same_as_greedy"), "-")
        lines.append(f"| {r['context']} | {r['method']} | {r['new_tokens']} | {r['decode_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {mat} | {tree} | {same} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--part", choices=["contexts", "memory"], default="contexts")
    ap.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192, 16384])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16])
    ap.add_argument("--methods", type=lambda s: s.split(","), default=None,
                    help="only these methods (greedy always runs): auto, auto-one-length, auto-pooled, fixed@B")
    ap.add_argument("--warm-tokens", type=int, default=0,
                    help="tokens every assistant writes on another prompt before the measured call (0: cold)")
    ap.add_argument("--prefix-bytes", type=int, default=256 * 2**20)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--memory-context", type=int, default=2048)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md from an existing OUT")
    args = ap.parse_args(argv)
    if args.report_only:
        args.out.with_suffix(".md").write_text(report(json.loads(args.out.read_text())))
        return 0
    model, tok = models.load(args.model, dtype=args.dtype)
    result = {"command": "python benchmarks/long_context.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "warm_tokens": args.warm_tokens,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.part == "contexts":
        result["rows"] = run_contexts(model, tok, args)
    else:
        result["memory"] = run_memory(model, tok, args)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.part == "contexts":
        args.out.with_suffix(".md").write_text(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
