"""How far can copying go? The ceiling of any drafter that copies from memory, per request.

    python benchmarks/copy_ceiling.py benchmarks/results/qwen2.5-coder-1.5b-bf16-json \
        --out benchmarks/results/qwen2.5-coder-1.5b-bf16-json/copy_ceiling.json

Takes a committed sequence-suite run and, for each request, replays plain greedy's own output
against an *oracle* copy drafter: at every step it drafts, from every position of everything
seen so far (earlier requests' prompts and outputs, this prompt, this output up to here), the
one continuation that agrees longest with what the model is about to say. A step then commits
that agreement plus the bonus token. No real drafter can beat this with copied text (it knows
the future to pick the copy source), so its steps bound the step count of ``history``, ``lookup``
and SuffixDecoding alike.

Turning steps into a speed ceiling uses the run's own measurements: prefill seconds and the
cheapest verification pass it saw (seconds per step of the fastest retrodraft method), so
``ceiling speedup = greedy wall / (prefill + steps * step_s)``. Why a workload misses a target
is then a number, not a guess.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from _recorded import first_turn, load_run


def oracle_steps(seen: np.ndarray, out: np.ndarray, cap: int) -> int:
    """Steps an oracle copier needs for ``out`` given ``seen`` tokens before it.

    Args:
        seen: ``(S,)`` token ids known before the output starts.
        out: ``(N,)`` the output, in order.
        cap: most tokens drafted in one step (the tree's depth).
    """
    corpus = np.concatenate([seen, out]).astype(np.int64)
    s, n = len(seen), len(out)
    i, steps = 0, 0
    while i < n:
        end = s + i  # copy sources start before the current position
        best = 0
        starts = np.nonzero(corpus[:end] == out[i])[0]
        for p in starts:
            m = 0
            while m < cap and i + m < n and p + m < end and corpus[p + m] == out[i + m]:
                m += 1
            best = max(best, m)
            if best >= cap:
                break
        i += min(best, n - i - 1) + 1 if best else 1  # drafted tokens plus the bonus
        steps += 1
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench output folder holding results.json")
    ap.add_argument("--cap", type=int, default=64, help="deepest draft per step (default 64)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    res, requests = load_run(args.run)
    by = {(r["prompt_id"], r["method"]): first_turn(r) for r in res["records"]}
    rd = [m for m in res["config"]["methods"] if m.startswith("retrodraft:")]

    seen = np.zeros(0, np.int64)
    rows, tot = [], {"greedy_s": 0.0, "ceiling_s": 0.0, "tokens": 0, "steps": 0}
    for pid, prompt_ids, out in requests:
        g = by[(pid, "greedy")]
        steps = oracle_steps(np.concatenate([seen, prompt_ids]), out, args.cap)
        runs = [by[(pid, m)]["stats"] for m in rd if by[(pid, m)].get("stats")]
        prefill = min(s["prefill_s"] for s in runs)
        step_s = min(s["verify_s"] / s["steps"] for s in runs)
        ceiling_s = prefill + steps * step_s
        rows.append({"request": pid, "tokens": len(out), "oracle_steps": steps,
                     "oracle_mat": len(out) / steps, "greedy_s": g["wall_s"], "prefill_s": prefill,
                     "step_s": step_s, "ceiling_speedup": g["wall_s"] / ceiling_s})
        for k, v in (("greedy_s", g["wall_s"]), ("ceiling_s", ceiling_s), ("tokens", len(out)), ("steps", steps)):
            tot[k] += v
        seen = np.concatenate([seen, prompt_ids, out])
        print(f"{pid}: {len(out)} tokens, oracle MAT {len(out) / steps:.2f}, "
              f"ceiling {g['wall_s'] / ceiling_s:.2f}x", flush=True)

    late = rows[9:]
    summary = {"oracle_mat": tot["tokens"] / tot["steps"], "ceiling_speedup": tot["greedy_s"] / tot["ceiling_s"]}
    if late:
        summary["ceiling_speedup_from_request_10"] = (sum(r["greedy_s"] for r in late) /
                                                      sum(r["prefill_s"] + r["oracle_steps"] * r["step_s"] for r in late))
        summary["oracle_mat_from_request_10"] = sum(r["tokens"] for r in late) / sum(r["oracle_steps"] for r in late)
    print(json.dumps(summary, indent=1))
    args.out.write_text(json.dumps({"command": "python benchmarks/copy_ceiling.py " + shlex.join(sys.argv[1:]),
                                    "cap": args.cap, "summary": summary, "requests": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
