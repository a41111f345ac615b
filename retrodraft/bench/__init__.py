"""The benchmark suite: real models, real prompts, every method in one interleaved run.

    retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite spec-bench,humaneval \
        --per-category 10 --methods greedy,pld,retrodraft:default --out benchmarks/results/NAME

    retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite refactor,json,agent \
        --max-new-tokens 512 --methods greedy,pld,suffix,retrodraft:default --out benchmarks/results/NAME

``refactor``, ``json``, ``agent`` and ``agent-loop`` are sequence suites: one persistent assistant per method
answers their requests in order, and the report plots speedup and MAT against the request index.
``suffix`` is SuffixDecoding's own implementation as a drafter under retrodraft's verifier
(:mod:`.peers`); without arctic-inference installed it is skipped with the install command.

Where benchmark code lives: this package (``retrodraft/bench/``) is the suite behind
``retrodraft bench`` - the prompts with their data (``suites/``, shipped as package data, so an
installed wheel runs every suite), the methods, the interleaved runner and the report. The
repository's ``benchmarks/`` folder (not installed) holds stand-alone scripts that measure one
thing each (cost curves, index and memory benchmarks, long runs, restarts) and every committed run
in ``benchmarks/results/``, listed with its command in the generated ``benchmarks/README.md``.

The library itself never imports this package; the CLI does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import ConfigError
from .data import load_suite
from .methods import make_method
from .peers import MethodUnavailable
from .report import write_report
from .runner import RunConfig, run

__all__ = ["bench"]


def bench(
    model: str,
    dtype: str = "float32",
    suites: list[str] | None = None,
    per_category: int = 10,
    humaneval_n: int | None = None,
    methods: list[str] | None = None,
    sweep: list[int] | None = None,
    max_new_tokens: int = 256,
    threads: int | None = None,
    cold: bool = False,
    temperature: float = 0.0,
    draft_model: str | None = None,
    index: list[str] | None = None,
    out: str | Path = "benchmarks/results/latest",
    progress: bool = True,
    plots: bool = True,
    command: str | None = None,
    requests: int | None = None,
) -> Path:
    """Run the suite and write ``results.json``, ``report.md`` and plots into ``out``.

    ``requests`` caps the requests of each sequence suite (default: all). A method whose
    third-party package is missing (``suffix`` without arctic-inference) is skipped with a
    message on stderr and a note in the report.

    Returns:
        The path of ``report.md``.
    """
    import torch

    from .. import models

    methods = list(methods or ["greedy", "pld", "retrodraft:default"])
    if "greedy" not in methods:
        methods.insert(0, "greedy")
    for b in sweep or []:
        methods.append(f"retrodraft:default@{b}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if per_category < 1:
        raise ConfigError(f"per_category must be >= 1, got {per_category}")
    if requests is not None and requests < 1:
        raise ConfigError(f"requests must be >= 1, got {requests}")
    prompts = load_suite(suites or ["spec-bench", "humaneval"], per_category, humaneval_n, requests)
    if threads:
        torch.set_num_threads(threads)
    model_obj, tok = models.load(model, dtype=dtype)
    draft = None
    if "assisted" in methods:
        draft = models.load(draft_model, dtype=dtype)[0] if draft_model else None
    method_objs, skipped = [], {}
    for m in methods:
        try:
            method_objs.append(make_method(m, draft, index))
        except MethodUnavailable as e:
            skipped[m] = str(e)
            print(f"retrodraft bench: skipping method {m!r}: {e}", file=sys.stderr)
    methods = [m.name for m in method_objs]
    extra: dict = {"index": index} if index else {}
    if skipped:
        extra["skipped"] = skipped
    config = RunConfig(model=model, dtype=dtype, methods=methods, max_new_tokens=max_new_tokens,
                       threads=torch.get_num_threads(), cold=cold, temperature=temperature, draft_model=draft_model,
                       extra=extra,
                       command=command or "retrodraft " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    out = Path(out)
    results = run(config, prompts, model_obj, tok, method_objs, out, progress=progress)
    return write_report(results, out, plots=plots)
