import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import outcome
from retrodraft.drafters._template import PAPER80, TEMPLATES, compile_template, template_paths
from retrodraft.drafters.base import Request
from retrodraft.drafters.recycling import TokenRecycling
from retrodraft.errors import ConfigError
from retrodraft.tree import DraftTree


def _filled(vocab=10, k=2, shape=None):
    """succ[5] = [7, 3], succ[7] = [8, -1], succ[3] = [1, 2], as in the module docstring."""
    d = TokenRecycling(k=k, shape=shape or [[0], [1], [0, 0], [0, 1], [1, 0], [1, 1]], shrink=0.0)
    d.begin(Request(np.array([5]), vocab))
    d.succ[5] = [7, 3]
    d.prob[5] = [0.6, 0.2]
    d.succ[7] = [8, -1]
    d.prob[7] = [0.5, 0.0]
    d.succ[3] = [1, 2]
    d.prob[3] = [0.4, 0.3]
    return d


def _path_scores(tree):
    return {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): float(tree.scores[i]) for i in range(1, len(tree))}


def test_observe_writes_topk_of_every_node_into_its_tokens_row():
    d = TokenRecycling(k=3)
    d.begin(Request(np.array([4]), 6))
    tree = DraftTree.from_paths(4, [[2, 5]])  # nodes: 4, 2, 5
    logits = torch.tensor(
        [
            [0.0, 3.0, 1.0, 2.0, -1.0, 0.5],  # after 4: 1, 3, 2
            [5.0, 0.0, 0.0, 0.0, 0.0, 4.0],  # after 2: 0, 5, then the first of the ties (1)
            [0.0, 0.0, 0.0, 0.0, 9.0, 0.0],  # after 5: 4, ...
        ]
    )
    d.observe(outcome([4], tree, [0], logits))  # only the root accepted: rejected nodes count too
    assert d.succ[4].tolist() == [1, 3, 2]
    assert d.succ[2][:2].tolist() == [0, 5]
    assert d.succ[5][0] == 4
    probs = torch.softmax(logits, dim=-1)
    np.testing.assert_allclose(d.prob[4], probs[0, [1, 3, 2]].numpy(), rtol=1e-6)
    np.testing.assert_allclose(d.prob[5][0], probs[2, 4].item(), rtol=1e-6)
    assert (d.succ[[0, 1, 3]] == -1).all()  # untouched rows stay unknown


def test_observe_prefers_the_accepted_node_when_a_token_repeats():
    d = TokenRecycling(k=1)
    d.begin(Request(np.array([0]), 4))
    tree = DraftTree.from_arrays([0, 3, 2, 3], [-1, 0, 0, 2])  # token 3 at nodes 1 and 3
    logits = torch.zeros(4, 4)
    logits[1, 1] = 5.0  # node 1 (accepted) says 3 -> 1
    logits[3, 2] = 5.0  # node 3 (rejected, later in the tree) says 3 -> 2
    d.observe(outcome([0], tree, [0, 1], logits))
    assert d.succ[3, 0] == 1


def test_propose_fills_the_template_breadth_first():
    d = _filled()
    tree = d.propose(np.array([9, 5]), budget=10)
    # [0, 1] is dropped: succ[7, 1] is unknown.
    assert sorted(tree.paths()) == [[3, 1], [3, 2], [7, 8]]
    assert tree.tokens.tolist() == [5, 7, 3, 8, 1, 2]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 2, 2]
    s = _path_scores(tree)
    assert s == pytest.approx({(7,): 0.6, (3,): 0.2, (7, 8): 0.3, (3, 1): 0.08, (3, 2): 0.06})


def test_shrink_discounts_each_recycled_probability():
    d = _filled()
    d.shrink = 0.5
    s = _path_scores(d.propose(np.array([5]), budget=10))
    assert s[(7,)] == pytest.approx(0.6 / 1.3)
    assert s[(7, 8)] == pytest.approx(0.6 / 1.3 * 0.5 / 1.25)


def test_propose_keeps_the_best_scored_nodes_within_budget():
    d = _filled()
    tree = d.propose(np.array([5]), budget=3)
    assert len(tree) == 4
    assert sorted(tree.paths()) == [[3], [7, 8]]  # 0.6, 0.3, 0.2 beat 0.08 and 0.06
    assert d.propose(np.array([5]), budget=0).tokens.tolist() == [5]


def test_unknown_root_gives_root_only_tree():
    d = _filled()
    assert d.propose(np.array([4]), 8).tokens.tolist() == [4]
    assert d.propose(np.array([999]), 8).tokens.tolist() == [999]  # outside the vocabulary


def test_propose_before_begin_is_root_only():
    assert TokenRecycling(k=2).propose(np.array([3]), 8).tokens.tolist() == [3]


def test_reset_clears_the_matrix():
    d = _filled()
    d.reset()
    assert (d.succ == -1).all() and (d.prob == 0).all()
    assert len(d.propose(np.array([5]), 8)) == 1


