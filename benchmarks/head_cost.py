"""How much of a tree pass is the vocabulary head, and what computing it for fewer nodes saves.

    python benchmarks/head_cost.py --model qwen2.5-coder-1.5b --dtype bfloat16 \
        --out benchmarks/results/cost/head-qwen2.5-coder-1.5b-bf16.json

For each tree size T the pass is timed in two parts: the transformer body (hidden states of all T
nodes, tree mask, 256 cached positions) and the head over all T rows, over half of them (what
skipping the leaves of a bushy tree would save) and over one row. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from retrodraft import models
from retrodraft.tree import DraftTree


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--sizes", default="1,9,17,33,65")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, _ = models.load(args.model, dtype=args.dtype)
    body, head = model.model, model.lm_head
    vocab = model.config.vocab_size
    past = 255
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, vocab, (1, past + 1), generator=g)
    cache = DynamicCache(config=model.config)
    model(input_ids=prefix[:, :past], cache=cache, use_cache=True)
    rows = []
    for T in [int(x) for x in args.sizes.split(",")]:
        tree = DraftTree.from_paths(int(prefix[0, -1]), [torch.randint(0, vocab, (T - 1,), generator=g).tolist()]) \
            if T > 1 else DraftTree.root_only(int(prefix[0, -1]))
        t_body, t_all, t_half, t_one = [], [], [], []
        for rep in range(args.repeats + 1):
            t0 = time.perf_counter()
            h = body(input_ids=tree.input_ids(), attention_mask=tree.attention_mask(past, model.dtype),
                     position_ids=tree.position_ids(past), cache=cache, use_cache=True).last_hidden_state
            t1 = time.perf_counter()
            head(h).float()
            t2 = time.perf_counter()
            head(h[:, : max(1, T // 2)]).float()
            t3 = time.perf_counter()
            head(h[:, :1]).float()
            t4 = time.perf_counter()
            cache.crop(-T)
            if rep:
                t_body.append(t1 - t0), t_all.append(t2 - t1), t_half.append(t3 - t2), t_one.append(t4 - t3)
        med = lambda xs: float(np.median(xs)) * 1000  # noqa: E731
        r = {"T": T, "body_ms": med(t_body), "head_all_ms": med(t_all), "head_half_ms": med(t_half),
             "head_one_ms": med(t_one)}
        r["head_share"] = r["head_all_ms"] / (r["body_ms"] + r["head_all_ms"])
        r["saving_half_rows"] = (r["head_all_ms"] - r["head_half_ms"]) / (r["body_ms"] + r["head_all_ms"])
        rows.append(r)
        print(f"T={T:3d} body {r['body_ms']:7.1f} ms  head all {r['head_all_ms']:6.1f}  half {r['head_half_ms']:6.1f}"
              f"  one {r['head_one_ms']:6.1f}  head share {100 * r['head_share']:4.1f}%  "
              f"half-rows saving {100 * r['saving_half_rows']:4.1f}% of the pass")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                               "model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
