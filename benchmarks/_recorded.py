"""A committed sequence-suite run's greedy outputs, with the prompts they answered, as token ids.

Shared by ``copy_ceiling.py`` and ``replay.py``, which both replay what plain greedy said.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np

from retrodraft import models
from retrodraft.bench.data import load_suite, with_own_replies
from retrodraft.bench.runner import encode_prompt


def first_turn(record: dict) -> dict:
    """The first turn of a results.json record (older runs stored turns as a repr string)."""
    turns = record["turns"]
    return (ast.literal_eval(turns) if isinstance(turns, str) else turns)[0]


def load_run(run: Path) -> tuple[dict, list[tuple[str, np.ndarray, np.ndarray]]]:
    """``(results, requests)``: the parsed results.json and, in run order, every request's
    ``(prompt_id, prompt ids (P,), greedy's output ids (N,))`` as int64 arrays (an ``agent-loop``
    prompt rebuilt from greedy's earlier replies, as the run built it)."""
    res = json.loads((Path(run) / "results.json").read_text())
    suites = sorted({r["category"] for r in res["records"]})
    prompts = {p.id: p for p in load_suite(suites, per_category=0)}
    tok = models.load_tokenizer(res["config"]["model"])
    requests, replies = [], {}
    for r in res["records"]:
        if r["method"] != "greedy":
            continue
        p = with_own_replies(prompts[r["prompt_id"]], replies)
        ids = encode_prompt(tok, p, [], p.turns[-1])[0].numpy().astype(np.int64)
        out = first_turn(r)["tokens"]
        replies[r["prompt_id"]] = tok.decode(out, skip_special_tokens=True)
        requests.append((r["prompt_id"], ids, np.asarray(out, np.int64)))
    return res, requests
