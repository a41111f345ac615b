"""Benchmark prompts: Spec-Bench (six categories), HumanEval, SQuAD RAG, and the sequence suites
``refactor``, ``json``, ``agent`` and ``agent-loop``, as chat or completion prompts.

The data ships inside the package, in ``retrodraft/bench/suites/`` (package data, read with
:mod:`importlib.resources`, so an installed wheel finds it; its README gives sources and licences).
Every prompt becomes a :class:`Prompt` holding the text the model will see.

A *sequence* suite is a list of requests served in order by one assistant whose state persists
from request to request (``Prompt.sequence`` names the sequence, ``Prompt.index`` is the request's
position): what a deployed assistant sees when it answers the same kind of request again and again.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, RetroDraftError

if TYPE_CHECKING:
    from importlib.abc import Traversable

__all__ = ["Prompt", "SPEC_BENCH_CATEGORIES", "SEQUENCE_SUITES", "data_dir", "spec_bench", "humaneval", "squad_rag",
           "refactor", "json_extraction", "agent", "agent_loop", "with_own_replies", "load_suite"]

#: Spec-Bench's six task groups; MT-bench's eight categories form "multi-turn".
SPEC_BENCH_CATEGORIES = ("multi-turn", "translation", "summarization", "qa", "math_reasoning", "rag")
_MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
#: Suites whose requests run in order on one persistent assistant (state reset when one starts).
SEQUENCE_SUITES = ("refactor", "json", "agent", "agent-loop")


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
        messages: a scripted conversation (``{"role", "content"}`` dicts: system, user and
            assistant turns, ending with a user turn) sent as is in one request; ``turns`` is
            then ``[last user message]``, for display.
        sequence: the sequence this request belongs to (None: an independent prompt).
        index: the request's position in its sequence, from 0.
    """

    id: str
    category: str
    turns: list[str]
    chat: bool = True
    meta: dict = field(default_factory=dict)
    messages: list[dict] | None = None
    sequence: str | None = None
    index: int = 0


