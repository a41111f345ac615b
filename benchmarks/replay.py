"""Replay a recorded run's greedy outputs through model-free drafters, without the model.

    python benchmarks/replay.py benchmarks/results/qwen2.5-coder-1.5b-bf16-json \
        --drafters lookup history history+lookup --budget 32

Why: a sequence-suite run on the 1.5B model takes half an hour; most of what decides its speed
for copying drafters (``lookup``, ``history``) is which tokens they would have drafted, and that
needs no model: greedy's output is known. Each request is replayed as ``generate`` runs it - the
first token from prefill, then steps of draft (fused, pruned to ``--budget`` nodes, fixed
sizing), greedy acceptance along the tree, the bonus token, and ``observe`` - with the drafters'
state kept from request to request as in the bench. The figure is the replayed MAT (tokens
committed per step), per request and from the tenth request on; drafters that learn from the
model's own candidates (``recycling``, ``stand``, ``aded``) get no candidates here, so only
copying drafters give meaningful figures. It is a development tool: speed claims still come
from ``retrodraft bench``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _recorded import load_run
from retrodraft import RetroDraft
from retrodraft.bench.methods import _drafter
from retrodraft.drafters.base import Outcome, Request


def accept(tree, truth: np.ndarray) -> np.ndarray:
    """Greedy acceptance: the longest root path whose tokens are ``truth``'s next tokens."""
    children = tree.children()
    path, node = [0], 0
    for t in truth:
        nxt = children[node].get(int(t))
        if nxt is None:
            break
        path.append(nxt)
        node = nxt
    return np.asarray(path, np.int64)


def replay_request(assistant: RetroDraft, prompt: np.ndarray, out: np.ndarray, budget: int) -> int:
    """Steps ``assistant`` needs to commit ``out`` after ``prompt`` (prefill's token not counted)."""
    assistant.begin(Request(prompt, vocab_size=1 << 20))
    context = np.concatenate([prompt, out[:1]]).astype(np.int64)
    i, steps = 1, 0
    try:
        while i < len(out):
            tree = assistant.draft(context, budget, max_depth=len(out) - i - 1)
            path = accept(tree, out[i:])
            committed = np.concatenate([tree.tokens[path[1:]], out[i + len(path) - 1: i + len(path)]]).astype(np.int64)
            n = len(tree)
            assistant.observe(Outcome(context, tree, path, committed, np.full((n, 0), -1, np.int32),
                                      np.zeros((n, 0), np.float32)))
            context = np.concatenate([context, committed])
            i += len(committed)
            steps += 1
    finally:
        assistant.end()  # as generate does: the drafters close the request
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench output folder holding results.json")
    ap.add_argument("--drafters", nargs="+", default=["lookup", "history", "history+lookup"],
                    help="drafter sets as in bench methods: names joined by +, options in brackets "
                         "(history[max_fanout=8]+lookup); default: lookup history history+lookup")
    ap.add_argument("--budget", type=int, default=32, help="draft nodes per step (fixed sizing)")
    ap.add_argument("--from-request", type=int, default=10, help="also report MAT from this request on (1-based)")
    args = ap.parse_args()

    _, requests = load_run(args.run)
    data = [(prompt, out) for _, prompt, out in requests]

    print(f"{'drafters':<40} " + " ".join(f"{i + 1:>5}" for i in range(len(data))) + "   all  late")
    for spec in args.drafters:
        assistant = RetroDraft(drafters=[_drafter(p, None, spec) for p in spec.split("+")], sizing="fixed",
                               budget=args.budget)
        mats, toks, steps = [], [], []
        for prompt, out in data:
            s = replay_request(assistant, prompt, out, args.budget)
            toks.append(len(out) - 1)
            steps.append(max(s, 1))
            mats.append(toks[-1] / steps[-1])
        k = args.from_request - 1
        late = sum(toks[k:]) / max(sum(steps[k:]), 1)
        print(f"{spec:<40} " + " ".join(f"{m:5.2f}" for m in mats) + f" {sum(toks) / sum(steps):5.2f} {late:5.2f}")


if __name__ == "__main__":
    main()
