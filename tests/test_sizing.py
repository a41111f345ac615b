import numpy as np
import pytest

from retrodraft.cost import CostModel
from retrodraft.sizing import TreeSizer
from retrodraft.tree import DraftTree


def _chain(scores):
    return DraftTree.from_paths(0, [list(range(1, len(scores) + 1))], [scores])


def test_initial_trust_discounts_the_drafters_until_evidence_arrives():
    cm = CostModel(np.array([1, 64]), np.array([1.0, 1.0]))
    assert TreeSizer(cm, trust=0.5).calibrated(np.array([0.9]))[0] == pytest.approx(0.4625)
    sizer = TreeSizer(cm, trust=0.5, prior=2.0)
    tree = _chain([0.9])
    for _ in range(50):
        sizer.observe(tree, np.array([0, 1]))  # always accepted
    assert sizer.calibrated(np.array([0.9]))[0] > 0.95


def test_flat_cost_verifies_every_useful_node():
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 1.0])), prior=1e6)
    assert sizer.choose(_chain([0.9, 0.8, 0.7, 0.1])) == 4


def test_steep_cost_falls_back_to_plain_decoding():
    # Each extra token costs as much as a whole pass: no guess below certainty pays.
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 64.0])), prior=1e6)
    assert sizer.choose(_chain([0.6, 0.5, 0.4])) == 0


def test_picks_the_size_with_the_best_expected_rate():
    cm = CostModel(np.array([1, 2, 3, 4]), np.array([1.0, 1.1, 1.6, 1.7]))
    sizer = TreeSizer(cm, prior=1e6)
    scores = [0.95, 0.9, 0.85]
    cal = sizer.calibrated(np.array(scores))
    rates = [(1 + cal[:n].sum()) / cm.seconds_for(n + 1) for n in range(4)]
    assert sizer.choose(_chain(scores)) == int(np.argmax(rates))


def test_calibration_learns_that_confident_drafters_were_wrong():
    # Each extra token costs half a pass: worth it at 0.9, not at what was really accepted.
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 32.5])), prior=2.0, trust=1.0)
    tree = _chain([0.9, 0.9, 0.9])
    before = sizer.calibrated(np.array([0.9]))[0]
    assert sizer.choose(tree) == 3
    for _ in range(50):
        sizer.observe(tree, np.array([0]))  # nothing accepted, ever
    after = sizer.calibrated(np.array([0.9]))[0]
    assert before == pytest.approx(0.925) and after < 0.05
    assert sizer.choose(tree) == 0
    assert sizer.expected_accepted(tree) == pytest.approx(1 + 3 * after)


def test_steps_are_priced_at_the_current_context():
    sizes, contexts = np.array([1, 8, 64]), np.array([256, 8192])
    grid = np.array([[1.0, 1.0, 1.2], [4.0, 30.0, 200.0]])  # nodes nearly free short, dear long
    sizer = TreeSizer(CostModel(sizes, grid[0], contexts=contexts, grid=grid), prior=1e6, trust=1.0)
    tree = DraftTree.from_paths(0, [list(range(1, 33))], scores=[[0.7] * 32])
    short, long = sizer.choose(tree, context=300), sizer.choose(tree, context=8000)
    assert short > long
    assert sizer.choose(tree) == sizer.choose(tree, context=10)  # no context: the first one
    # the choice maximizes the expected rate under the curve at that context
    cal = sizer.calibrated(np.full(32, 0.7))
    for ctx, got in ((300, short), (8000, long)):
        rates = [(1 + cal[:n].sum()) / sizer.cost.seconds_for(n + 1, ctx // 64 * 64 + 32) for n in range(33)]
        assert got == int(np.argmax(rates))


def test_calibration_is_kept_per_drafter_origin():
    # Two drafters score alike; one is always right, the other never: the sizer learns both.
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 1.0])), prior=2.0)
    right, wrong = _chain([0.5, 0.5]).tagged(1), _chain([0.5, 0.5]).tagged(2)
    for _ in range(50):
        sizer.observe(right, np.array([0, 1, 2]))
        sizer.observe(wrong, np.array([0]))
    p_right = sizer.calibrated(np.array([0.5]), np.array([1]))[0]
    p_wrong = sizer.calibrated(np.array([0.5]), np.array([2]))[0]
    p_new = sizer.calibrated(np.array([0.5]), np.array([3]))[0]  # never seen: the starting belief
    assert p_right > 0.9 and p_wrong < 0.1
    assert p_new == pytest.approx(TreeSizer(sizer.cost, prior=2.0).calibrated(np.array([0.5]))[0])
    assert sizer.expected_accepted(right) == pytest.approx(1 + 2 * p_right)


def test_choice_and_prune_keep_the_same_nodes():
    # Calibration can rank an origin's low scores above another's high ones; the count chosen
    # still refers to the prune order (score, then index), as the verifier keeps them.
    cm = CostModel(np.array([1, 2, 3, 4, 5]), np.array([1.0, 1.0, 1.0, 1.6, 3.0]))
    sizer = TreeSizer(cm, prior=1e6, trust=1.0)
    tree = DraftTree.from_paths(0, [[1, 2, 3], [4]], scores=[[0.9, 0.6, 0.3], [0.8]])
    n = sizer.choose(tree)
    order = np.argsort(-tree.scores[1:], kind="stable") + 1
    cal = sizer.calibrated(tree.scores[order], tree.origins[order])
    rates = [(1 + cal[:k].sum()) / cm.seconds_for(k + 1) for k in range(5)]
    assert n == int(np.argmax(rates)) and len(tree.prune(n)) == n + 1


def test_state_round_trips_and_an_old_pooled_state_becomes_the_start():
    cm = CostModel(np.array([1, 64]), np.array([1.0, 1.0]))
    sizer = TreeSizer(cm)
    for _ in range(5):
        sizer.observe(_chain([0.9, 0.4]).tagged(1), np.array([0, 1]))
        sizer.observe(_chain([0.9]).tagged(4), np.array([0]))
    again = TreeSizer(cm)
    again.load_state(sizer.state())
    probe = np.array([0.9, 0.4, 0.9]), np.array([1, 1, 4])
    assert np.array_equal(again.calibrated(*probe), sizer.calibrated(*probe))
    # a state saved before per-origin calibration: one (bins,) calibration for every drafter
    pooled = {"hits": np.full(20, 4.0), "seen": np.full(20, 8.0)}
    old = TreeSizer(cm)
    old.load_state(pooled)
    assert np.allclose(old.calibrated(np.array([0.1, 0.9]), np.array([1, 6])), 0.5)


@pytest.mark.parametrize("bad", [
    {"hits": np.zeros((2, 20)), "seen": np.ones((2, 20)), "origins": np.array([1, 1]),
     "start_hits": np.zeros(20), "start_seen": np.ones(20)},  # one origin twice
    {"hits": np.zeros((1, 20)), "seen": np.ones((1, 20)), "origins": np.array([1])},  # no start belief
    {"hits": np.full((1, 20), 2.0), "seen": np.ones((1, 20)), "origins": np.array([1]),
     "start_hits": np.zeros(20), "start_seen": np.ones(20)},  # more hits than seen
    {"hits": np.zeros(7), "seen": np.ones(7)},  # another number of bins
])
def test_a_bad_saved_calibration_is_refused(bad):
    from retrodraft.errors import StateError

    with pytest.raises(StateError):
        TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 1.0]))).load_state(bad)
