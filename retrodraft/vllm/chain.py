"""From a fused draft tree to the one chain vLLM verifies, with scores calibrated online.

vLLM 0.32 verifies chains, not trees. Each step, per batch row, the drafters' fused tree is cut
to the chain with the largest expected gain: a node's calibrated score ``p`` estimates the chance
that the path to it is accepted, so a chain of nodes ``v1..vm`` is expected to commit
``p(v1) + ... + p(vm)`` extra tokens and costs ``m`` verified tokens. With a per-token cost
``c``, the best chain maximises ``sum(p(vj) - c)``; it is empty when no node pays.

Example (c = 0.2): root -> a (0.9) -> b (0.5) -> c (0.1), root -> x (0.3)
    gains: a 0.7, b 0.3, c -0.1, x 0.1  ->  chain [a, b] (1.0), not [a, b, c] (0.9) or [x].

Calibration: drafters' path scores are estimates; :class:`Calibrator` counts, per score bin,
how many proposed nodes vLLM accepted, and maps a raw score to that bin's acceptance rate
(shrunk towards the raw score while a bin has few observations). Every verified node counts,
those after the first rejected one as not accepted: the rate is then the chance that the *path*
to a node is accepted, which is what the gain above needs (counting only the nodes reached
would estimate the chance given the parent was accepted, close to 1 deep in a good copy, and
no cost would ever cut a chain). Only accepted/rejected counts enter, so every
tensor-parallel rank, seeing the same sampled tokens, computes the same map.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit
from ..tree import DraftTree

__all__ = ["Calibrator", "best_chain", "allot"]


@njit
def _best_chain(parents, depths, gain, max_len, out):
    """Nodes of the best root-to-node chain, root excluded; returns how many (0: none pays).

    ``value[v] = gain[v] + max(0, max over children value[c])``: the best chain's gain starting
    at ``v``. Parents come before children, so one backwards pass fills it. Shapes: parents,
    depths, gain ``(n,)``; out ``(max_len,)``.
    """
    n = parents.shape[0]
    value = np.zeros(n, np.float64)
    best_child = np.full(n, -1, np.int64)
    best_val = np.zeros(n, np.float64)  # best child value seen, floored at 0
    for v in range(n - 1, 0, -1):
        if depths[v] > max_len:
            continue
        value[v] = gain[v] + best_val[v]
        p = parents[v]
        if value[v] > 0 and value[v] >= best_val[p]:  # ties: the lower index (visited later) wins
            best_val[p] = value[v]
            best_child[p] = v
    m = 0
    v = best_child[0]
    while v >= 0 and m < max_len:
        out[m] = v
        m += 1
        v = best_child[v]
    return m


def best_chain(tree: DraftTree, calibrated: np.ndarray, cost: float, max_len: int) -> np.ndarray:
    """Node indices (root excluded, ``(m,)`` int64, ``m <= max_len``) of the chain of ``tree``
    that maximises the summed ``calibrated[v] - cost``; empty when nothing pays.

    Args:
        tree: the fused draft tree.
        calibrated: ``(len(tree),)`` calibrated path scores (probability the path is accepted).
        cost: what verifying one drafted token costs, in accepted tokens.
        max_len: longest chain (vLLM's ``num_speculative_tokens``).
    """
    out = np.empty(max(int(max_len), 1), np.int64)
    gain = np.asarray(calibrated, np.float64) - float(cost)
    m = _best_chain(tree.parents.astype(np.int64), tree.depths.astype(np.int64), gain, int(max_len), out)
    return out[:m].copy()


class Calibrator:
    """Maps drafters' raw path scores to observed acceptance rates, per score bin.

    Args:
        bins: equal-width bins over [0, 1].
        prior: pseudo-observations at the raw score in every bin (how slowly counts take over).
    """

    def __init__(self, bins: int = 20, prior: float = 8.0) -> None:
        self.bins, self.prior = int(bins), float(prior)
        self.proposed = np.zeros(self.bins, np.float64)
        self.accepted = np.zeros(self.bins, np.float64)

    def _bin(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(raw, np.float64) * self.bins).astype(np.int64), 0, self.bins - 1)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """``(n,)`` calibrated scores of ``(n,)`` raw path scores."""
        raw = np.asarray(raw, np.float64)
        b = self._bin(raw)
        return (self.accepted[b] + self.prior * raw) / (self.proposed[b] + self.prior)

    def update(self, raw: np.ndarray, accepted: int) -> None:
        """Record one verified chain: ``raw`` ``(m,)`` its nodes' raw scores in chain order, of
        which the first ``accepted`` were accepted; the rest were not (their path was not)."""
        raw = np.asarray(raw, np.float64)
        if raw.shape[0] == 0:
            return
        b = self._bin(raw)
        np.add.at(self.proposed, b, 1.0)
        np.add.at(self.accepted, b[:int(accepted)], 1.0)

    def state(self) -> dict:
        return {"proposed": self.proposed.copy(), "accepted": self.accepted.copy()}


def allot(chains: list[np.ndarray], budget: int) -> list[int]:
    """How many tokens of each chain to keep so that at most ``budget`` are drafted in all.

    ``chains[i]`` holds row ``i``'s calibrated scores in chain order, non-increasing. The kept
    tokens are the ``budget`` highest scores over the batch (ties: lower row, then earlier
    position), which are prefixes of each chain because scores never grow along one.
    """
    total = sum(len(c) for c in chains)
    if total <= budget:
        return [len(c) for c in chains]
    if budget <= 0:
        return [0] * len(chains)
    score = np.concatenate([np.asarray(c, np.float64) for c in chains])
    row = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(chains)])
    pos = np.concatenate([np.arange(len(c), dtype=np.int64) for c in chains])
    order = np.lexsort((pos, row, -score))[:budget]
    return np.bincount(row[order], minlength=len(chains)).tolist()
