"""The sequence suites (refactor, json, agent): their data, the runner's persistent state, the
per-request rows and the learning-curve plot."""

import ast
import json

import numpy as np
import pytest

from retrodraft import RetroDraft, models
from retrodraft.bench import bench
from retrodraft.bench.data import (SEQUENCE_SUITES, agent, agent_loop, json_extraction, load_suite, refactor,
                                   with_own_replies)
from retrodraft.bench.methods import Method
from retrodraft.bench.report import LEARNED_FROM, learning_curve, learning_table
from retrodraft.bench.runner import RunConfig, encode_prompt, run
from retrodraft.errors import ConfigError
from retrodraft.drafters.base import Drafter
from retrodraft.tree import DraftTree


def test_refactor_items_are_real_functions_with_a_stated_change():
    ps = refactor()
    assert 10 <= len(ps) <= 20
    assert [p.index for p in ps] == list(range(len(ps))) and {p.sequence for p in ps} == {"refactor"}
    assert {p.meta["kind"] for p in ps} == {"rename", "add_parameter", "type_hints", "logging"}
    for p in ps:
        code = p.turns[0].split("```python\n", 1)[1].rsplit("```", 1)[0]
        fn = ast.parse(code).body[0]
        assert isinstance(fn, ast.FunctionDef) and 25 <= fn.end_lineno - fn.lineno + 1 <= 60
        assert f"`{fn.name}`" in p.turns[0]
        if p.meta["expected"] is not None:  # the edit is mechanical: a small, real change
            expected = p.meta["expected"]
            assert ast.parse(expected) and expected != code
            changed = set(expected.splitlines()) ^ set(code.splitlines())
            assert 1 <= len(changed) <= 16


def test_json_requests_share_one_system_prompt_and_schema():
    ps = json_extraction()
    assert 12 <= len(ps) <= 20 and [p.index for p in ps] == list(range(len(ps)))
    systems = {p.messages[0]["content"] for p in ps}
    assert len(systems) == 1 and '"people"' in systems.pop()
    assert all(p.messages[-1]["role"] == "user" and p.messages[-1]["content"].startswith("Text:\n") for p in ps)
    assert len({p.messages[-1]["content"] for p in ps}) == len(ps)


def test_agent_turns_replay_the_conversation_before_them():
    ps = agent()
    assert len(ps) == 15 and [p.index for p in ps] == list(range(15))
    episodes = list(dict.fromkeys(p.meta["episode"] for p in ps))
    assert len(episodes) == 3
    for ep in episodes:
        turns = [p for p in ps if p.meta["episode"] == ep]
        assert 4 <= len(turns) <= 6
        for a, b in zip(turns, turns[1:]):
            # the next request's prompt is this one's plus the agent's turn and the tool's answer
            assert b.messages[: len(a.messages)] == a.messages
            assert b.messages[len(a.messages)] == {"role": "assistant", "content": a.meta["reference"]}
            assert b.messages[-1]["content"].startswith("Observation:")
    # the SWE episode re-emits the file it read, with an edit
    swe = [p for p in ps if p.meta["episode"] == "swe-textproc"]
    assert "def dedent(text):" in swe[1].messages[-1]["content"] and "write_file" in swe[2].meta["reference"]


def test_agent_loop_prompts_resend_greedys_own_replies_and_the_recorded_observations():
    scripted, loop = agent(), agent_loop()
    assert len(loop) == len(scripted) and {p.sequence for p in loop} == {"agent-loop"}
    # a fake greedy record: one made-up reply per request
    replies = {p.id: f"<reply of {p.id}>" for p in loop}
    for s, p in zip(scripted, loop):
        assert p.id == s.id.replace("agent/", "agent-loop/", 1)
        assert len(p.meta["own_replies"]) == p.meta["turn"]
        filled = with_own_replies(p, replies)
        own = [m["content"] for m in filled.messages if m["role"] == "assistant"]
        assert own == [f"<reply of agent-loop/{p.meta['episode']}/{t}>" for t in range(p.meta["turn"])]
        # everything else is the scripted conversation: system, task and tool observations
        assert [m for m in filled.messages if m["role"] != "assistant"] == \
               [m for m in s.messages if m["role"] != "assistant"]
        assert [m["role"] for m in filled.messages] == [m["role"] for m in s.messages]
        assert p.messages == s.messages  # filling in does not touch the suite's own prompt
    first = next(p for p in loop if p.meta["turn"] == 0)
    assert with_own_replies(first, {}) is first
    later = next(p for p in loop if p.meta["turn"] == 2)
    with pytest.raises(ConfigError, match="needs the method greedy"):
        with_own_replies(later, {later.meta["own_replies"][0]: "only the first"})


def test_agent_loop_runs_on_greedys_replies_from_the_same_run(tiny_folder, tmp_path):
    model, tok = models.load(str(tiny_folder))
    methods = [Method("lookup", assistant=RetroDraft(drafters=["lookup"], budget=4)), Method("greedy")]
    prompts = agent_loop(3)
    config = RunConfig(model=str(tiny_folder), dtype="float32", methods=[m.name for m in methods], max_new_tokens=6)
    res = run(config, prompts, model, tok, methods, tmp_path, progress=False)
    greedy = {r["prompt_id"]: r["turns"][0]["tokens"] for r in res["records"] if r["method"] == "greedy"}
    replies = {pid: tok.decode(t, skip_special_tokens=True) for pid, t in greedy.items()}
    for p in prompts:
        ids = encode_prompt(tok, with_own_replies(p, replies), [], p.turns[0])
        # every method saw the prompt made of greedy's replies, whichever ran first
        assert {r["turns"][0]["prompt_tokens"] for r in res["records"] if r["prompt_id"] == p.id} == {ids.shape[1]}
    assert res["records"][2]["method"] == "greedy" and res["records"][2]["prompt_id"] == prompts[1].id


