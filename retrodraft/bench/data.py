"""Benchmark prompts: Spec-Bench (six categories) and HumanEval, as chat or completion prompts.

The data ships in the repository under ``benchmarks/data/`` (see its README for sources and
licenses). Every prompt becomes a :class:`Prompt` holding the token ids the model will see.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RetroDraftError

__all__ = ["Prompt", "SPEC_BENCH_CATEGORIES", "data_dir", "spec_bench", "humaneval", "squad_rag", "load_suite"]

#: Spec-Bench's six task groups; MT-bench's eight categories form "multi-turn".
SPEC_BENCH_CATEGORIES = ("multi-turn", "translation", "summarization", "qa", "math_reasoning", "rag")
_MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


class DataError(RetroDraftError, FileNotFoundError):
    """Benchmark data is missing or malformed."""


@dataclass
class Prompt:
    """One benchmark prompt.

    Attributes:
        id: stable identifier (``"spec-bench/81"``, ``"humaneval/HumanEval/0"``).
        category: the report's row (a Spec-Bench category, ``"humaneval"``, ...).
        turns: user messages; more than one for multi-turn chat (each asked after the model's
            own previous answer). For completion prompts, the one raw text.
        chat: apply the tokenizer's chat template (False: raw completion of ``turns[0]``).
    """

    id: str
    category: str
    turns: list[str]
    chat: bool = True
    meta: dict = field(default_factory=dict)


def data_dir() -> Path:
    """``$RETRODRAFT_BENCH_DATA`` or the repository's ``benchmarks/data``."""
    env = os.environ.get("RETRODRAFT_BENCH_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "benchmarks" / "data"
    if not path.is_dir():
        raise DataError(
            f"benchmark data folder {path} not found; run from a retrodraft checkout or set RETRODRAFT_BENCH_DATA."
        )
    return path


def spec_bench(per_category: int, categories: tuple[str, ...] = SPEC_BENCH_CATEGORIES, turns: int = 2) -> list[Prompt]:
    """The first ``per_category`` questions of each Spec-Bench category.

    Multi-turn takes MT-bench questions round-robin over its eight sub-categories, so ten
    prompts cover them all, with up to ``turns`` turns each.
    """
    unknown = set(categories) - set(SPEC_BENCH_CATEGORIES)
    if unknown:
        raise DataError(f"unknown Spec-Bench categories {sorted(unknown)}; known: {', '.join(SPEC_BENCH_CATEGORIES)}")
    path = data_dir() / "spec_bench" / "question.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing; it ships with the repository (benchmarks/data/spec_bench).")
    by_cat: dict[str, list[dict]] = {c: [] for c in SPEC_BENCH_CATEGORIES}
    mt_by_sub: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        q = json.loads(line)
        if q["category"] in _MT_BENCH:
            mt_by_sub.setdefault(q["category"], []).append(q)
        elif q["category"] in by_cat:
            by_cat[q["category"]].append(q)
    # Round-robin over MT-bench sub-categories.
    subs = sorted(mt_by_sub)
    rr = [mt_by_sub[s][i] for i in range(max(map(len, mt_by_sub.values()))) for s in subs if i < len(mt_by_sub[s])]
    by_cat["multi-turn"] = rr
    out = []
    for cat in categories:
        for q in by_cat[cat][:per_category]:
            out.append(
                Prompt(
                    id=f"spec-bench/{q['question_id']}",
                    category=cat,
                    turns=list(q["turns"][: turns if cat == "multi-turn" else 1]),
                    meta={"source_category": q["category"]},
                )
            )
    return out


def humaneval(n: int, chat: bool = False) -> list[Prompt]:
    """The first ``n`` HumanEval problems: completion of the stub, or as a chat instruction."""
    path = data_dir() / "humaneval" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing; it ships with the repository (benchmarks/data/humaneval).")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f][:n]
    if chat:
        return [
            Prompt(
                id=f"humaneval-chat/{r['task_id']}",
                category="humaneval-chat",
                turns=[f"Complete the following Python function.\n\n```python\n{r['prompt']}```"],
            )
            for r in rows
        ]
    return [Prompt(id=f"humaneval/{r['task_id']}", category="humaneval", turns=[r["prompt"]], chat=False) for r in rows]


def squad_rag(n: int) -> list[Prompt]:
    """SQuAD v2 questions answered from 3 faiss-retrieved passages placed in the prompt (see
    ``benchmarks/data/squad/make_squad_rag.py``)."""
    path = data_dir() / "squad" / "questions.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing; make it with benchmarks/data/squad/make_squad_rag.py.")
    rows = [json.loads(line) for line in path.read_text().splitlines()][:n]
    out = []
    for r in rows:
        context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(r["passages"]))
        out.append(Prompt(id=f"squad/{r['id']}", category="squad-rag",
                          turns=[f"Answer the question using the passages.\n\n{context}\n\nQuestion: {r['question']}"],
                          meta={"answers": r["answers"]}))
    return out


def load_suite(suites: list[str], per_category: int, humaneval_n: int | None = None) -> list[Prompt]:
    """Prompts for ``--suite`` names: ``spec-bench``, ``humaneval``, ``humaneval-chat``,
    ``squad-rag``, or one Spec-Bench category (e.g. ``rag``)."""
    out: list[Prompt] = []
    n_he = humaneval_n if humaneval_n is not None else per_category
    for s in suites:
        if s == "spec-bench":
            out += spec_bench(per_category)
        elif s == "humaneval":
            out += humaneval(n_he)
        elif s == "humaneval-chat":
            out += humaneval(n_he, chat=True)
        elif s == "squad-rag":
            out += squad_rag(per_category)
        elif s in SPEC_BENCH_CATEGORIES:
            out += spec_bench(per_category, (s,))
        else:
            raise DataError(
                f"unknown suite {s!r}; use spec-bench, humaneval, humaneval-chat, squad-rag or one of {', '.join(SPEC_BENCH_CATEGORIES)}"
            )
    return out