def test_state_persists_across_begin_with_the_same_vocab():
    d = _filled()
    d.begin(Request(np.array([1, 2]), 10))
    assert d.succ[5].tolist() == [7, 3]


def test_begin_with_another_vocab_reallocates():
    d = _filled()
    d.begin(Request(np.array([1]), 20))
    assert d.succ.shape == (20, 2) and (d.succ == -1).all()


def test_observe_before_begin_sizes_the_matrix_to_the_tokens_seen():
    d = TokenRecycling(k=2)
    logits = torch.zeros(1, 7)
    logits[0, 6] = 1.0
    d.observe(outcome([3], DraftTree.root_only(3), [0], logits))
    assert d.succ.shape == (7, 2) and d.succ[3, 0] == 6


def test_k_larger_than_vocab_leaves_unknown_candidates():
    d = TokenRecycling(k=4, shape=[[0], [1], [2], [3]])
    d.begin(Request(np.array([0]), 3))
    d.observe(outcome([0], DraftTree.root_only(0), [0], torch.tensor([[1.0, 2.0, 3.0]])))
    assert d.succ[0].tolist() == [2, 1, 0, -1]
    assert sorted(d.propose(np.array([0]), 8).paths()) == [[0], [1], [2]]


def test_observe_then_propose_round_trip():
    d = TokenRecycling(k=2, shape="paper80")
    d.begin(Request(np.array([0]), 5))
    # a chain 0 -> 1 -> 2 -> 3 -> 4 -> 0 with confident logits
    tree = DraftTree.from_paths(0, [[1, 2, 3, 4]])
    logits = torch.full((5, 5), -10.0)
    for i in range(5):
        logits[i, (i + 1) % 5] = 10.0
    d.observe(outcome([0], tree, np.arange(5), logits))
    chain = d.propose(np.array([2]), budget=4)
    assert chain.paths() == [[3, 4, 0, 1]]
    assert np.all(np.diff(chain.scores) <= 0)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 40), st.sampled_from(["paper80", "wide"]))
def test_paths_follow_the_matrix_and_scores_multiply(seed, budget, template):
    rng = np.random.default_rng(seed)
    vocab, k = 12, 8
    shrink = float(rng.choice([0.0, 0.5]))
    d = TokenRecycling(k=k, shape=template, shrink=shrink)
    d.begin(Request(np.array([0]), vocab))
    for t in range(vocab):
        d.succ[t] = rng.permutation(vocab)[:k]
        d.succ[t, rng.random(k) < 0.2] = -1
        d.prob[t] = np.sort(rng.random(k))[::-1] / k
    root = int(rng.integers(vocab))
    tree = d.propose(np.array([root]), budget)
    assert len(tree) - 1 <= budget
    assert len(tree) - 1 == min(budget, len(d.propose(np.array([root]), 10_000)) - 1)
    for i in range(1, len(tree)):
        p = int(tree.parents[i])
        row = d.succ[tree.tokens[p]]
        r = int(np.flatnonzero(row == tree.tokens[i])[0])
        q = d.prob[tree.tokens[p], r]
        assert tree.scores[i] == pytest.approx(tree.scores[p] * q / (1 + shrink * q), rel=1e-5)
        assert tree.scores[i] <= tree.scores[p]


def test_paper80_template_shape():
    paths = TEMPLATES["paper80"]
    assert len(paths) == 80 and len(set(paths)) == 80
    assert [sum(len(p) == n for p in paths) for n in range(1, 7)] == [8, 21, 25, 15, 8, 3]
    assert all(p[:-1] in set(paths) for p in paths if len(p) > 1)
    assert PAPER80.split()[0] == "0"


def test_wide_template_reaches_depth_8():
    paths = TEMPLATES["wide"]
    assert max(len(p) for p in paths) == 8
    assert (0,) * 8 in paths
    assert all(p[:-1] in set(paths) for p in paths if len(p) > 1)


def test_compile_template_is_parents_first():
    parent, rank = compile_template([(0, 0), (1,), (0,)], k=2)
    assert parent.tolist() == [-1, 0, 0, 2] and rank.tolist() == [-1, 1, 0, 0]


def test_preset_with_small_k_drops_high_ranks():
    paths = template_paths("paper80", k=2)
    assert all(max(p) < 2 for p in paths)
    assert all(p[:-1] in set(paths) for p in paths if len(p) > 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=0), "k"),
        (dict(k=2.5), "k"),
        (dict(shape="nope"), "unknown shape"),
        (dict(shape=[[0], [0, 1, 2]]), "prefix"),
        (dict(k=2, shape=[[0], [2]]), "rank outside"),
        (dict(shape=[[]]), "non-empty"),
        (dict(shape=[3]), "list of rank paths"),
        (dict(shrink=-1.0), "shrink"),
        (dict(shrink="0.5"), "shrink"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TokenRecycling(**kwargs)
    assert issubclass(ConfigError, ValueError)
