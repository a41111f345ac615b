import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.tree import DraftTree


def test_from_paths_builds_a_trie():
    t = DraftTree.from_paths(5, [[7, 8, 9], [7, 3], [2]])
    assert t.tokens.tolist() == [5, 7, 8, 9, 3, 2]
    assert t.parents.tolist() == [-1, 0, 1, 2, 1, 0]
    assert t.depths.tolist() == [0, 1, 2, 3, 2, 1]
    assert sorted(t.paths()) == [[2], [7, 3], [7, 8, 9]]


def test_siblings_are_deduplicated_with_their_subtrees():
    t = DraftTree.from_arrays([5, 7, 7, 1, 2], [-1, 0, 0, 1, 2])
    # the second 7 folds into the first; its child 2 moves under the kept 7
    assert sorted(t.paths()) == [[7, 1], [7, 2]]
    assert len(t) == 4


def test_negative_token_drops_the_subtree():
    t = DraftTree.from_arrays([5, -1, 4, 3], [-1, 0, 1, 0])
    assert t.paths() == [[3]]


def test_from_arrays_rejects_children_before_parents():
    with pytest.raises(ValueError, match="parents must come before"):
        DraftTree.from_arrays([5, 1, 2], [-1, 2, 0])


def test_merge_by_longest_prefix_keeps_best_score():
    a = DraftTree.from_paths(1, [[2, 3]], scores=[[0.9, 0.5]])
    b = DraftTree.from_paths(1, [[2, 4], [5]], scores=[[0.6, 0.4], [0.3]])
    m = a.merge(b)
    assert sorted(m.paths()) == [[2, 3], [2, 4], [5]]
    node_2 = int(np.flatnonzero((m.tokens == 2) & (m.depths == 1))[0])
    assert m.scores[node_2] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="different roots"):
        a.merge(DraftTree.root_only(9))


def test_fuse_tags_each_trees_nodes_and_drops_sampled_drafts():
    a = DraftTree.from_paths(5, [[1, 2]], [[0.9, 0.8]])
    b = DraftTree.from_paths(5, [[1, 3], [4]], [[0.7, 0.6], [0.5]])
    b.proposals = {0: (np.array([1, 4]), np.array([1, 4]), np.array([0.6, 0.4], np.float32))}
    alone = DraftTree.fuse([b])
    assert alone.proposals and alone.origins[1:].tolist() == [1, 1, 1]
    fused = DraftTree.fuse([a, b])
    origin = {tuple(fused.tokens[fused.path_to(i)[1:]].tolist()): int(fused.origins[i]) for i in range(1, len(fused))}
    assert origin == {(1,): 0b11, (1, 2): 0b01, (1, 3): 0b10, (4,): 0b10}
    assert fused.proposals == {}


def test_scores_never_grow_along_a_path():
    t = DraftTree.from_paths(0, [[1, 2, 3]], scores=[[0.5, 0.9, 0.7]])
    assert t.scores.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.5])


def test_prune_keeps_best_connected_nodes():
    t = DraftTree.from_paths(0, [[1, 2, 3], [4, 5]], scores=[[0.9, 0.8, 0.1], [0.7, 0.6]])
    p = t.prune(3)
    assert sorted(p.paths()) == [[1, 2], [4]]
    assert len(t.prune(0)) == 1
    assert t.prune(100) is t


@st.composite
def random_trees(draw):
    n = draw(st.integers(1, 40))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    tokens = [draw(st.integers(0, 6)) for _ in range(n)]
    scores = [1.0] + [draw(st.floats(0.01, 1.0)) for _ in range(n - 1)]
    return DraftTree.from_arrays(tokens, parents, scores)


@settings(max_examples=150, deadline=None)
@given(random_trees(), st.integers(0, 40))
def test_prune_is_always_connected_and_within_budget(tree, budget):
    p = tree.prune(budget)
    assert len(p) - 1 <= budget
    assert np.all(p.parents[1:] < np.arange(1, len(p)))
    # every pruned path is a path of the original tree
    orig = {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()) for i in range(len(tree))}
    for i in range(len(p)):
        assert tuple(p.tokens[p.path_to(i)[1:]].tolist()) in orig


@settings(max_examples=100, deadline=None)
@given(random_trees(), st.integers(0, 5))
def test_mask_and_positions_match_brute_force(tree, past):
    mask = tree.attention_mask(past, torch.float32)
    n = len(tree)
    assert mask.shape == (1, 1, n, past + n)
    pos = tree.position_ids(past)[0].tolist()
    for i in range(n):
        path = set(tree.path_to(i).tolist())
        assert pos[i] == past + len(path) - 1
        for j in range(n):
            allowed = mask[0, 0, i, past + j] == 0
            assert bool(allowed) == (j in path)
        assert bool((mask[0, 0, i, :past] == 0).all())


def test_siblings_never_share_a_token():
    t = DraftTree.from_paths(0, [[1, 2], [1, 2, 3], [1, 4], [1, 2]])
    seen = set()
    for i in range(1, len(t)):
        key = (int(t.parents[i]), int(t.tokens[i]))
        assert key not in seen
        seen.add(key)


def test_rescored_scales_a_subtree_only():
    t = DraftTree.from_paths(5, [[7, 8, 9], [7, 3], [2]], scores=[[0.9, 0.8, 0.7], [0.9, 0.5], [0.4]])
    r = t.rescored([7, 8], 0.5)
    got = {tuple(p): float(s) for p, s in zip((t.tokens[t.path_to(i)[1:]].tolist() for i in range(len(t))), r.scores)}
    assert got == pytest.approx({(): 1.0, (7,): 0.9, (7, 8): 0.4, (7, 8, 9): 0.35, (7, 3): 0.5, (2,): 0.4})
    assert np.array_equal(t.scores, DraftTree.from_paths(5, [[7, 8, 9], [7, 3], [2]],
                                                         scores=[[0.9, 0.8, 0.7], [0.9, 0.5], [0.4]]).scores)
    assert t.rescored([7, 4], 0.5) is t  # no such node: unchanged
    with pytest.raises(ValueError, match="factor"):
        t.rescored([7], 1.5)