def test_agent_loop_without_greedy_is_one_clear_error(tiny_folder, tmp_path):
    model, tok = models.load(str(tiny_folder))
    methods = [Method("lookup", assistant=RetroDraft(drafters=["lookup"], budget=4))]
    config = RunConfig(model=str(tiny_folder), dtype="float32", methods=["lookup"], max_new_tokens=4)
    with pytest.raises(ConfigError, match="add greedy to the methods"):
        run(config, agent_loop(2), model, tok, methods, tmp_path, progress=False)


def test_load_suite_caps_sequence_requests_and_refuses_unknown_names():
    ps = load_suite(list(SEQUENCE_SUITES), per_category=1, requests=3)
    assert [(p.sequence, p.index) for p in ps] == [(s, i) for s in SEQUENCE_SUITES for i in range(3)]
    with pytest.raises(FileNotFoundError, match="unknown suite 'jsn'"):
        load_suite(["jsn"], 1)


class Counter(Drafter):
    """Records, at every request, how many requests it has seen since its last reset."""

    name = "counter"

    def __init__(self):
        self.seen, self.log = 0, []

    def begin(self, request):
        self.seen += 1
        self.log.append(self.seen)

    def propose(self, context, budget):
        return DraftTree.root_only(int(context[-1]))

    def reset(self):
        self.seen = 0


def test_sequence_runner_keeps_one_state_per_sequence_and_writes_per_request_rows(tiny_folder, tmp_path):
    model, tok = models.load(str(tiny_folder))
    counter = Counter()
    methods = [Method("greedy"), Method("counter", assistant=RetroDraft(drafters=[counter], budget=1)),
               Method("lookup", assistant=RetroDraft(drafters=["lookup"], budget=4))]
    prompts = json_extraction(3) + agent(2)
    config = RunConfig(model=str(tiny_folder), dtype="float32", methods=[m.name for m in methods], max_new_tokens=6)
    res = run(config, prompts, model, tok, methods, tmp_path, progress=False)
    # warm-up, then reset when each sequence starts and kept from request to request
    assert counter.log == [1, 1, 2, 3, 1, 2]
    recs = [r for r in res["records"] if r["method"] == "lookup"]
    assert [(r["sequence"], r["index"]) for r in recs] == [("json", 0), ("json", 1), ("json", 2), ("agent", 0),
                                                         ("agent", 1)]
    # methods interleave request by request, the order rotated
    assert [r["method"] for r in res["records"][:6]] == ["greedy", "counter", "lookup", "counter", "lookup", "greedy"]
    curve = learning_curve(res)
    assert len(curve) == len(prompts) * len(methods)
    row = next(r for r in curve if r["method"] == "lookup" and r["sequence"] == "agent" and r["index"] == 1)
    rec = next(r for r in recs if r["index"] == 1 and r["sequence"] == "agent")
    g = next(r for r in res["records"] if r["method"] == "greedy" and r.get("sequence") == "agent" and r["index"] == 1)
    tps = lambda r: sum(t["new_tokens"] for t in r["turns"]) / sum(t["wall_s"] for t in r["turns"])
    assert row["speedup"] == pytest.approx(tps(rec) / tps(g))
    assert row["mat"] >= 1.0 and row["exact"]
    table = learning_table(curve)
    assert "**json**" in table and "**agent**" in table and "| 3 | json/" in table


def test_bench_sequence_suites_write_the_learning_curve(tiny_folder, tmp_path):
    out = tmp_path / "seq"
    report = bench(str(tiny_folder), suites=["refactor", "json"], requests=LEARNED_FROM + 2,
                   methods=["greedy", "retrodraft:lookup"], max_new_tokens=4, out=out, progress=False, command="test")
    assert (out / "learning_curve.png").stat().st_size > 0
    text = report.read_text()
    assert "## Learning curves" in text and "![learning_curve.png](learning_curve.png)" in text
    # one row per request, and the requests from LEARNED_FROM on summed apart
    assert text.count("| refactor/") == LEARNED_FROM + 2 and f"| {LEARNED_FROM + 1}-{LEARNED_FROM + 2} |" in text
    res = json.loads((out / "results.json").read_text())
    assert {r.get("sequence") for r in res["records"]} == {"refactor", "json"}
    assert np.all([r["turns"][0]["new_tokens"] <= 4 for r in res["records"]])


def test_learning_table_compares_like_for_like_where_an_output_diverged():
    def row(i, method, tokens, wall, exact):
        return {"sequence": "agent", "index": i, "prompt_id": f"agent/{i}", "method": method, "tokens": tokens,
                "wall_s": wall, "tok_per_s": tokens / wall, "speedup": None, "mat": None, "exact": exact}

    curve = [row(0, "greedy", 100, 10.0, True), row(0, "a", 100, 2.0, True), row(0, "b", 100, 4.0, True),
             row(1, "greedy", 100, 10.0, True), row(1, "a", 5, 5.0, False), row(1, "b", 100, 5.0, True)]
    table = learning_table(curve)
    same = next(line for line in table.splitlines() if line.startswith("| same output (1 of 2)"))
    # only request 0 counts: a 5.00x, b 2.50x; over all requests a's diverged request drags it down
    assert "**5.00x**" in same and "**2.50x**" in same
    everything = next(line for line in table.splitlines() if line.startswith("| all "))
    assert "**5.00x**" not in everything
    # no such row when every output agreed
    assert "same output" not in learning_table([r for r in curve if r["index"] == 0])
