"""``vllm_bench.py``'s report.md from its results.json: one table per mode, every row naming its mode.

results.json keeps each method's runs under ``runs``: offline runs (``LLM.generate``) keyed by
their concurrency (``"4"``, as every run before server mode was), server runs (`vllm serve`) by
``"server:4"``. A run without a ``mode`` field is an offline one.
"""

from __future__ import annotations

MODES = ("offline", "server")
TITLES = {"offline": "Offline: `LLM.generate`, prompts sent in groups of `concurrency`.",
          "server": "Server: `vllm serve` (OpenAI completions endpoint, token-id prompts), "
                    "`concurrency` requests in flight; latency per request, seconds."}
OFFLINE_STEPS = (("prefill_s", "prefill s", "{:.1f}"), ("decode_s", "decode s", "{:.1f}"),
                 ("decode_tok_s", "decode tok/s", "{:.2f}"), ("decode_steps", "decode steps", "{}"),
                 ("decode_ms_per_step", "ms/decode step", "{:.0f}"), ("ceiling_tok_s", "ceiling tok/s", "{:.2f}"))
SERVER_LATENCY = (("latency_mean_s", "latency mean", "{:.2f}"), ("latency_p50_s", "latency p50", "{:.2f}"),
                  ("latency_p90_s", "latency p90", "{:.2f}"))


def run_key(mode: str, concurrency: int | str) -> str:
    """The key of a run in ``methods[m]["runs"]``: ``run_key("server", 4)`` -> ``"server:4"``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    return str(concurrency) if mode == "offline" else f"{mode}:{concurrency}"


def split_key(key: str) -> tuple[str, int]:
    """``"server:4"`` -> ``("server", 4)``; ``"4"`` -> ``("offline", 4)``."""
    mode, _, c = key.rpartition(":")
    return mode or "offline", int(c)


def _cell(run: dict, key: str, fmt: str) -> str:
    return fmt.format(run[key]) if run.get(key) is not None else "-"


def _same(run: dict, other: dict | None) -> str:
    return str(run["outputs"] == other["outputs"]) if other else "-"


def table(results: dict, mode: str) -> list[str]:
    """The markdown table of ``mode``'s runs (no lines when there are none)."""
    extra = OFFLINE_STEPS if mode == "offline" else SERVER_LATENCY
    head = ["mode", "method", "concurrency", "tok/s", "speedup over none", "mean acceptance length",
            "drafting ms/step"] + [h for _, h, _ in extra] + ["identical to none"]
    if mode == "server":
        head.append("identical to offline")
    rows = []
    for m, res in results["methods"].items():
        runs = res.get("runs", {})
        none = results["methods"].get("none", {}).get("runs", {})
        for key, run in sorted(runs.items(), key=lambda kv: split_key(kv[0])[1]):
            run_mode, c = split_key(key)
            if run_mode != mode:
                continue
            b = none.get(key)
            mal = run["mean_acceptance_length"]
            draft = (run.get("proposer_stats") or {}).get("draft_ms_per_step")
            cells = [mode, m, str(c), f"{run['tok_s']:.2f}", f"{run['tok_s'] / b['tok_s']:.2f}x" if b else "-",
                     f"{mal:.2f}" if mal else "-", f"{draft:.2f}" if draft is not None else "-"]
            cells += [_cell(run, k, fmt) for k, _, fmt in extra] + [_same(run, b)]
            if mode == "server":
                cells.append(_same(run, runs.get(run_key("offline", c))))
            rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + rows


def render(results: dict) -> str:
    """report.md: every command stored in the runs, then a title and a table per mode run."""
    commands = sorted({run.get("command", "") for res in results["methods"].values()
                       for run in res.get("runs", {}).values()} - {""})
    parts = [f"`{c}`\n" for c in commands]
    for mode in MODES:
        lines = table(results, mode)
        if lines:
            parts.append(TITLES[mode] + "\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)
