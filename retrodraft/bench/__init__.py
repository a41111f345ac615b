"""The benchmark suite: real models, real prompts, every method in one interleaved run.

    retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite spec-bench,humaneval \
        --per-category 10 --methods greedy,pld,retrodraft:default --out benchmarks/results/NAME

The library itself never imports this package; the CLI does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import ConfigError
from .data import load_suite
from .methods import make_method
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
) -> Path:
    """Run the suite and write ``results.json``, ``report.md`` and plots into ``out``.

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
    prompts = load_suite(suites or ["spec-bench", "humaneval"], per_category, humaneval_n)
    if threads:
        torch.set_num_threads(threads)
    model_obj, tok = models.load(model, dtype=dtype)
    draft = None
    if "assisted" in methods:
        draft = models.load(draft_model, dtype=dtype)[0] if draft_model else None
    method_objs = [make_method(m, draft, index) for m in methods]
    config = RunConfig(model=model, dtype=dtype, methods=methods, max_new_tokens=max_new_tokens,
                       threads=torch.get_num_threads(), cold=cold, temperature=temperature, draft_model=draft_model,
                       extra={"index": index} if index else {},
                       command=command or "retrodraft " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    out = Path(out)
    results = run(config, prompts, model_obj, tok, method_objs, out, progress=progress)
    return write_report(results, out, plots=plots)
