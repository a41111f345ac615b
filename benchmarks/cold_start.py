"""Cold starts: a fresh RetroDraft per prompt, against plain greedy, for several initial trusts.

    python benchmarks/cold_start.py --model smollm2-135m --prompts 6 --trust 1.0,0.5,0.3 \
        --out benchmarks/results/cold-start/smollm2-135m-fp32.json

The benchmark suite keeps drafter state and the tree sizer's calibration across prompts (a warm
start, as a server would); this measures the other case - the first call of a new assistant - on
one chat question the drafters cannot predict plus HumanEval stubs. Plain greedy runs before and
after the assistants and its mean is the baseline. Speedups only; outputs are exact by design.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from retrodraft import RetroDraft, models
from retrodraft.bench.data import humaneval
from retrodraft.cost import CostModel
from retrodraft.sizing import TreeSizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=6, help="HumanEval stubs (plus one chat question)")
    ap.add_argument("--trust", default="1.0,0.5,0.3")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model, tok = models.load(args.model, dtype=args.dtype)
    chat = tok.apply_chat_template([{"role": "user", "content": "Explain in three sentences what binary search does."}],
                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    prompts = [("chat", chat)] + [(p.id, tok(p.turns[0], return_tensors="pt").input_ids) for p in humaneval(args.prompts)]
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
    model.generate(chat, **{**kw, "max_new_tokens": 8})
    cost = CostModel.for_model(model)

    def timed(assistant_factory) -> list[float]:
        out = []
        for _, ids in prompts:
            a = assistant_factory()
            t = time.perf_counter()
            model.generate(ids, **kw, **({"assistant": a} if a is not None else {}))
            out.append(time.perf_counter() - t)
        return out

    before = timed(lambda: None)

    def make(trust: float):
        def factory():
            a = RetroDraft(cost=cost)
            a.sizer = TreeSizer(cost, budget=a.budget, trust=trust)
            return a
        return factory

    trusts = [float(x) for x in args.trust.split(",")]
    runs = {t: timed(make(t)) for t in trusts}
    plain = (np.array(before) + np.array(timed(lambda: None))) / 2
    result = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "model": args.model,
              "dtype": args.dtype, "prompts": [p for p, _ in prompts], "plain_s": plain.tolist(), "by_trust": {}}
    for t, secs in runs.items():
        s = np.array(secs)
        result["by_trust"][str(t)] = {"seconds": s.tolist(), "speedup": (plain / s).round(3).tolist(),
                                      "total_speedup": float(plain.sum() / s.sum())}
        print(f"trust {t}: per prompt {(plain / s).round(2).tolist()}, total {plain.sum() / s.sum():.3f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
