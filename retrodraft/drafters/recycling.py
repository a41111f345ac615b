"""Token Recycling (arXiv 2408.08696): reuse the candidates the model already ranked.

Every verification pass computes logits at every tree node, most of them for guesses that were
rejected. Their top-k are good guesses of what follows that token *next time*, so they are kept
in an adjacency matrix ``succ[token] = top-k successors`` (with their probabilities ``prob``).
A draft is a tree shape (rank paths, see :mod:`._template`) filled from the matrix by
breadth-first search from the root token.

Example (k = 2, shrink = 0, a hand-filled matrix)::

    succ[5] = [7, 3]  prob[5] = [0.6, 0.2]
    succ[7] = [8, -1] prob[7] = [0.5, 0.0]      (-1: no second candidate known yet)
    shape [[0], [1], [0, 0], [0, 1]], root 5 ->
        5 -> 7 (0.6) -> 8 (0.6 * 0.5 = 0.3)
          -> 3 (0.2)                             ([0, 1] is dropped: succ[7, 1] is unknown)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError, StateError
from ..jit import njit
from ..tree import DraftTree
from ._kernels import fill_template, last_token_row, to_tree, tree_buffers
from ._state import expect_array
from ._template import compile_template, template_paths
from .base import Drafter, Outcome, Request

__all__ = ["TokenRecycling"]


@njit
def _write_rows(succ, prob, tokens, order, top_tok, top_prob):
    """``succ[tokens[i]], prob[tokens[i]] = top_tok[i], top_prob[i]`` for ``i`` in ``order``.

    Shapes: succ/prob ``(vocab, k)``, tokens ``(n,)``, order ``(m,)``, top_* ``(n, k)``.
    A token met twice keeps the row written last; tokens outside the matrix are skipped.
    """
    rows, k = succ.shape
    for j in range(order.shape[0]):
        i = order[j]
        t = tokens[i]
        if t < 0 or t >= rows:
            continue
        for r in range(k):
            succ[t, r] = top_tok[i, r]
            prob[t, r] = top_prob[i, r]


@njit
def _estimate(succ, prob, parents, children, out):
    # out[i] = P(children[i] | parents[i]) from the row of parents[i]; 0 if not among its
    # top-k, NaN if the row was never written (nothing known).
    rows, k = succ.shape
    for i in range(parents.shape[0]):
        t = parents[i]
        out[i] = np.nan
        if t < 0 or t >= rows or succ[t, 0] < 0:
            continue
        out[i] = 0.0
        for r in range(k):
            if succ[t, r] == children[i]:
                out[i] = prob[t, r]
                break


class TokenRecycling(Drafter):
    """Drafts from a ``vocab x k`` matrix of each token's most recent top-k successors.

    Args:
        k: candidates kept per token (the matrix width), 1..64.
        shape: the candidate tree to fill, pruned to the budget by score: ``"paper80"``
            (default; the paper's 80-node tree, 6 deep), ``"wide"`` (190 rank paths up to 8
            deep, see :func:`~retrodraft.drafters._template.generated_template`) or an explicit
            list of rank paths such as ``[[0], [1], [0, 0]]``.
        shrink: how much a recycled probability ``p`` is discounted: a candidate is estimated to
            be accepted with probability ``p / (1 + shrink * p)``, because it was ranked in an
            older context and so is over-confident; 0 trusts the stored probabilities as they are.

    A node's score is the product of these estimates along its path. The matrix persists
    across ``generate`` calls with the same vocabulary (warm start); :meth:`reset` clears it.
    """

    name = "recycling"
    fills_shape = True
    estimates_next_token = True

    def __init__(self, k: int = 8, shape: str | Sequence[Sequence[int]] = "paper80", shrink: float = 0.25) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 64:
            raise ConfigError(f"k (candidates per token) must be an integer from 1 to 64, got {k!r}.")
        if isinstance(shrink, bool) or not isinstance(shrink, (int, float, np.floating)) or not 0 <= shrink <= 10:
            raise ConfigError(f"shrink must be a number from 0 to 10, got {shrink!r}.")
        self.k = int(k)
        self.top_k = self.k
        self.shrink = float(shrink)
        self.succ = np.full((0, self.k), -1, dtype=np.int32)
        self.prob = np.zeros((0, self.k), dtype=np.float32)
        self.use_shape(shape)

    def use_shape(self, paths: str | Sequence[Sequence[int]]) -> None:
        """Fill this shape from now on (a preset name, rank paths or a calibrated
        :class:`~retrodraft.shape.TreeShape`'s ``paths``)."""
        self.shape = paths
        self._tpl_parent, self._tpl_rank = compile_template(template_paths(paths, self.k), self.k)
        n = self._tpl_parent.shape[0]
        self._buf = tree_buffers(n)
        self._hist = np.empty((n, 1), np.int64)
        self._fill(np.full((2, self.k), -1, np.int32), np.zeros((2, self.k), np.float32), 0)  # compile once

    def _fill(self, succ: np.ndarray, prob: np.ndarray, root: int) -> int:
        return fill_template(last_token_row, (succ.shape[0],), (succ, prob), np.array([root], np.int64),
                             (self._tpl_parent, self._tpl_rank), self.shrink, self._hist, self._buf)

    # ------------------------------------------------------------------ state
    def _allocate(self, vocab_size: int) -> None:
        self.succ = np.full((vocab_size, self.k), -1, dtype=np.int32)
        self.prob = np.zeros((vocab_size, self.k), dtype=np.float32)

    def begin(self, request: Request) -> None:
        if request.vocab_size != self.succ.shape[0]:
            self._allocate(int(request.vocab_size))

    def reset(self) -> None:
        self.succ.fill(-1)
        self.prob.fill(0.0)

    def next_token_estimate(self, parents: np.ndarray, children: np.ndarray) -> np.ndarray:
        """The model's own recent estimate of ``P(child | parent token)``, shape ``(n,)`` for
        ``(n,)`` token pairs: the recycled probability, 0 when the child is not in the parent's
        top-k, NaN when the parent's row is still empty. Other drafters (retrieval) use it to
        prune guesses the model is unlikely to make."""
        out = np.empty(len(parents), np.float32)
        _estimate(self.succ, self.prob, np.asarray(parents, np.int64), np.asarray(children, np.int64), out)
        return out

    # ------------------------------------------------------------------ drafting
    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        if budget <= 0 or self.succ.shape[0] == 0:
            return DraftTree.root_only(root)
        m = self._fill(self.succ, self.prob, root)
        # A row holds distinct tokens, so siblings never repeat: no de-duplication needed.
        return to_tree(self._buf, m).prune(budget)

    def observe(self, outcome: Outcome) -> None:
        """Recycle the top-k of every verified node into its token's row.

        Rows of accepted nodes are written last, so when a token occurs more than once in the
        tree the prediction made in the real context wins over a counterfactual one.
        """
        tree, accepted = outcome.tree, np.asarray(outcome.accepted, np.int64)
        top_tok, top_prob = outcome.top(self.k)
        if self.succ.shape[0] == 0:  # observed before any begin: size the matrix to what was seen
            self._allocate(int(max(tree.tokens.max(), top_tok.max(initial=0))) + 1)
        rejected = np.ones(len(tree), dtype=bool)
        rejected[accepted] = False
        order = np.concatenate([np.flatnonzero(rejected), accepted])
        _write_rows(self.succ, self.prob, tree.tokens, order, top_tok, top_prob)

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """What was learnt: ``succ (vocab, k) int32`` and ``prob (vocab, k) float32``."""
        return {"succ": self.succ, "prob": self.prob}

    def load_state(self, d: dict) -> None:
        """Take over a matrix saved by :meth:`state` (same ``k``)."""
        hint = f"construct it with k={d['succ'].shape[-1]}" if isinstance(d.get("succ"), np.ndarray) else ""
        succ = expect_array(d, "succ", np.int32, (None, self.k), "recycling", hint)
        prob = expect_array(d, "prob", np.float32, succ.shape, "recycling", hint)
        if (succ < -1).any():
            raise StateError("the saved recycling matrix holds invalid token ids.")
        self.succ, self.prob = succ.copy(), prob.copy()

