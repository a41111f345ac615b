"""Best chain by expected gain, calibration, and the batch's token budget."""

import numpy as np

from retrodraft.tree import DraftTree
from retrodraft.vllm.chain import Calibrator, RowTrust, SpeedRate, allot, best_chain, depth_bucket


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


def test_depths_bucket_by_powers_of_two():
    assert depth_bucket(np.array([1, 2, 3, 4, 7, 8, 15, 16, 100]), 5).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert depth_bucket(np.array([1, 64]), 1).tolist() == [0, 0]


def test_calibration_tells_depths_apart():
    # the same raw score is accepted at depth 1 and not at depth 8: one rate per depth
    c = Calibrator(bins=10, prior=1.0)
    for _ in range(100):
        c.update(np.array([0.85] * 8), accepted=1)
    shallow, deep = c(np.array([0.85, 0.85]), np.array([1, 8]))
    assert shallow > 0.9 and deep < 0.05
    assert abs(c(np.array([0.85]))[0] - 100 / 801) < 0.01  # no depths: the bin over all depths
    pooled = Calibrator(bins=10, prior=1.0, depth_buckets=1)
    for _ in range(100):
        pooled.update(np.array([0.85] * 8), accepted=1)
    assert np.allclose(pooled(np.array([0.85]), np.array([1])), pooled(np.array([0.85]), np.array([8])))


def test_row_trust_follows_the_row_and_forgets():
    t = RowTrust(buckets=5, decay=0.8, prior=1.0)
    cal, depths = np.full(4, 0.5), np.arange(1, 5)
    assert np.allclose(t(cal, depths), cal)  # a new row: the calibration's word
    for _ in range(6):
        t.update(depths, cal, accepted=4)  # every chain taken whole
    f = t.factors()
    assert (f > 1.5).all()  # depths 8+ (never drafted) inherit depth 4-7's trust
    assert t(np.array([0.9]), np.array([1]))[0] == 1.0  # capped: a probability
    for _ in range(15):
        t.update(depths, cal, accepted=0)  # then every chain rejected: the past fades
    assert (t.factors() < 0.5).all()
    for _ in range(40):
        t.update(np.zeros(0, np.int64), np.zeros(0), accepted=0)  # no chains: back to the calibration
    assert np.allclose(t.factors(), 1.0, atol=0.01)


def test_a_failed_chain_is_one_observation_per_depth():
    long, short = RowTrust(), RowTrust()
    long.update(np.arange(1, 17), np.full(16, 0.5), accepted=0)
    short.update(np.arange(1, 5), np.full(4, 0.5), accepted=0)
    assert np.allclose(long.factors()[:3], short.factors()[:3])


def test_speed_rate_is_tokens_per_step_cost_floored_at_plain_decoding():
    r = SpeedRate(decay=1.0)
    assert r.rate == 1.0
    for _ in range(10):
        r.update(committed=5, drafted=10, token_cost=0.05)  # 5 tokens for 1 + 0.5 step
    assert abs(r.rate - 5 / 1.5) < 1e-9
    bad = SpeedRate(decay=1.0)
    for _ in range(10):
        bad.update(committed=1, drafted=16, token_cost=0.05)  # drafting never paid: rate < 1
    assert bad.rate == 1.0


def test_the_speed_up_raises_the_bar_for_a_drafted_token():
    # a node accepted 20% of the time pays at cost 0.05 alone, not once steps commit 5 tokens
    t = DraftTree.from_arrays([0, 1, 2], [-1, 0, 1], [1.0, 0.9, 0.2])
    assert best_chain(t, t.scores, cost=0.05 * 1.0, max_len=16).tolist() == [1, 2]
    assert best_chain(t, t.scores, cost=0.05 * 5.0, max_len=16).tolist() == [1]
