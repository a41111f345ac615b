"""The rejection rule for sampled drafts, checked directly against its target distribution."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from retrodraft.verify import _rejection_sample

V = 6
P = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.06, 0.04])


def _expected(counts):
    p = P.double().numpy()
    return p / p.sum() * counts.sum()


def _draw_without_replacement(q, m, rng):
    g = np.log(q) + rng.gumbel(size=q.shape)
    return np.argsort(-g)[:m]


def _histogram(q, m, kept, n=20000, seed=0):
    """Emitted-token counts when ``m`` drafts drawn from ``q`` are verified; ``kept(order)`` says
    which drafted tokens the (pruned) tree still holds."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    counts = np.zeros(V)
    accepted = 0
    for _ in range(n):
        order = _draw_without_replacement(q, m, rng)
        kids = {int(t): 1 for t in kept(order)}
        tok = _rejection_sample(P.clone(), (order, np.arange(V), q), kids)
        counts[tok] += 1
        accepted += tok in kids
    return counts, accepted / n


@pytest.mark.parametrize("case", ["close", "far", "pruned-gap", "zero-mass"])
def test_emitted_tokens_follow_p_whatever_q(case):
    q = {"close": np.array([0.28, 0.27, 0.2, 0.15, 0.06, 0.04]),
         "far": np.array([0.02, 0.03, 0.05, 0.1, 0.3, 0.5]),
         "pruned-gap": np.array([0.3, 0.3, 0.1, 0.1, 0.1, 0.1]),
         "zero-mass": np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.5])}[case]
    kept = (lambda order: [order[0], order[2]]) if case == "pruned-gap" else (lambda order: order)
    counts, _ = _histogram(q, 3 if case != "zero-mass" else 2, kept)
    assert chisquare(counts, _expected(counts)).pvalue >= 1e-3


def test_a_close_proposal_is_accepted_more_often_than_a_far_one():
    close = np.array([0.28, 0.27, 0.2, 0.15, 0.06, 0.04])
    far = np.array([0.02, 0.03, 0.05, 0.1, 0.3, 0.5])
    _, acc_close = _histogram(close, 2, lambda o: o, n=4000)
    _, acc_far = _histogram(far, 2, lambda o: o, n=4000)
    assert acc_close > 0.6 > acc_far


def test_negative_control_a_rule_that_always_accepts_is_caught():
    rng = np.random.default_rng(0)
    q = np.array([0.02, 0.03, 0.05, 0.1, 0.3, 0.5])
    counts = np.zeros(V)
    for _ in range(20000):
        counts[_draw_without_replacement(q, 1, rng)[0]] += 1  # "accept the first draft"
    assert chisquare(counts, _expected(counts)).pvalue < 1e-3
