"""Make the ``json`` benchmark set: one extraction schema, many short texts, asked in sequence.

    python retrodraft/bench/suites/json/make_json.py [--n 16]

The texts are SQuAD v2 paragraphs (CC-BY-SA-4.0) already shipped in ``../squad/questions.jsonl``:
for each question in file order, the first of its retrieved passages of 60-140 words not taken
yet, until ``n`` texts. ``requests.jsonl`` keeps the texts; ``schema.json`` the fixed system
prompt (with the schema) that every request sends, so the answers share their keys, order and
layout - the workload where memory across requests pays.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCHEMA = {
    "topic": "string: what the text is mainly about, in at most five words",
    "people": ["string: full names of the people mentioned, in order of appearance"],
    "places": ["string: countries, cities, regions, rivers and other places mentioned"],
    "organizations": ["string: institutions, companies, states and groups mentioned"],
    "dates": ["string: years, centuries or dates, as written in the text"],
    "quantities": ["string: numbers with their units, as written in the text"],
    "domain": "one of: history, geography, science, technology, politics, law, economics, education, "
              "religion, medicine, other",
}
SYSTEM = ("You are an information extraction service. For every text the user sends, answer with one JSON "
          "object that follows this schema, with exactly these keys in this order (use [] when a list has no "
          "entries), and nothing else: no prose, no code fence.\n\nSchema:\n" + json.dumps(SCHEMA, indent=2))
USER = "Text:\n{text}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    here = Path(__file__).parent
    rows = [json.loads(line) for line in (here.parent / "squad" / "questions.jsonl").read_text().splitlines()]
    seen: set[str] = set()
    picked = []
    for r in rows:
        for p in r["passages"]:
            if p not in seen and 60 <= len(p.split()) <= 140:
                seen.add(p)
                picked.append({"id": f"{r['id']}-{r['passages'].index(p)}", "squad_question": r["id"], "text": p})
                break
        if len(picked) == args.n:
            break
    (here / "schema.json").write_text(json.dumps({"system": SYSTEM, "user": USER, "schema": SCHEMA}, indent=1) + "\n")
    with (here / "requests.jsonl").open("w") as f:
        for p in picked:
            f.write(json.dumps(p) + "\n")
    print(f"wrote {len(picked)} requests and schema.json to {here}")


if __name__ == "__main__":
    main()
