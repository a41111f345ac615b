"""Tables and plots from ``results.json``: every figure computed from the raw timings.

- speedup = (method tokens/s) / (greedy tokens/s) over the same prompts;
- MAT = mean tokens committed per verification step, the bonus token counted (retrodraft);
- exact = share of prompts whose output is token-for-token greedy's;
- time split = drafting / verification / bookkeeping share of retrodraft's wall time;
- learning curve (sequence suites) = speedup and MAT of each request against its index in the
  sequence, each method over greedy on the same request.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

__all__ = ["summarize", "markdown_table", "pivot_table", "learning_curve", "learning_table", "write_report"]

ALL = "all"
#: The learning-curve tables also sum the requests from this index on (0-based: "from the tenth
#: request on"), where a memory of earlier requests has had time to fill.
LEARNED_FROM = 9


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


def learning_curve(results: dict) -> list[dict]:
    """One row per (sequence, index, method) of the sequence suites, in run order.

    Each row: ``sequence``, ``index``, ``prompt_id``, ``method``, ``tokens``, ``wall_s``,
    ``tok_per_s``, ``speedup`` (over greedy on the same request), ``mat`` (None without
    drafting statistics), ``exact`` (same tokens as greedy).
    """
    recs = [r for r in results["records"] if r.get("sequence") is not None]
    greedy = {(r["sequence"], r["index"]): r for r in recs if r["method"] == "greedy"}
    rows = []
    for r in recs:
        tokens = sum(t["new_tokens"] for t in r["turns"])
        wall = sum(t["wall_s"] for t in r["turns"])
        stats = [t["stats"] for t in r["turns"] if t.get("stats")]
        steps = sum(s["steps"] for s in stats)
        g = greedy.get((r["sequence"], r["index"]))
        g_tps = sum(t["new_tokens"] for t in g["turns"]) / sum(t["wall_s"] for t in g["turns"]) if g else 0.0
        tps = tokens / wall if wall else 0.0
        rows.append({
            "sequence": r["sequence"], "index": r["index"], "prompt_id": r["prompt_id"], "method": r["method"],
            "tokens": tokens, "wall_s": wall, "tok_per_s": tps, "speedup": tps / g_tps if g_tps else None,
            "mat": sum(sum(s["accepted"]) for s in stats) / steps if steps else None,
            "exact": g is not None and [t["tokens"] for t in g["turns"]] == [t["tokens"] for t in r["turns"]],
        })
    return rows


def _ratio(rows: list[dict], method: str, lo: int, keep: set[int] | None = None) -> tuple[float | None, float | None]:
    """Speedup (ratio of summed tokens/s) and MAT of ``method`` over requests with index >= ``lo``
    (and in ``keep`` when given)."""
    own = [r for r in rows if r["method"] == method and r["index"] >= lo and (keep is None or r["index"] in keep)]
    base = [r for r in rows if r["method"] == "greedy" and r["index"] >= lo and (keep is None or r["index"] in keep)]
    if not own or not base:
        return None, None
    tps = sum(r["tokens"] for r in own) / max(1e-12, sum(r["wall_s"] for r in own))
    g_tps = sum(r["tokens"] for r in base) / max(1e-12, sum(r["wall_s"] for r in base))
    mats = [r for r in own if r["mat"] is not None]
    mat = sum(r["mat"] * r["tokens"] for r in mats) / max(1, sum(r["tokens"] for r in mats)) if mats else None
    return tps / g_tps if g_tps else None, mat


def learning_table(curve: list[dict]) -> str:
    """Per sequence: every request's ``speedup (MAT)`` per method, then the whole sequence, the
    requests from :data:`LEARNED_FROM` on (token-weighted MAT), and - when some method's output
    differed from greedy's on some request (bfloat16 near-ties) - the requests where every
    method's output was greedy's own, the like-for-like comparison."""
    out = []
    for seq in dict.fromkeys(r["sequence"] for r in curve):
        rows = [r for r in curve if r["sequence"] == seq]
        methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "greedy"]
        by = {(r["index"], r["method"]): r for r in rows}
        out.append(f"\n**{seq}** (speedup over greedy on the same request, MAT in brackets)\n")
        out.append("| # | request | greedy tok/s | " + " | ".join(m.removeprefix("retrodraft:") for m in methods) + " |")
        out.append("|---:|---|---:|" + "---:|" * len(methods))
        for i in sorted({r["index"] for r in rows}):
            g = by.get((i, "greedy"))
            cells = []
            for m in methods:
                r = by.get((i, m))
                cell = "-" if r is None else f"{_fmt(r['speedup'], '.2f')}x"
                if r is not None and r["mat"] is not None:
                    cell += f" ({r['mat']:.2f})"
                cells.append(cell)
            pid = next(r["prompt_id"] for r in rows if r["index"] == i)
            out.append(f"| {i + 1} | {pid} | {_fmt(g and g['tok_per_s'], '.2f')} | " + " | ".join(cells) + " |")
        n = max(r["index"] for r in rows) + 1
        indices = sorted({r["index"] for r in rows})
        same = {i for i in indices if all(by[(i, m)]["exact"] for m in methods if (i, m) in by)}
        spans = [("all", 0, None), (f"{LEARNED_FROM + 1}-{n}", LEARNED_FROM, None)]
        if 0 < len(same) < len(indices):
            spans.append((f"same output ({len(same)} of {len(indices)})", 0, same))
        for label, lo, keep in spans:
            if lo >= n:
                continue
            cells = []
            for m in methods:
                sp, mat = _ratio(rows, m, lo, keep)
                cells.append(f"**{_fmt(sp, '.2f')}x**" + (f" ({mat:.2f})" if mat is not None else ""))
            out.append(f"| {label} | | | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


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
    skipped = results["config"].get("extra", {}).get("skipped", {})
    for name, why in skipped.items():
        md.append(f"**Skipped** `{name}`: {why}\n")
    if any(r["method"] == "suffix" or r["method"].startswith(("suffix@", "suffix[")) for r in rows):
        md.append("`suffix` is SuffixDecoding's own implementation (arctic-inference's SuffixDecodingCache) at its "
                  "published defaults, drafting for retrodraft's exact tree verifier: every method here is verified "
                  "the same way, so the figures compare drafters, not serving stacks.\n")
    md.append(markdown_table(rows))
    curve = learning_curve(results)
    if curve:
        md.append("\n## Learning curves\n")
        md.append("Sequence suites: each method's state is reset when a sequence starts, then kept from request to "
                  "request.\n")
        md.append(learning_table(curve))
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

    sweep = [(int(m.rsplit("@", 1)[1]), by[(m, ALL)]) for m in methods
             if "@" in m and m.rsplit("@", 1)[1].isdigit() and (m, ALL) in by]
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

    curve = learning_curve(results)
    if curve and (name := _learning_plot(results, curve, out_dir)):
        made.append(name)
    return made


def _learning_plot(results: dict, curve: list[dict], out_dir: Path) -> str | None:
    """``learning_curve.png``: speedup (top) and MAT (bottom) against the request index, one
    column per sequence, one line per method."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    seqs = list(dict.fromkeys(r["sequence"] for r in curve))
    methods = [m for m in dict.fromkeys(r["method"] for r in curve) if m != "greedy"]
    if not seqs or not methods:
        return None
    fig, axes = plt.subplots(2, len(seqs), figsize=(4.5 * len(seqs) + 2, 6.5), squeeze=False, sharex="col")
    for j, seq in enumerate(seqs):
        top, bottom = axes[0][j], axes[1][j]
        for k, m in enumerate(methods):
            rows = sorted((r for r in curve if r["sequence"] == seq and r["method"] == m), key=lambda r: r["index"])
            x = [r["index"] + 1 for r in rows]
            top.plot(x, [r["speedup"] or 0 for r in rows], "o-", ms=3, color=f"C{k}", label=m)
            mats = [(r["index"] + 1, r["mat"]) for r in rows if r["mat"] is not None]
            if mats:
                bottom.plot(*zip(*mats), "o-", ms=3, color=f"C{k}", label=m)
        top.axhline(1.0, color="black", lw=0.8, ls="--")
        top.set_title(seq)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_xlabel("request in the sequence")
        if j == 0:
            top.set_ylabel("speedup over greedy (x)")
            bottom.set_ylabel("MAT (tokens per step)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    env = results["environment"]
    fig.suptitle(f"Learning curves: {env['model']} {env['dtype']}")
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curve.png", dpi=110)
    plt.close(fig)
    return "learning_curve.png"


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
