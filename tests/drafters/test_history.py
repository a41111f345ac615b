"""The ``history`` drafter: memory across requests and edit-aware copying (the memory itself:
tests/test_memory.py; its parts: tests/drafters/test_suffix_tree.py, test_copying.py)."""

import numpy as np
import pytest
import torch

from helpers import ARCHS, SEEDS, has_path, tiny_model
from retrodraft import RetroDraft
from retrodraft.drafters import make_drafter
from retrodraft.drafters.base import Outcome, Request
from retrodraft.drafters.history import History
from retrodraft.errors import ConfigError
from retrodraft.memory import SuffixMemory


# ------------------------------------------------------------------------------------ drafter
def _outcome(ctx, tree, accepted, committed):
    n = len(tree)
    return Outcome(np.asarray(ctx, np.int64), tree, np.asarray(accepted, np.int64), np.asarray(committed, np.int64),
                   np.zeros((n, 1), np.int32), np.zeros((n, 1), np.float32))


def _step(drafter, ctx, truth, i, budget):
    """One greedy step against the known output ``truth``: returns (tree, new context, new i)."""
    tree = drafter.propose(ctx, budget)
    kids = tree.children()
    node, acc, k = 0, [0], i
    while k < len(truth) and int(truth[k]) in kids[node]:
        node = kids[node][int(truth[k])]
        acc.append(node)
        k += 1
    committed = truth[i: k + 1]
    drafter.observe(_outcome(ctx, tree, acc, committed))
    return tree, np.concatenate([ctx, committed]), k + 1


def _run(drafter, prompt, truth, budget=32, until=None):
    """Decode ``truth`` after ``prompt`` (the first token given by the prefill), stopping early
    once ``until`` tokens are out; returns (steps, context, tokens out)."""
    drafter.begin(Request(np.asarray(prompt, np.int64), 10_000))
    ctx = np.concatenate([prompt, truth[:1]]).astype(np.int64)
    i, steps = 1, 0
    while i < len(truth) and (until is None or i < until):
        _, ctx, i = _step(drafter, ctx, truth, i, budget)
        steps += 1
    return steps, ctx, i



def _source(seed=0, n=300):
    rng = np.random.default_rng(seed)
    src = rng.permutation(np.arange(100, 5000))[:n]  # distinct tokens: one place per token
    prompt = np.concatenate([rng.integers(5000, 6000, 10), src, rng.integers(5000, 6000, 5)])
    return src, prompt


def test_propose_has_no_side_effects():
    d = History()
    src, prompt = _source()
    out = src.copy()
    out[50] = 7
    _, ctx, i = _run(d, prompt, out, until=60)
    before = (d.local.n_tokens, d.local.nbytes, d.memory.n_tokens, repr(d.copier._ptr), dict(d.copier._rules))
    a, b = d.propose(ctx, 24), d.propose(ctx, 24)
    assert a.tokens.tolist() == b.tokens.tolist() and a.parents.tolist() == b.parents.tolist()
    assert np.array_equal(a.scores, b.scores) and len(a) > 1
    assert (d.local.n_tokens, d.local.nbytes, d.memory.n_tokens, repr(d.copier._ptr), dict(d.copier._rules)) == before


def test_trees_respect_budget_and_scores_fall_along_paths():
    d = History()
    rng = np.random.default_rng(3)
    d.memory.add(rng.integers(0, 5, 400))  # repetitive: bushy tries
    ctx = rng.integers(0, 5, 50)
    for budget in (1, 5, 32, 64):
        t = d.propose(ctx, budget)
        assert 1 < len(t) <= budget + 1
        assert np.all(t.scores[1:] <= t.scores[t.parents[1:]] + 1e-7)
        assert np.all((t.scores[1:] > 0) & (t.scores[1:] <= 1))


def test_previous_requests_are_drafted_from_memory():
    d = History()
    rng = np.random.default_rng(4)
    answer = rng.integers(100, 200, 80)
    _run(d, rng.integers(0, 100, 20), answer)  # request 1 answers `answer`
    d.begin(Request(rng.integers(0, 100, 20), 10_000))  # request 1 goes into the memory
    assert d.memory.n_requests == 1
    ctx = np.concatenate([rng.integers(0, 100, 20), answer[:10]])
    t = d.propose(ctx, 32)
    assert has_path(t, answer[10:30])


def test_long_unique_match_drafts_a_deep_chain():
    d = History()
    src, prompt = _source(1)
    d.begin(Request(prompt, 10_000))
    ctx = np.concatenate([prompt, src[:40]])
    t = d.propose(ctx, 64)
    assert t.max_depth >= 60 and has_path(t, src[40:100])
    # a two-token match drafts shallow (adaptive depth: alpha * match length)
    short = d.propose(np.concatenate([prompt, [1, 2], src[:2]]), 64)
    assert 1 < short.max_depth <= 8


def test_substitution_resumes_the_source():
    # Output copies the source with token 100 replaced by 7: right after the divergence the
    # source's continuation after the replaced token is drafted, and deep once it is confirmed.
    d = History()
    src, prompt = _source(2)
    out = src.copy()
    out[100] = 7
    _, ctx, i = _run(d, prompt, out, until=101)
    assert ctx[-1] == 7
    t = d.propose(ctx, 32)
    assert has_path(t, src[101:113])  # a resume hypothesis: 12 tokens until confirmed
    _, later, j = _step(d, ctx, out, i, 32)
    assert j >= 113 and has_path(d.propose(later, 32), out[j: j + 30])  # re-anchored: deep again
    off = History(copy=False)
    _, ctx2, _ = _run(off, prompt, out, until=101)
    assert np.array_equal(ctx, ctx2) and not has_path(off.propose(ctx2, 32), src[101:105])


