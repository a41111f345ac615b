"""Does a saved state make the first requests after a restart as fast as in the warm process?

    python benchmarks/restart.py --model smollm2-135m --warm 12 --next 6 \
        --out benchmarks/results/restart/smollm2-135m-fp32.json

One process warms an assistant (default drafters, sizing="auto") on ``--warm`` HumanEval stubs,
saves its state, and decodes the ``--next`` stubs that follow. A fresh process (this script
again, started as a subprocess) loads the model and the saved state and decodes the same
``--next`` stubs (after one throwaway call that warms the code paths, not the state); it also
decodes them with a new, cold assistant for comparison. The figures
are MAT (tokens committed per verification step over all next requests) and tokens per second.
Greedy outputs are checked to be identical in all three runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import retrodraft  # noqa: F401  (installs the generate hook)
from retrodraft import RetroDraft, models
from retrodraft.bench.data import humaneval


def _run(model, tok, assistant, prompts, max_new_tokens: int) -> dict:
    """Decode ``prompts`` in order with ``assistant``; MAT over all steps, tokens/s, outputs."""
    committed, tokens, seconds, outputs = [], 0, 0.0, []
    for text in prompts:
        ids = tok(text, return_tensors="pt").input_ids
        t = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.eos_token_id, assistant=assistant)
        seconds += time.perf_counter() - t
        committed += assistant.stats.committed
        tokens += assistant.stats.new_tokens
        outputs.append(out[0, ids.shape[1]:].tolist())
    return {"mat": float(np.mean(committed)), "steps": len(committed), "tokens": tokens,
            "tokens_per_s": tokens / seconds, "seconds": seconds, "outputs": outputs}


def _load(args):
    model, tok = models.load(args.model, dtype=args.dtype)
    stubs = [p.turns[0] for p in humaneval(args.warm + args.next)]
    return model, tok, stubs[: args.warm], stubs[args.warm:]


def fresh_process(args) -> None:
    """The restarted side: print the JSON of the loaded and the cold runs."""
    model, tok, _, following = _load(args)
    # Compile and warm the code paths on a throwaway assistant, as the warm process already has.
    _run(model, tok, RetroDraft(), ["def add(a, b):\n"], 16)
    t = time.perf_counter()
    loaded = RetroDraft.load(args.state, tok)
    load_s = time.perf_counter() - t
    result = {"after_restart": _run(model, tok, loaded, following, args.max_new_tokens), "load_s": load_s,
              "cold": _run(model, tok, RetroDraft(), following, args.max_new_tokens)}
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--warm", type=int, default=12, help="HumanEval stubs decoded before saving")
    ap.add_argument("--next", type=int, default=6, help="stubs decoded after: warm process vs restarted")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--out", help="JSON file to write")
    ap.add_argument("--state", help=argparse.SUPPRESS)  # set for the restarted side only
    args = ap.parse_args()
    if args.state:
        return fresh_process(args)

    model, tok, warming, following = _load(args)
    warm = RetroDraft()
    before = _run(model, tok, warm, warming, args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        t = time.perf_counter()
        warm.save(state, tok)
        save_s = time.perf_counter() - t
        state_bytes = sum(f.stat().st_size for f in state.iterdir())
        in_process = _run(model, tok, warm, following, args.max_new_tokens)
        cmd = [sys.executable, __file__, "--model", args.model, "--dtype", args.dtype, "--warm", str(args.warm),
               "--next", str(args.next), "--max-new-tokens", str(args.max_new_tokens), "--state", str(state)]
        fresh = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    restarted, cold = fresh["after_restart"], fresh["cold"]
    identical = in_process["outputs"] == restarted["outputs"] == cold["outputs"]
    for r in (before, in_process, restarted, cold):
        del r["outputs"]
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "model": args.model, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
        "warm_prompts": args.warm, "next_prompts": args.next, "max_new_tokens": args.max_new_tokens,
        "warming": before, "warm_process": in_process, "after_restart": restarted, "cold_fresh_process": cold,
        "mat_ratio_restart_vs_warm": restarted["mat"] / in_process["mat"],
        "mat_ratio_cold_vs_warm": cold["mat"] / in_process["mat"],
        "state_bytes": state_bytes, "save_s": save_s, "load_s": fresh["load_s"], "outputs_identical": identical,
    }
    print(f"next {args.next} requests: MAT warm process {in_process['mat']:.3f}, after restart {restarted['mat']:.3f} "
          f"(ratio {result['mat_ratio_restart_vs_warm']:.3f}), cold {cold['mat']:.3f}; tokens/s "
          f"{in_process['tokens_per_s']:.1f} / {restarted['tokens_per_s']:.1f} / {cold['tokens_per_s']:.1f}; "
          f"state {state_bytes / 1e6:.1f} MB saved in {save_s:.2f} s, loaded in {fresh['load_s']:.2f} s; "
          f"outputs identical: {identical}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
