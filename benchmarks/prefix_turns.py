"""Per-turn prefill of a sequence-suite run: how much of each prompt the prefix cache reused.

    python benchmarks/prefix_turns.py benchmarks/results/qwen2.5-coder-1.5b-bf16-agent-reuse

Reads ``RUN/results.json`` (written by ``retrodraft bench``) and writes ``RUN/prefix_turns.md``:
for every request, the prompt tokens, and per method the positions reused from the prefix cache,
the prefill seconds and the whole call's seconds; then per method the totals, the prefill share of
its time, its speedup over greedy (whole calls), and the prefill of turns 2+ against the method
with the prefix cache off.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path


def summarize(results: dict) -> str:
    by_prompt: dict[str, dict[str, dict]] = defaultdict(dict)
    prompt_tokens: dict[str, int] = {}
    for r in results["records"]:
        t = r["turns"][0]
        s = t.get("stats") or {}
        by_prompt[r["prompt_id"]][r["method"]] = {"wall": t["wall_s"], "prefill": s.get("prefill_s"),
                                                  "reused": s.get("prefix_reused"), "tokens": t["new_tokens"],
                                                  "out": t.get("tokens")}
        prompt_tokens[r["prompt_id"]] = t["prompt_tokens"]
    methods = list(dict.fromkeys(r["method"] for r in results["records"]))
    drafting = [m for m in methods if m != "greedy"]
    lines = ["| request | prompt tokens | " + " | ".join(f"{m}: reused / prefill s / call s" for m in drafting)
             + " | greedy call s |", "|---|---:|" + "---:|" * (len(drafting) + 1)]
    for pid, ms in by_prompt.items():
        cells = []
        for m in drafting:
            x = ms.get(m)
            pre = "-" if x is None or x["prefill"] is None else f"{x['prefill']:.2f}"
            cells.append("-" if x is None else f"{x['reused'] or 0} / {pre} / {x['wall']:.2f}")
        g = ms.get("greedy")
        lines.append(f"| {pid} | {prompt_tokens[pid]} | " + " | ".join(cells) + f" | {g['wall']:.2f} |"
                     if g else f"| {pid} | {prompt_tokens[pid]} | " + " | ".join(cells) + " | - |")
    lines += ["", "| method | tokens | call s | tok/s | speedup | prefill s | prefill share | prefill s, turns 2+ |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    pids = list(by_prompt)
    totals = {}
    for m in methods:
        rows = [by_prompt[p][m] for p in pids if m in by_prompt[p]]
        wall, tokens = sum(x["wall"] for x in rows), sum(x["tokens"] for x in rows)
        pre = sum(x["prefill"] or 0.0 for x in rows)
        later = sum(by_prompt[p][m]["prefill"] or 0.0 for p in pids[1:] if m in by_prompt[p])
        totals[m] = (wall, tokens, pre, later)
    g_tps = totals["greedy"][1] / totals["greedy"][0] if "greedy" in totals else None
    for m, (wall, tokens, pre, later) in totals.items():
        tps = tokens / wall
        speed = f"{tps / g_tps:.2f}x" if g_tps else "-"
        has = any(by_prompt[p][m]["prefill"] is not None for p in pids if m in by_prompt[p])
        lines.append(f"| {m} | {tokens} | {wall:.1f} | {tps:.2f} | {speed} | {pre:.1f} | "
                     + (f"{pre / wall:.0%} | {later:.1f} |" if has else "- | - |"))
    lines += ["", "Prefilled = prompt tokens minus reused ones, the tokens each call ran through the model before "
              "decoding:", "", "| request | " + " | ".join(f"{m}: prefilled / ms per prefilled token" for m in drafting
                                                           if any(by_prompt[p].get(m, {}).get("prefill") is not None
                                                                  for p in pids)) + " |"]
    with_prefill = [m for m in drafting if any(by_prompt[p].get(m, {}).get("prefill") is not None for p in pids)]
    lines.append("|---|" + "---:|" * len(with_prefill))
    for pid in pids:
        cells = []
        for m in with_prefill:
            x = by_prompt[pid].get(m)
            if x is None or x["prefill"] is None:
                cells.append("-")
                continue
            n = prompt_tokens[pid] - (x["reused"] or 0)
            cells.append(f"{n} / {1000 * x['prefill'] / n:.1f}" if n else "0 / -")
        lines.append(f"| {pid} | " + " | ".join(cells) + " |")
    lines += _closed_loop(by_prompt, prompt_tokens, with_prefill)
    off = [m for m in drafting if m.endswith("/noreuse")]
    for m in off:
        on = m[: -len("/noreuse")]
        if on in totals and totals[on][3] > 0:
            lines.append(f"\nPrefill of turns 2+: {totals[m][3]:.1f} s with the prefix cache off ({m}), "
                         f"{totals[on][3]:.1f} s with it on ({on}): {totals[m][3] / totals[on][3]:.1f}x less.")
    return "\n".join(lines) + "\n"


def _closed_loop(by_prompt: dict, prompt_tokens: dict, methods: list[str]) -> list[str]:
    """Where the prefill of an ``agent-loop`` run goes, per method with the prefix cache on.

    A closed-loop request resends the previous request's prompt and greedy's reply, so the prefix
    cache could hold ``reusable`` = previous prompt + previous output - 1 positions (the cache keeps
    every token but the last); the rest of the prompt (``appended``: the tool observation and the
    chat template's tokens) must be prefilled by any method. ``not reused`` = reusable - reused: the
    positions lost where the method's own previous output parted from greedy's (bfloat16 near-ties)
    or the store evicted the entry. The floor is the prefill share if only the first prompt and
    the appended tokens were prefilled, at the method's own mean seconds per prefilled token.
    """
    pids = [p for p in by_prompt if p.startswith("agent-loop/")]
    on = [m for m in methods if not m.endswith("/noreuse")]
    if not pids or not on or any("greedy" not in by_prompt[p] for p in pids):
        return []
    lines = ["", "Closed loop (agent-loop): reusable = the previous request's prompt and greedy's reply (minus the "
             "last token); appended = the rest of the prompt (tool observation, chat-template tokens); not reused = "
             "reusable positions lost where the method's previous output parted from greedy's.", "",
             "| method | first prompts | appended | not reused (requests after a diverged output) | prefilled | "
             "ms per prefilled token | ms per decoded token | prefill share | floor: first prompts + appended only |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in on:
        first = appended = lost = 0
        diverged = []
        prev = None
        for pid in pids:
            x = by_prompt[pid].get(m)
            if x is None or x["prefill"] is None:
                return []
            episode = pid.rsplit("/", 1)[0]
            if prev is None or prev[0] != episode:
                first += prompt_tokens[pid] - (x["reused"] or 0)
            else:
                reusable = min(prompt_tokens[pid] - 1, prompt_tokens[prev[1]] + by_prompt[prev[1]]["greedy"]["tokens"] - 1)
                appended += prompt_tokens[pid] - reusable
                lost += reusable - (x["reused"] or 0)
                if by_prompt[prev[1]][m]["out"] != by_prompt[prev[1]]["greedy"]["out"] and reusable > (x["reused"] or 0):
                    diverged.append(pid.rsplit("/", 1)[1])
            prev = (episode, pid)
        rows = [by_prompt[p][m] for p in pids]
        pre, wall = sum(x["prefill"] for x in rows), sum(x["wall"] for x in rows)
        filled = sum(prompt_tokens[p] - (by_prompt[p][m]["reused"] or 0) for p in pids)
        per = pre / filled if filled else 0.0
        floor = (first + appended) * per
        lines.append(f"| {m} | {first} | {appended} | {lost} ({', '.join(diverged) or 'none'}) | {filled} | "
                     f"{1000 * per:.1f} | {1000 * (wall - pre) / sum(x['tokens'] for x in rows):.1f} | "
                     f"{pre / wall:.0%} | {floor / (wall - pre + floor):.0%} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench output folder (holding results.json)")
    args = ap.parse_args(argv)
    results = json.loads((args.run / "results.json").read_text())
    env = results.get("environment", {})
    head = (f"# Prefill per request: {results['config'].get('model')} ({results['config'].get('dtype')})\n\n"
            f"Made by: `python benchmarks/{Path(__file__).name} {args.run.as_posix()}` from the run of "
            f"`{results['config'].get('command') or env.get('command', '?')}`.\n\n"
            "Reused = prompt positions whose KV came from the prefix cache (earlier requests' prompt and output) "
            "instead of being prefilled; call s = the whole generate call.\n\n")
    text = head + summarize(results)
    (args.run / "prefix_turns.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
