"""Best chain by expected gain, calibration, and the batch's token budget."""

import numpy as np

from retrodraft.tree import DraftTree
from retrodraft.vllm.chain import Calibrator, allot, best_chain


def _tree():
    # root -> a(0.9) -> b(0.5) -> c(0.1); root -> x(0.3)
    return DraftTree.from_arrays([0, 1, 2, 3, 9], [-1, 0, 1, 2, 0], [1.0, 0.9, 0.5, 0.1, 0.3])


def test_the_chain_stops_where_tokens_stop_paying():
    t = _tree()
    nodes = best_chain(t, t.scores, cost=0.2, max_len=16)
    assert t.tokens[nodes].tolist() == [1, 2]


def test_a_weak_node_is_kept_when_what_follows_pays():
    t = DraftTree.from_arrays([0, 1, 2], [-1, 0, 1], [1.0, 0.15, 0.15])
    assert best_chain(t, np.array([1.0, 0.15, 0.6]), cost=0.2, max_len=16).tolist() == [1, 2]  # -0.05 + 0.4


def test_nothing_pays_gives_an_empty_chain():
    t = _tree()
    assert best_chain(t, t.scores, cost=0.95, max_len=16).tolist() == []
    assert best_chain(DraftTree.root_only(5), np.ones(1), cost=0.0, max_len=4).tolist() == []


def test_the_chain_is_capped_at_max_len():
    t = DraftTree.from_arrays(np.arange(10), np.arange(-1, 9), np.ones(10))
    assert len(best_chain(t, t.scores, cost=0.1, max_len=4)) == 4


def test_calibration_learns_from_accepted_counts():
    c = Calibrator(bins=10, prior=1.0)
    assert np.isclose(c(np.array([0.85]))[0], 0.85)  # nothing seen: the raw score
    for _ in range(50):
        c.update(np.array([0.85, 0.85]), accepted=0)  # first node rejected, so the second's path too
    assert c.proposed[8].sum() == 100 and c.accepted[8].sum() == 0
    assert c(np.array([0.85]))[0] < 0.05


def test_calibration_estimates_path_acceptance():
    # a deep node whose parent was accepted half the time, itself always after its parent:
    # its path is accepted half the time (not always, as counting only reached nodes would say)
    c = Calibrator(bins=10, prior=1.0)
    for i in range(200):
        c.update(np.array([0.55, 0.25]), accepted=2 if i % 2 else 0)
    assert abs(c(np.array([0.25]))[0] - 0.5) < 0.02
    assert abs(c(np.array([0.55]))[0] - 0.5) < 0.02


def test_allot_keeps_the_best_tokens_of_the_batch_as_prefixes():
    chains = [np.array([0.9, 0.8, 0.2]), np.array([0.95, 0.1]), np.array([])]
    assert allot(chains, 10) == [3, 2, 0]
    assert allot(chains, 3) == [2, 1, 0]
    assert allot(chains, 0) == [0, 0, 0]