def test_insertion_and_deletion_reanchor():
    src, prompt = _source(3)
    # insertion: 5 new tokens before src[100]; after the first resumed token the pointer is back
    out = np.concatenate([src[:100], [7, 8, 9, 10, 11], src[100:]])
    d = History()
    _, ctx, i = _run(d, prompt, out, until=106)
    assert i >= 106
    assert has_path(d.propose(ctx, 32), out[i: i + 20])
    # deletion: src[100:103] skipped; two tokens later drafting continues after them
    out = np.concatenate([src[:100], src[103:]])
    d = History()
    _, ctx, i = _run(d, prompt, out, until=102)
    assert i >= 102
    assert has_path(d.propose(ctx, 32), out[i: i + 20])


def test_rename_rule_drafts_later_occurrences_renamed():
    src, prompt = _source(4)
    x = int(src[60])
    src[[120, 200]] = x  # the identifier occurs three times
    prompt = np.concatenate([prompt[:10], src, prompt[-5:]])
    out = src.copy()
    out[out == x] = 7  # renamed everywhere
    d = History()
    _, ctx, i = _run(d, prompt, out, budget=8, until=190)  # steps of at most 9 tokens
    assert d.copier._rules and 190 <= i < 200  # the edit was learnt
    t = d.propose(ctx, 32)
    assert has_path(t, out[i: i + 16])  # through the renamed third occurrence
    assert not has_path(t, src[i:201])
    assert has_path(d.propose(ctx, 64), src[i:201])  # the unedited source: a weaker branch
    steps_on, _, _ = _run(History(), prompt, out)
    steps_off, _, _ = _run(History(copy=False), prompt, out)
    assert steps_on < steps_off


def test_remember_output_only_and_shared_memory_budget():
    shared = SuffixMemory(max_bytes=1 << 17, max_requests=4)
    a, b = History(memory=shared, remember="output"), History(memory=shared)
    rng = np.random.default_rng(5)
    for i in range(12):
        for d in (a, b):
            _run(d, rng.integers(0, 50, 30), rng.integers(50, 90, 40))
            d.end()
            assert shared.nbytes <= shared.max_bytes and shared.n_requests <= 4
    lengths = sorted(s.size for s in shared.sequences())
    assert 40 in lengths and 70 in lengths  # output only vs prompt + output
    a.reset()
    assert shared.n_requests > 0  # a shared memory is its owner's to clear


def test_chat_prompt_resending_history_is_stored_once():
    d = History()
    rng = np.random.default_rng(6)
    p1, o1 = rng.integers(0, 50, 30), rng.integers(50, 90, 20)
    _run(d, p1, o1)
    p2 = np.concatenate([p1, o1, rng.integers(0, 50, 10)])
    _run(d, p2, rng.integers(50, 90, 20))
    d.end()
    assert [s.size for s in d.memory.sequences()] == [50, 30]


def test_make_drafter_and_bad_options():
    assert make_drafter("history").name == "history"
    with pytest.raises(ConfigError, match="remember"):
        History(remember="prompts")
    with pytest.raises(ConfigError, match="max_depth"):
        History(max_depth=0)
    with pytest.raises(ConfigError, match="SuffixMemory"):
        History(memory={})


# ------------------------------------------------------------------------------------ with a model
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("drafters", [["history"], ["history", "recycling", "lookup"]])
def test_greedy_output_is_identical_across_requests(arch, drafters):
    model = tiny_model(arch, seed=SEEDS[arch])
    assistant = RetroDraft(drafters=drafters, budget=16)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 96, (1, 12), generator=gen) for _ in range(2)]
    for ids in prompts + prompts:  # the repeats are drafted from the memory of the first two
        ref = model.generate(ids, max_new_tokens=40, do_sample=False)
        out = model.generate(ids, max_new_tokens=40, do_sample=False, assistant=assistant)
        assert torch.equal(out, ref), (arch, drafters)
    # the last call repeated an earlier one: the memory drafted it in long blocks
    assert assistant.stats.mean_accepted > 4


def test_end_stores_the_request_and_begin_stores_one_never_ended():
    shared = SuffixMemory()
    d = History(memory=shared)
    rng = np.random.default_rng(7)
    p1, o1 = rng.integers(0, 50, 12), rng.integers(50, 90, 10)
    _run(d, p1, o1)
    assert shared.n_open == 1 and shared.n_requests == 0 and d.local is not None
    d.end()
    assert shared.n_open == 0 and [s.tolist() for s in shared.sequences()] == [np.concatenate([p1, o1]).tolist()]
    d.end()  # nothing open: nothing happens
    assert shared.n_requests == 1 and d.local is None
    _run(d, rng.integers(0, 50, 12), o1)  # driven by hand, never ended ...
    d.begin(Request(rng.integers(0, 50, 12), 10_000))  # ... stored by the next begin
    assert shared.n_requests == 2 and shared.n_open == 1
    d.reset()  # a shared memory keeps what it holds; the open request is dropped
    assert shared.n_requests == 2 and shared.n_open == 0
