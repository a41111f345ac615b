import numpy as np
import pytest
import torch

from helpers import outcome
from retrodraft.drafters.base import Request
from retrodraft.drafters.stand import Stand
from retrodraft.errors import ConfigError
from retrodraft.tree import DraftTree


def _logits(vocab, probs: dict):
    p = torch.full((vocab,), 1e-9)
    for t, x in probs.items():
        p[t] = x
    return torch.log(p / p.sum())


def _teach(d, context, probs_at_root, vocab=10):
    """Verify a root-only tree after ``context`` whose model distribution is ``probs_at_root``."""
    d.observe(outcome(context, DraftTree.root_only(context[-1]), [0], _logits(vocab, probs_at_root)[None]))


def test_repeated_contexts_average_their_distributions():
    d = Stand(max_order=2, k=4, shrink=0.0)
    _teach(d, [1, 2], {5: 0.8, 6: 0.2})
    _teach(d, [1, 2], {5: 0.2, 6: 0.8})
    toks, w = d.table.row(np.array([1, 2]))
    got = dict(zip(toks.tolist(), w.tolist()))
    assert got[5] == pytest.approx(0.5, abs=1e-4) and got[6] == pytest.approx(0.5, abs=1e-4)
    _teach(d, [1, 2], {7: 1.0})  # third time: the old row weighs 2/3
    toks, w = d.table.row(np.array([1, 2]))
    got = dict(zip(toks.tolist(), w.tolist()))
    assert got[7] == pytest.approx(1 / 3, abs=1e-4) and got[5] == pytest.approx(1 / 3, abs=1e-4)


def test_the_longest_known_context_wins():
    d = Stand(max_order=2, k=4, width=1, shrink=0.0)
    _teach(d, [1, 2], {5: 0.9, 6: 0.1})  # rows (2,) and (1, 2)
    _teach(d, [3, 2], {6: 0.9, 5: 0.1})  # rows (2,) averaged and (3, 2)
    assert d.propose(np.array([1, 2]), 1).tokens.tolist() == [2, 5]
    assert d.propose(np.array([3, 2]), 1).tokens.tolist() == [2, 6]
    # an unseen pair falls back to the unigram row (5 and 6 tie at 0.5 there)
    assert d.propose(np.array([4, 2]), 1).tokens[1] in (5, 6)


def test_drafts_best_first_within_the_budget():
    d = Stand(max_order=1, k=4, width=2, shrink=0.0)
    _teach(d, [0, 1], {2: 0.6, 3: 0.4})
    _teach(d, [0, 2], {4: 0.9, 5: 0.1})
    _teach(d, [0, 3], {6: 0.5, 7: 0.5})
    tree = d.propose(np.array([0, 1]), 3)
    paths = {tuple(tree.tokens[tree.path_to(i)].tolist()): float(tree.scores[i]) for i in range(len(tree))}
    # 1->2 (0.6), 1->2->4 (0.54), 1->3 (0.4) beat 1->3->6 (0.2)
    assert set(paths) == {(1,), (1, 2), (1, 2, 4), (1, 3)}
    assert paths[(1, 2, 4)] == pytest.approx(0.54, abs=1e-3)
    assert len(d.propose(np.array([0, 1]), 2)) == 3


def test_every_verified_node_teaches_its_own_context():
    d = Stand(max_order=2, k=2)
    tree = DraftTree.from_paths(2, [[3], [4]])  # nodes 2, 3, 4; only the root accepted
    logits = torch.stack([_logits(10, {3: 1.0}), _logits(10, {8: 1.0}), _logits(10, {9: 1.0})])
    d.observe(outcome([1, 2], tree, [0], logits))
    assert d.table.row(np.array([2, 3]))[0][0] == 8  # a rejected node's prediction is still real
    assert d.table.row(np.array([2, 4]))[0][0] == 9
    d.reset()
    assert d.table.used == 0


@pytest.mark.parametrize("kw", [dict(max_order=0), dict(min_order=5, max_order=4), dict(width=9, k=8),
                                dict(shrink=-1), dict(max_bytes=10)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        Stand(**kw)


def test_sampled_drafts_verified_by_rejection_emit_the_models_distribution():
    """Regression: when a draw's *value* decided whether it stayed in the tree, the rejection
    chain saw a biased sample (chi-square p ~ 1e-13 here). Draws are now scored by rank."""
    from scipy.stats import chisquare
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    from retrodraft.verify import accept

    torch.manual_seed(0)
    vocab, n = 8, 6000
    root_logits = torch.randn(vocab) * 1.5
    d = Stand(max_order=1, k=8, seed=1)
    d.observe(outcome([3, 5], DraftTree.root_only(5), [0], (torch.randn(vocab) * 1.5)[None]))  # q != p
    d.begin(Request(np.array([3, 5]), vocab, temperature=0.7))
    procs = LogitsProcessorList([TemperatureLogitsWarper(0.7)])
    counts = np.zeros(vocab)
    sampled = 0
    for _ in range(n):
        tree = d.propose(np.array([3, 5]), 4)
        sampled += bool(tree.proposals)
        v = accept(tree, root_logits.expand(len(tree), vocab).clone(), torch.tensor([[3, 5]]), procs, True)
        counts[v.tokens[0]] += 1
    p = torch.softmax(root_logits / 0.7, -1).double().numpy()
    assert sampled == n
    assert chisquare(counts, p / p.sum() * n).pvalue >= 1e-3