def data_dir() -> Traversable:
    """``$RETRODRAFT_BENCH_DATA`` or the suites shipped in the package (``retrodraft/bench/suites``).

    Returns a :class:`~importlib.abc.Traversable` (a :class:`~pathlib.Path` for an
    installed or editable package), so the suites are found wherever the package is installed.
    """
    env = os.environ.get("RETRODRAFT_BENCH_DATA")
    path: Traversable = Path(env) if env else files(__package__) / "suites"
    if not path.is_dir():
        where = "$RETRODRAFT_BENCH_DATA" if env else "the installed package"
        raise DataError(f"benchmark data folder {path} not found ({where}); reinstall retrodraft or set "
                        "RETRODRAFT_BENCH_DATA to a folder laid out as retrodraft/bench/suites.")
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
        raise DataError(f"{path} is missing; it ships with the package (retrodraft/bench/suites/spec_bench).")
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
        raise DataError(f"{path} is missing; it ships with the package (retrodraft/bench/suites/humaneval).")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
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
    ``retrodraft/bench/suites/squad/make_squad_rag.py``)."""
    path = data_dir() / "squad" / "questions.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing; make it with retrodraft/bench/suites/squad/make_squad_rag.py.")
    rows = [json.loads(line) for line in path.read_text().splitlines()][:n]
    out = []
    for r in rows:
        context = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(r["passages"]))
        out.append(Prompt(id=f"squad/{r['id']}", category="squad-rag",
                          turns=[f"Answer the question using the passages.\n\n{context}\n\nQuestion: {r['question']}"],
                          meta={"answers": r["answers"]}))
    return out


def _jsonl(path: Traversable, make: str) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} is missing; it ships with the package (make it with {make}).")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def refactor(n: int | None = None) -> list[Prompt]:
    """Real standard-library functions of 25-60 lines, each to be returned whole with one stated
    change (rename, added parameter, type hints, logging line); one sequence, in file order."""
    rows = _jsonl(data_dir() / "refactor" / "items.jsonl", "retrodraft/bench/suites/refactor/make_refactor.py")[:n]
    return [Prompt(id=f"refactor/{r['id']}", category="refactor", turns=[r["prompt"]], sequence="refactor", index=i,
                   meta={"kind": r["kind"], "expected": r["expected"]}) for i, r in enumerate(rows)]


def json_extraction(n: int | None = None) -> list[Prompt]:
    """Short texts sent one after another with the same system prompt and extraction schema."""
    folder = data_dir() / "json"
    rows = _jsonl(folder / "requests.jsonl", "retrodraft/bench/suites/json/make_json.py")[:n]
    schema_path = folder / "schema.json"
    if not schema_path.is_file():
        raise DataError(f"{schema_path} is missing; make it with retrodraft/bench/suites/json/make_json.py.")
    schema = json.loads(schema_path.read_text())
    out = []
    for i, r in enumerate(rows):
        user = schema["user"].format(text=r["text"])
        out.append(Prompt(id=f"json/{r['id']}", category="json", turns=[user], sequence="json", index=i,
                          messages=[{"role": "system", "content": schema["system"]}, {"role": "user", "content": user}]))
    return out


def agent(n: int | None = None) -> list[Prompt]:
    """Tool-use episodes replayed turn by turn: each agent turn is a request whose prompt is the
    scripted conversation before it (system prompt, task, earlier actions and tool observations).
    The episodes run one after another in one sequence."""
    episodes = _jsonl(data_dir() / "agent" / "episodes.jsonl", "retrodraft/bench/suites/agent/make_agent.py")
    out: list[Prompt] = []
    for ep in episodes:
        msgs = ep["messages"]
        for t, k in enumerate(i for i, m in enumerate(msgs) if m["role"] == "assistant"):
            out.append(Prompt(id=f"agent/{ep['id']}/{t}", category="agent", turns=[msgs[k - 1]["content"]],
                              messages=msgs[:k], sequence="agent", index=len(out),
                              meta={"episode": ep["id"], "turn": t, "reference": msgs[k]["content"]}))
    return out[:n]


def agent_loop(n: int | None = None) -> list[Prompt]:
    """The ``agent`` episodes as a closed loop: the assistant messages of a request's earlier turns
    are the model's own replies (greedy's output of those requests in the same run), not the
    scripted ones; the tool observations stay the recorded ones.

    The prompts returned still hold the scripted replies; ``meta["own_replies"]`` lists, in order,
    the ids of the requests whose greedy output replaces each assistant message, and the runner
    fills them in with :func:`with_own_replies` just before the request runs (greedy has run every
    earlier request by then). A real agent loop resends its own replies, so a prefix cache that
    stores prompt *and* output reuses the whole previous turn; the scripted ``agent`` suite never can.
    """
    out = agent(n)
    for p in out:
        p.id = "agent-loop/" + p.id.removeprefix("agent/")
        p.category = p.sequence = "agent-loop"
        p.meta["own_replies"] = [f"agent-loop/{p.meta['episode']}/{t}" for t in range(p.meta["turn"])]
    return out


def with_own_replies(prompt: Prompt, replies: dict[str, str]) -> Prompt:
    """``prompt`` with its assistant messages replaced by ``replies[id]`` for the ids of
    ``prompt.meta["own_replies"]``, in order (see :func:`agent_loop`); a prompt without them is
    returned as is.

    Raises:
        ConfigError: a reply is missing (greedy did not run that request).
    """
    ids = prompt.meta.get("own_replies") or []
    if not ids:
        return prompt
    missing = [i for i in ids if i not in replies]
    if missing:
        raise ConfigError(f"{prompt.id} is built from greedy's replies to {', '.join(missing)}, which did not run: "
                          "the agent-loop suite needs the method greedy, run on every request in order.")
    own = iter(replies[i] for i in ids)
    messages = [{"role": "assistant", "content": next(own)} if m["role"] == "assistant" else dict(m)
                for m in prompt.messages]
    if next(own, None) is not None:
        raise DataError(f"{prompt.id} has fewer assistant messages than own_replies ({len(ids)})")
    return replace(prompt, messages=messages)


def load_suite(suites: list[str], per_category: int, humaneval_n: int | None = None,
               requests: int | None = None) -> list[Prompt]:
    """Prompts for ``--suite`` names: ``spec-bench``, ``humaneval``, ``humaneval-chat``,
    ``squad-rag``, one Spec-Bench category (e.g. ``rag``), or a sequence suite (``refactor``,
    ``json``, ``agent``, ``agent-loop``: all their requests, or the first ``requests``)."""
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
        elif s == "refactor":
            out += refactor(requests)
        elif s == "json":
            out += json_extraction(requests)
        elif s == "agent":
            out += agent(requests)
        elif s == "agent-loop":
            out += agent_loop(requests)
        else:
            raise DataError(
                f"unknown suite {s!r}; use spec-bench, humaneval, humaneval-chat, squad-rag, refactor, json, agent, "
                f"agent-loop "
                f"or one of {', '.join(SPEC_BENCH_CATEGORIES)}"
            )
    return out
