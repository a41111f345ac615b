"""Rewrite the README's results section from committed benchmark runs (never typed by hand).

    python benchmarks/update_readme.py [--compact] benchmarks/results/RUN [benchmarks/results/RUN2 ...]

``--compact``: one category x method grid of speedup (MAT) per run instead of every figure.
"""

import json
import re
import sys
from pathlib import Path

from retrodraft.bench.report import markdown_table, pivot_table, summarize

START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(run: Path, compact: bool = False) -> str:
    res = json.loads((run / "results.json").read_text())
    env = res["environment"]
    rows = [r for r in summarize(res) if r["category"] != "all" or len({x["category"] for x in res["records"]}) > 1]
    table = pivot_table(rows) if compact else markdown_table(rows)
    note = "Cells: speedup over greedy (mean tokens committed per step).\n\n" if compact else ""
    return (
        f"### {env['model']} {env['dtype']} ({env['cpu']}, {env['threads']} threads)\n\n"
        f"`{env['command']}` (git {env['git_commit'][:10]}{', dirty tree' if env.get('git_dirty') else ''}; "
        f"full report with every figure: [{run}/report.md]({run}/report.md))\n\n" + note + table
    )


def main(runs: list[str]) -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    compact = "--compact" in runs
    runs = [r for r in runs if r != "--compact"]
    body = "\n".join(section(Path(r), compact) for r in runs)
    text = readme.read_text()
    block = f"{START}\n{body}{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("RESULTS_PLACEHOLDER", block)
    readme.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
