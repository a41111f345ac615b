"""The suffix-tree drafting policy: best-first continuation tries against a brute-force reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.drafters._confidence import confidence
from retrodraft.drafters.suffix_tree import SuffixTree
from retrodraft.automaton import SEP, SuffixAutomaton

CONF = confidence(np.arange(200), ceil=0.985)


def _store(seqs):
    a = SuffixAutomaton(max_bytes=1 << 20)
    for s in seqs:
        a.add(s)
    return a


def _paths(tree):
    """{path below the root: score} of every node."""
    return {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): float(tree.scores[i]) for i in range(1, len(tree))}


def _reference(seqs, ctx, max_match, depth_of, min_score, conf):
    """Every node the policy may draft, {path: score}, from occurrence counts in the stream."""
    t = []
    for i, s in enumerate(seqs):
        t += ([SEP] if i else []) + [int(x) for x in s]
    c = [int(x) for x in ctx[-max_match:]]

    def follows(pat):  # {next token: occurrences of pat + token}, the separator included
        out = {}
        for e in range(len(pat) - 1, len(t) - 1):
            if t[e - len(pat) + 1: e + 1] == pat:
                out[t[e + 1]] = out.get(t[e + 1], 0) + 1
        return out

    for L in range(len(c), 0, -1):  # the match: the longest suffix followed by anything
        if follows(c[-L:]):
            break
    else:
        return 0, {}
    depth = depth_of(L)
    out, todo = {}, [((), 1.0)]
    while todo:
        path, sc = todo.pop()
        if len(path) >= depth:
            continue
        kids = follows(c[-L:] + list(path))
        kids.pop(SEP, None)  # a sequence's end is not drafted
        total = sum(kids.values())
        step = conf[min(L + len(path), len(conf) - 1)]
        for tok, n in kids.items():
            s = sc * step * n / total
            if s >= min_score:
                out[path + (tok,)] = s
                todo.append((path + (tok,), s))
    return L, out


def test_docstring_example():
    policy = SuffixTree(np.full(8, 0.5))
    tree = policy.draft(_store([[5, 6, 7, 8], [1, 6, 7, 9]]), np.array([4, 6, 7]), 3)
    assert tree.root == 7 and _paths(tree) == {(8,): 0.25, (9,): 0.25}


@settings(max_examples=80, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(0, 3), max_size=40), min_size=1, max_size=4),
       ctx=st.lists(st.integers(0, 3), min_size=2, max_size=10), budget=st.integers(1, 24),
       alpha=st.sampled_from([0.5, 1.0, 4.0]))
def test_trees_are_the_best_nodes_of_the_reference_trie(seqs, ctx, budget, alpha):
    # fanout >= the alphabet, so only the budget, the depth and min_score cut the trie
    policy = SuffixTree(CONF, max_match=6, alpha=alpha, min_depth=2, max_depth=7, max_fanout=4, min_score=1e-3)
    tree = policy.draft(_store(seqs), np.asarray(ctx), budget)
    _, ref = _reference(seqs, ctx, 6, policy.depth, 1e-3, CONF)
    got = _paths(tree)
    assert tree.root == ctx[-1] and len(tree) <= budget + 1
    assert len(got) == min(budget, len(ref))
    for path, score in got.items():
        assert path in ref and score == pytest.approx(ref[path], rel=1e-5)
    # best-first: no node left out (its parent drafted) scores above a drafted one
    frontier = [s for p, s in ref.items() if p not in got and (len(p) == 1 or p[:-1] in got)]
    if got and frontier:
        assert max(frontier) <= min(got.values()) * (1 + 1e-5)


def test_depth_grows_with_the_match():
    rng = np.random.default_rng(0)
    src = rng.permutation(1000)[:300]  # distinct tokens: one continuation everywhere
    store = _store([src])
    policy = SuffixTree(CONF, alpha=4.0, min_depth=8, max_depth=64)
    deep = policy.draft(store, src[:40], 64)
    assert deep.max_depth == 64 and deep.paths() == [src[40:104].tolist()]
    short = policy.draft(store, np.array([2000, src[10], src[11]]), 64)  # a 2-token match
    assert short.max_depth == 8


def test_nothing_matched_or_no_budget_is_the_root_alone():
    policy = SuffixTree(CONF)
    store = _store([[1, 2, 3]])
    assert len(policy.draft(store, np.array([7, 8]), 16)) == 1
    assert len(policy.draft(store, np.array([1, 2]), 0)) == 1
    assert len(policy.draft(SuffixAutomaton(), np.array([1, 2]), 16)) == 1


def test_trees_do_not_share_the_reused_buffers():
    policy = SuffixTree(CONF)
    store = _store([[1, 2, 3, 4, 5, 6], [9, 2, 3, 7]])
    a = policy.draft(store, np.array([1, 2, 3]), 8)
    before = (a.tokens.copy(), a.scores.copy())
    b = policy.draft(store, np.array([5, 9, 2]), 200)  # larger budget: buffers grow
    assert len(b) > 1
    assert np.array_equal(a.tokens, before[0]) and np.array_equal(a.scores, before[1])
