import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.drafters._confidence import confidence
from retrodraft.drafters.lookup import PromptLookup
from retrodraft.errors import ConfigError


def _path_scores(tree):
    return {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): float(tree.scores[i]) for i in range(1, len(tree))}


def test_docstring_example():
    # [1, 2] occurred twice before: a branch per occurrence, each wrapping into the suffix.
    tree = PromptLookup(max_ngram=3).propose(np.array([1, 2, 3, 9, 1, 2, 4, 1, 2]), budget=6)
    assert tree.root == 2
    assert sorted(tree.paths()) == [[3, 9, 1], [4, 1, 2]]
    s = _path_scores(tree)
    # Two 2-gram matches share the evidence equally; 2 + d tokens agree at depth d.
    assert s[(4,)] == pytest.approx(confidence(2) * 0.5)
    assert s[(4, 1)] == pytest.approx(confidence(2) * 0.5 * confidence(3))
    assert s[(3,)] == s[(4,)]


def test_matches_sharing_a_prefix_branch_later():
    # "5 6" is followed by "7 8" once and "7 9" once: one trie node 7 with two children.
    ctx = np.array([5, 6, 7, 8, 0, 5, 6, 7, 9, 1, 5, 6])
    tree = PromptLookup().propose(ctx, budget=4)
    kids = tree.children()
    assert list(kids[0]) == [7]
    assert sorted(kids[kids[0][7]]) == [8, 9]
    s = _path_scores(tree)
    assert s[(7,)] > s[(7, 8)] == pytest.approx(s[(7, 9)])


def test_longest_ngram_is_preferred():
    # Suffix [1, 2, 3]: a 3-gram match (-> 4) early, a more recent 1-gram match of 3 (-> 7).
    ctx = np.array([1, 2, 3, 4, 0, 0, 3, 7, 0, 1, 2, 3])
    d = PromptLookup(max_ngram=3, min_ngram=1)
    assert d.propose(ctx, budget=1).paths() == [[4]]
    # the 3-gram's chain outranks the recent 1-gram's branch for the first several nodes
    assert d.propose(ctx, budget=4).paths() == [[4, 0, 0, 3]]
    # the unigram branch alone (a context without the 3-gram) scores far lower
    alone = _path_scores(d.propose(ctx[4:], budget=1))
    assert _path_scores(d.propose(ctx, budget=1))[(4,)] > 1.5 * alone[(7,)]


def test_min_ngram_filters_short_matches():
    ctx = np.array([3, 7, 0, 1, 2, 3])  # only the unigram 3 recurs
    assert PromptLookup(min_ngram=1).propose(ctx, 4).paths() == [[7, 0, 1, 2]]
    assert len(PromptLookup(min_ngram=2).propose(ctx, 4)) == 1


def test_no_match_gives_root_only_tree():
    d = PromptLookup()
    assert d.propose(np.array([1, 2, 3, 4]), 8).tokens.tolist() == [4]
    assert d.propose(np.array([4]), 8).tokens.tolist() == [4]  # a one-token context
    assert d.propose(np.array([1, 2, 1, 2]), 0).tokens.tolist() == [2]


def test_repetition_wraps_around():
    # period-2 text: the continuation keeps cycling past the end of the context
    tree = PromptLookup().propose(np.array([8, 9, 8, 9]), budget=5)
    assert tree.paths() == [[8, 9, 8, 9, 8]]


def test_duplicate_continuations_fold_into_one_branch_with_more_weight():
    # "1 -> 2 2" twice and "1 -> 3 3" once: the repeated branch gets twice the share
    ctx = np.array([1, 2, 2, 0, 1, 2, 2, 0, 1, 3, 3, 0, 1])
    s = _path_scores(PromptLookup(max_ngram=1, max_matches=2).propose(ctx, budget=3))
    assert s[(2,)] == pytest.approx(2 * s[(3,)])


def test_budget_is_respected_and_scores_fall_along_paths():
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 5, size=300)
    for budget in (1, 3, 8, 24, 64):
        tree = PromptLookup().propose(ctx, budget)
        assert 1 < len(tree) <= budget + 1
        assert np.all(tree.scores[1:] <= tree.scores[tree.parents[1:]])
        assert np.all((tree.scores > 0) & (tree.scores <= 1))


def _brute_continuations(ctx, min_n, max_n, span):
    n = len(ctx)
    out = []
    for e in range(1, n):
        length = 0
        while length < max_n and e - 1 - length >= 0 and ctx[e - 1 - length] == ctx[n - 1 - length]:
            length += 1
        if length >= min_n:
            out.append([ctx[e + i % (n - e)] for i in range(span)])
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=60),
    st.integers(0, 12),
    st.integers(1, 3),
    st.integers(0, 3),
    st.integers(1, 4),
)
def test_every_path_continues_some_suffix_match(ctx, budget, min_n, extra, max_matches):
    max_n = min_n + extra
    tree = PromptLookup(max_ngram=max_n, min_ngram=min_n, max_matches=max_matches).propose(np.array(ctx), budget)
    assert tree.root == ctx[-1]
    assert len(tree) - 1 <= budget
    conts = _brute_continuations(ctx, min_n, max_n, budget)
    for path in tree.paths():
        assert any(c[: len(path)] == path for c in conts), (path, conts)
    if conts and budget:
        assert len(tree) > 1
    assert np.all(tree.scores[1:] <= tree.scores[tree.parents[1:]])


@pytest.mark.parametrize(
    "kwargs",
    [dict(max_ngram=0), dict(min_ngram=0), dict(max_matches=0), dict(min_ngram=3, max_ngram=2), dict(max_ngram=2.0)],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        PromptLookup(**kwargs)
