"""The drafter interface every built-in drafter keeps: propose learns nothing, observe learns."""

import numpy as np
import pytest
import torch

from helpers import outcome
from retrodraft.drafters import make_drafter
from retrodraft.drafters.base import Request
from retrodraft.tree import DraftTree

TEXT = [1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3, 4, 1, 2]


def _learnt(d) -> list[np.ndarray]:
    """Copies of the arrays a drafter learns into."""
    if hasattr(d, "table"):
        return [d.table.keys.copy(), d.table.tok.copy(), d.table.w.copy()]
    if hasattr(d, "succ"):
        return [d.succ.copy(), d.prob.copy()]
    return []


@pytest.mark.parametrize("name", ["recycling", "lookup", "stand", "aded", "retrieval"])
def test_propose_has_no_side_effects_and_observe_teaches(name):
    d = make_drafter(name)
    d.begin(Request(np.array(TEXT[:8]), 10))
    logits = torch.zeros(1, 10)
    logits[0, 4] = 5.0
    for n in range(8, len(TEXT)):  # one root-only step per token of the text
        ctx = np.array(TEXT[:n])
        d.observe(outcome(ctx, DraftTree.root_only(ctx[-1]), [0], logits, committed=[TEXT[n]], k=d.top_k or 1))
    before = _learnt(d)
    first = d.propose(np.array(TEXT), 6)
    second = d.propose(np.array(TEXT), 6)
    assert first.tokens.tolist() == second.tokens.tolist() and first.parents.tolist() == second.parents.tolist()
    assert np.allclose(first.scores, second.scores)
    assert all(np.array_equal(a, b) for a, b in zip(before, _learnt(d)))
    if before:  # a learning drafter drafts from what it observed
        assert len(first) > 1
