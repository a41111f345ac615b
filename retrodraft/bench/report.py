"""Tables and plots from ``results.json``: every figure computed from the raw timings.

- speedup = (method tokens/s) / (greedy tokens/s) over the same prompts;
- MAT = mean tokens committed per verification step, the bonus token counted (retrodraft);
- exact = share of prompts whose output is token-for-token greedy's;
- time split = drafting / verification / bookkeeping share of retrodraft's wall time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

__all__ = ["summarize", "markdown_table", "pivot_table", "write_report"]

ALL = "all"


def summarize(results: dict) -> list[dict]:
    """One row per (method, category), plus an ``all`` row per method."""
    recs = results["records"]
    greedy_tokens = {(r["prompt_id"], r["category"]): [t["tokens"] for t in r["turns"]] for r in recs if r["method"] == "greedy"}
    acc: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    for r in recs:
        for cat in (r["category"], ALL):
            a = acc[(r["method"], cat)]
            a["prompts"] += 1
            ref = greedy_tokens.get((r["prompt_id"], r["category"]))
            a["exact"] += float(ref is not None and ref == [t["tokens"] for t in r["turns"]])
            for t in r["turns"]:
                a["peak_mem_mb"] = max(a["peak_mem_mb"], t.get("peak_mem_mb", 0.0))
                a["tokens"] += t["new_tokens"]
                a["wall_s"] += t["wall_s"]
                s = t.get("stats")
                if s:
                    a["has_stats"] = 1
                    a["steps"] += s["steps"]
                    a["committed"] += sum(s["accepted"])
                    a["nodes"] += sum(s["tree_sizes"])
                    a["draft_s"] += s["draft_s"]
                    a["verify_s"] += s["verify_s"]
                    a["bookkeeping_s"] += s["bookkeeping_s"]
                    a["prefill_s"] += s.get("prefill_s", 0.0)
    rows = []
    for (method, cat), a in acc.items():
        tps = a["tokens"] / a["wall_s"] if a["wall_s"] else 0.0
        g = acc.get(("greedy", cat))
        g_tps = g["tokens"] / g["wall_s"] if g and g["wall_s"] else 0.0
        row = {
            "method": method,
            "category": cat,
            "prompts": int(a["prompts"]),
            "tokens": int(a["tokens"]),
            "wall_s": a["wall_s"],
            "tok_per_s": tps,
            "speedup": tps / g_tps if g_tps else None,
            "exact": a["exact"] / a["prompts"],
            "mat": a["committed"] / a["steps"] if a.get("steps") else None,
            "mean_tree": a["nodes"] / a["steps"] if a.get("steps") else None,
            "peak_mem_mb": a["peak_mem_mb"],
        }
        if a.get("has_stats") and a["wall_s"]:
            row["draft_share"] = a["draft_s"] / a["wall_s"]
            row["verify_share"] = a["verify_s"] / a["wall_s"]
            row["bookkeeping_share"] = a["bookkeeping_s"] / a["wall_s"]
            row["prefill_share"] = a["prefill_s"] / a["wall_s"]
        rows.append(row)
    methods = list(dict.fromkeys(r["method"] for r in recs))
    cats = list(dict.fromkeys(r["category"] for r in recs)) + [ALL]
    rows.sort(key=lambda r: (cats.index(r["category"]), methods.index(r["method"])))
    return rows


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def markdown_table(rows: list[dict]) -> str:
    head = "| category | method | prompts | tokens | tok/s | speedup | MAT | mean tree | exact | peak +MB | prefill / draft / verify / bookkeeping |\n"
    head += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    lines = []
    for r in rows:
        split = "-"
        if "draft_share" in r:
            split = (f"{r['prefill_share']:.0%} / {r['draft_share']:.0%} / {r['verify_share']:.0%} / "
                     f"{r['bookkeeping_share']:.0%}")
        lines.append(
            f"| {r['category']} | {r['method']} | {r['prompts']} | {r['tokens']} | {r['tok_per_s']:.2f} | "
            f"{_fmt(r['speedup'], '.2f')}x | {_fmt(r['mat'], '.2f')} | {_fmt(r['mean_tree'], '.1f')} | "
            f"{r['exact']:.0%} | {r['peak_mem_mb']:.0f} | {split} |"
        )
    return head + "\n".join(lines) + "\n"


def pivot_table(rows: list[dict]) -> str:
    """Category x method grid of ``speedup (MAT)``, with greedy's tokens/s as the baseline column;
    the compact view for a README (``markdown_table`` has every figure)."""
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "greedy"]
    cats = list(dict.fromkeys(r["category"] for r in rows))
    by = {(r["method"], r["category"]): r for r in rows}
    head = "| category | greedy tok/s | " + " | ".join(m.removeprefix("retrodraft:") for m in methods) + " |\n"
    head += "|---|---:|" + "---:|" * len(methods) + "\n"
    lines = []
    for c in cats:
        g = by.get(("greedy", c))
        cells = []
        for m in methods:
            r = by.get((m, c))
            if r is None:
                cells.append("-")
                continue
            cell = f"{_fmt(r['speedup'], '.2f')}x"
            if r["mat"] is not None:
                cell += f" ({r['mat']:.2f})"
            cells.append(f"**{cell}**" if c == ALL else cell)
        lines.append(f"| {c} | {g['tok_per_s']:.2f} | " + " | ".join(cells) + " |" if g else
                     f"| {c} | - | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def write_report(results: dict, out_dir: Path, plots: bool = True) -> Path:
    """Write ``report.md`` (and PNG plots) next to ``results.json``; return the report path."""
    rows = summarize(results)
    env = results["environment"]
    flagged = sorted({r["method"] for r in rows if r["category"] == ALL and r["method"] != "greedy" and r["exact"] < 1})
    md = [f"# Benchmark: {env['model']} ({env['dtype']}) on {env['cpu']}\n"]
    md.append(f"Command: `{env['command']}`\n")
    md.append(
        f"torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads, "
        f"git {env['git_commit'][:10]}{' (dirty)' if env.get('git_dirty') else ''}, peak RSS "
        f"{results.get('peak_rss_mb', 0):.0f} MB.\n"
    )
    md.append("Speedup = tokens/s over plain greedy `generate` on the same prompts. MAT = mean tokens committed per "
              "verification step (bonus token counted). Exact = outputs identical to greedy. Peak +MB = the most "
              "memory one call added over what the process held before it. The split is the share of wall time in "
              "prefill, drafting (propose + observe), the tree pass, and acceptance/cache/stopping bookkeeping.\n")
    if flagged:
        md.append(f"**Output differs from greedy** for: {', '.join(flagged)} (see the exact column).\n")
    md.append(markdown_table(rows))
    if plots:
        for name in _plots(results, rows, out_dir):
            md.append(f"\n![{name}]({name})\n")
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path


def _plots(results: dict, rows: list[dict], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    made = []
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "greedy"]
    cats = list(dict.fromkeys(r["category"] for r in rows))
    by = {(r["method"], r["category"]): r for r in rows}
    if methods:
        fig, ax = plt.subplots(figsize=(min(14, max(6, 0.25 * len(cats) * max(1, len(methods)) + 2)), 4.5))
        w = 0.8 / len(methods)
        x = np.arange(len(cats))
        for j, m in enumerate(methods):
            vals = [by.get((m, c), {}).get("speedup") or 0 for c in cats]
            ax.bar(x + j * w - 0.4 + w / 2, vals, w, label=m)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xticks(x, cats, rotation=20)
        ax.set_ylabel("speedup over greedy (x)")
        ax.set_title(f"{results['environment']['model']} {results['environment']['dtype']}: speedup by category")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / "speedup.png", dpi=110)
        plt.close(fig)
        made.append("speedup.png")

    dist = defaultdict(list)
    for r in results["records"]:
        for t in r["turns"]:
            if t.get("stats"):
                dist[r["method"]] += t["stats"]["accepted"]
    if dist:
        fig, ax = plt.subplots(figsize=(6, 4))
        top = max(max(v) for v in dist.values())
        bins = np.arange(1, top + 2) - 0.5
        for m, v in dist.items():
            ax.hist(v, bins=bins, histtype="step", density=True, label=f"{m} (MAT {np.mean(v):.2f})", lw=1.5)
        ax.set_xlabel("tokens committed per verification step")
        ax.set_ylabel("share of steps")
        ax.set_title("Accepted tokens per step")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "mat.png", dpi=110)
        plt.close(fig)
        made.append("mat.png")

    split = [(m, by[(m, ALL)]) for m in methods if "draft_share" in by.get((m, ALL), {})]
    if split:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(split)) + 2.5, 4))
        parts = [("prefill_share", "prefill"), ("draft_share", "drafting"), ("verify_share", "tree pass"),
                 ("bookkeeping_share", "bookkeeping")]
        bottom = np.zeros(len(split))
        for key, label in parts:
            vals = np.array([r[key] for _, r in split])
            ax.bar(range(len(split)), vals, bottom=bottom, label=label)
            bottom += vals
        ax.bar(range(len(split)), 1 - bottom, bottom=bottom, label="other (generate overhead)", color="lightgrey")
        ax.set_xticks(range(len(split)), [m.removeprefix("retrodraft:") for m, _ in split], rotation=20)
        ax.set_ylabel("share of wall time")
        ax.set_ylim(0, 1)
        ax.set_title("Where the time goes (all prompts)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / "time_split.png", dpi=110)
        plt.close(fig)
        made.append("time_split.png")

    sweep = [(int(m.rsplit("@", 1)[1]), by[(m, ALL)]) for m in methods if "@" in m and (m, ALL) in by]
    if len(sweep) >= 2:
        sweep.sort()
        fig, ax1 = plt.subplots(figsize=(6, 4))
        b = [s[0] for s in sweep]
        ax1.plot(b, [s[1]["speedup"] for s in sweep], "o-", label="speedup")
        ax1.set_xscale("log", base=2)
        ax1.set_xlabel("draft node budget")
        ax1.set_ylabel("speedup over greedy (x)")
        ax2 = ax1.twinx()
        ax2.plot(b, [s[1]["mat"] for s in sweep], "s--", color="tab:orange", label="MAT")
        ax2.set_ylabel("mean accepted tokens per step")
        ax1.set_title(f"Tree-size sweep ({results['environment']['dtype']}, {results['environment']['device']})")
        fig.tight_layout()
        fig.savefig(out_dir / "sweep.png", dpi=110)
        plt.close(fig)
        made.append("sweep.png")
    return made


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
