"""Complete HumanEval stubs drafting from an index of the Python standard library.

    python examples/code_completion.py --model qwen2.5-coder-1.5b --dtype bfloat16 --problems 3

Builds ``indexes/stdlib-MODEL`` on first use (the stdlib on disk, tests excluded), then completes
each stub three ways and prints tokens/s: plain greedy, retrodraft without the index, and
retrodraft with it. Outputs are token-for-token identical in float32.
"""

import argparse
import time
from pathlib import Path

from retrodraft import RetroDraft, models
from retrodraft.bench.data import humaneval
from retrodraft.pipelines.code import build_code_index, code_assistant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()
    index = Path("indexes") / f"stdlib-{args.model}"
    if not index.exists():
        h = build_code_index(args.model, index)
        print(f"built {index}: {h['stats']['tokens']:,} tokens")
    model, tok = models.load(args.model, dtype=args.dtype)
    ways = {"greedy": None, "retrodraft": RetroDraft(), "retrodraft+stdlib": code_assistant(index)}
    for p in humaneval(args.problems):
        ids = tok(p.turns[0], return_tensors="pt").input_ids
        for name, assistant in ways.items():
            t = time.perf_counter()
            out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False, assistant=assistant,
                                 pad_token_id=tok.eos_token_id)
            n = out.shape[1] - ids.shape[1]
            extra = f", {assistant.stats.mean_accepted:.2f} tokens/step" if assistant else ""
            print(f"{p.id:20s} {name:18s} {n / (time.perf_counter() - t):6.1f} tok/s{extra}")


if __name__ == "__main__":
    main()
