"""Rewrite the README's results section from committed benchmark runs (never typed by hand).

    python benchmarks/update_readme.py benchmarks/results/RUN [benchmarks/results/RUN2 ...]
"""

import json
import re
import sys
from pathlib import Path

from retrodraft.bench.report import markdown_table, summarize

START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    env = res["environment"]
    rows = [r for r in summarize(res) if r["category"] != "all" or len({x["category"] for x in res["records"]}) > 1]
    return (
        f"### {env['model']} {env['dtype']} ({env['cpu']}, {env['threads']} threads)\n\n"
        f"`{env['command']}` (git {env['git_commit'][:10]}; full report: [{run}/report.md]({run}/report.md))\n\n"
        + markdown_table(rows)
    )


def main(runs: list[str]) -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    body = "\n".join(section(Path(r)) for r in runs)
    text = readme.read_text()
    block = f"{START}\n{body}{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("RESULTS_PLACEHOLDER", block)
    readme.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
