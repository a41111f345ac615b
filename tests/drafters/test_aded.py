import numpy as np
import pytest
import torch

from helpers import outcome
from retrodraft.drafters.aded import Aded
from retrodraft.drafters.base import Request
from retrodraft.errors import ConfigError
from retrodraft.tree import DraftTree


def _paths(tree):
    return {tuple(tree.tokens[tree.path_to(i)].tolist()) for i in range(len(tree))}


def test_the_prompt_seeds_trigrams_and_drafts_follow_them():
    d = Aded(shrink=0.0, model_weight=0.0)
    d.begin(Request(np.array([1, 2, 3, 4, 1, 2, 3]), 10))
    tree = d.propose(np.array([1, 2, 3, 4, 1, 2, 3]), 3)
    assert (3, 4, 1, 2) in _paths(tree)  # (2,3)->4, (3,4)->1, (4,1)->2


def test_recent_text_outweighs_old_text_and_weights_saturate():
    d = Aded(decay=0.5, cap=3.0, model_weight=0.0)
    text = [1, 2, 5] + [0] * 3 + [1, 2, 6]
    d.begin(Request(np.array(text), 10))
    toks, w = d.table.row(np.array([1, 2]))
    assert toks[0] == 6 and w[0] > w[1]  # the old successor decayed once
    d.observe(outcome(text, DraftTree.root_only(6), [0], committed=[1, 2, 6] * 20))  # committed text is counted
    toks, w = d.table.row(np.array([1, 2]))
    assert toks[0] == 6 and w[0] <= 3.0


def test_search_returns_a_connected_tree_within_budget_heaviest_first():
    d = Aded(iterations=200, shrink=0.0, model_weight=0.0)
    text = [1, 2, 3, 1, 2, 3, 1, 2, 4, 1, 2, 3, 9]
    d.begin(Request(np.array(text), 10))
    for budget in (1, 3, 8):
        tree = d.propose(np.array(text[:-1]), budget)
        assert 2 <= len(tree) <= budget + 1
        assert all(tree.parents[i] < i for i in range(1, len(tree)))
        assert tree.tokens[0] == 3 and tree.tokens[1] in (1, 9)
    chain = d.propose(np.array([5, 1, 2]), 4)
    assert chain.paths() == [[3, 1, 2, 3]]  # a small budget goes deep along the heavy chain
    tree = d.propose(np.array([5, 1, 2]), 12)
    first = [tree.tokens[i] for i in range(1, len(tree)) if tree.parents[i] == 0]
    assert first[0] == 3 and 4 in first  # a larger one also opens the rarer branch


def test_model_candidates_at_accepted_nodes_are_learnt():
    d = Aded(model_weight=1.0)
    d.begin(Request(np.array([1, 2]), 10))
    logits = torch.full((1, 10), -20.0)
    logits[0, 8] = 5.0
    d.observe(outcome([1, 2], DraftTree.root_only(2), [0], logits, committed=[]))
    assert d.table.row(np.array([1, 2]))[0][0] == 8
    d.reset()
    assert d.table.used == 0


def test_propose_learns_nothing():
    d = Aded(shrink=0.0, model_weight=0.0)
    d.begin(Request(np.array([1, 2, 3]), 10))
    before = d.table.keys.copy(), d.table.w.copy()
    first = d.propose(np.array([1, 2, 3, 1, 2, 3, 1, 2]), 4)
    assert np.array_equal(d.table.keys, before[0]) and np.array_equal(d.table.w, before[1])
    again = d.propose(np.array([1, 2, 3, 1, 2, 3, 1, 2]), 4)
    assert first.paths() == again.paths()


@pytest.mark.parametrize("kw", [dict(iterations=0), dict(width=9, k=8), dict(decay=0.0), dict(c1=-1.0),
                                dict(max_bytes=100)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        Aded(**kw)
