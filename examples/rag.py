"""Answer questions over a document collection; the retrieved passages also feed the drafter.

    python examples/rag.py --model smollm2-135m "Which module formats text paragraphs?"

The collection is the Python documentation sources that Debian's python3.11-doc installs (or any
folder of text files via --docs). Passages are embedded with all-MiniLM-L6-v2, searched with faiss,
put into the prompt and into the retrieval drafter's per-request datastore.
"""

import argparse
import time
from pathlib import Path

from retrodraft import models
from retrodraft.pipelines.rag import Embedder, PassageStore, RagPipeline, chunk_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("questions", nargs="+")
    ap.add_argument("--docs", default="/usr/share/doc/python3.11/html/_sources/library")
    ap.add_argument("--limit", type=int, default=60, help="documents to load (embedding is the slow part)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    files = sorted(Path(args.docs).rglob("*.txt"))[: args.limit]
    if not files:
        raise SystemExit(f"no .txt documents under {args.docs}")
    store = PassageStore(chunk_documents([f.read_text(errors="ignore") for f in files]), Embedder())
    model, tok = models.load(args.model, dtype=args.dtype)
    for q in args.questions:
        for name, pipe in (("plain", RagPipeline(model, tok, store, assistant=None)), ("retrodraft", RagPipeline(model, tok, store))):
            t = time.perf_counter()
            a = pipe.answer(q, max_new_tokens=96)
            rate = len(a.tokens) / (time.perf_counter() - t)
            print(f"[{name}] {rate:.1f} tok/s {a.stats.get('mean_accepted', 1):.2f} tokens/step\n{a.text}\n")


if __name__ == "__main__":
    main()
