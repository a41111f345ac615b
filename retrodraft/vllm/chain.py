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
no cost would ever cut a chain). Counts are kept per depth too: a raw score means less deep in
a chain than near its root. Only accepted/rejected counts enter, so every tensor-parallel rank,
seeing the same sampled tokens, computes the same map.

The proposer's default cut (``cut="rate"``) scales a node's calibrated score by its row's own
recent record (:class:`RowTrust`) and raises the cost ``c`` to ``c * rate``, the engine's recent
tokens per unit of step cost (:class:`SpeedRate`): the chain then maximises accepted tokens per
unit of step time rather than per step.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit
from ..tree import DraftTree

__all__ = ["Calibrator", "RowTrust", "SpeedRate", "best_chain", "allot", "depth_bucket"]


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
    """Maps drafters' raw path scores to observed acceptance rates, per score bin and depth.

    A path score means different things at different depths: on json a raw 0.3 at depth 1 was
    accepted about as often as it says, at depth 8 a third as often (a copy that held for a few
    tokens rarely holds for eight). So counts are kept per (score bin, depth bucket), depths
    bucketed by powers of two (1, 2-3, 4-7, 8-15, 16+). A cell with few observations leans on its
    score bin's rate over all depths, and that on the raw score itself (``prior``
    pseudo-observations each), so a fresh engine starts from the drafters' own scores.

    Args:
        bins: equal-width bins over [0, 1].
        prior: pseudo-observations behind each fallback (how slowly counts take over).
        depth_buckets: depth buckets; ``1`` pools all depths (one bin per score only).
    """

    def __init__(self, bins: int = 20, prior: float = 8.0, depth_buckets: int = 5) -> None:
        self.bins, self.prior, self.depth_buckets = int(bins), float(prior), max(int(depth_buckets), 1)
        self.proposed = np.zeros((self.bins, self.depth_buckets), np.float64)
        self.accepted = np.zeros((self.bins, self.depth_buckets), np.float64)

    def _cells(self, raw: np.ndarray, depths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        b = np.clip((np.asarray(raw, np.float64) * self.bins).astype(np.int64), 0, self.bins - 1)
        if depths is None or self.depth_buckets == 1:
            return b, np.zeros_like(b)
        return b, depth_bucket(depths, self.depth_buckets)

    def __call__(self, raw: np.ndarray, depths: np.ndarray | None = None) -> np.ndarray:
        """``(n,)`` calibrated scores of ``(n,)`` raw path scores at ``(n,)`` depths (``None``:
        the score bins' rates over all depths)."""
        raw = np.asarray(raw, np.float64)
        b, d = self._cells(raw, depths)
        pooled = (self.accepted.sum(1)[b] + self.prior * raw) / (self.proposed.sum(1)[b] + self.prior)
        if depths is None or self.depth_buckets == 1:
            return pooled
        return (self.accepted[b, d] + self.prior * pooled) / (self.proposed[b, d] + self.prior)

    def update(self, raw: np.ndarray, accepted: int, depths: np.ndarray | None = None) -> None:
        """Record one verified chain: ``raw`` ``(m,)`` its nodes' raw scores in chain order
        (``depths`` theirs, default ``1..m``), of which the first ``accepted`` were accepted; the
        rest were not (their path was not)."""
        raw = np.asarray(raw, np.float64)
        if raw.shape[0] == 0:
            return
        if depths is None:
            depths = np.arange(1, raw.shape[0] + 1)
        b, d = self._cells(raw, depths if self.depth_buckets > 1 else None)
        np.add.at(self.proposed, (b, d), 1.0)
        np.add.at(self.accepted, (b[:int(accepted)], d[:int(accepted)]), 1.0)

    def state(self) -> dict:
        return {"proposed": self.proposed.copy(), "accepted": self.accepted.copy()}


def depth_bucket(depths: np.ndarray, buckets: int) -> np.ndarray:
    """``(n,)`` bucket of each depth: powers of two (1, 2-3, 4-7, 8-15, ...), the last open."""
    d = np.maximum(np.asarray(depths, np.int64), 1)
    return np.minimum(np.floor(np.log2(d)).astype(np.int64), buckets - 1)


class RowTrust:
    """One request's own recent acceptance per depth, against what the shared calibration said.

    The calibration is shared by every request, and one request can copy far better (a refactor
    of its prompt) or far worse (free json text) than the mix, and better at some depths than
    others. Per depth bucket (as :class:`Calibrator`'s) this keeps decayed sums, one term per
    chain (a chain's nodes live or die together, so a failed chain is one observation, not
    sixteen), of the fraction of the chain's nodes in the bucket that were accepted and of their
    mean calibrated score (what the calibration expected), and scales a node's calibrated score
    by the bucket's ratio (capped at 1). A bucket's ratio is
    shrunk towards the next shallower bucket's (``prior`` chains' worth), the first
    towards 1: a row that took whole chains up to depth 6 is trusted past 6 before it has
    drafted there, and one whose chains die at depth 2 is not trusted deeper. Both sums decay
    every step, also steps without a chain, so a cut-off row drifts back to the calibration.

    Args:
        buckets: depth buckets.
        decay: weight of the past per step (0.8: the last few chains decide).
        prior: chains' worth of the fallback ratio in each bucket.
    """

    def __init__(self, buckets: int = 5, decay: float = 0.8, prior: float = 1.0) -> None:
        self.buckets, self.decay, self.prior = int(buckets), float(decay), float(prior)
        self.expected = np.zeros(self.buckets, np.float64)
        self.accepted = np.zeros(self.buckets, np.float64)

    def factors(self) -> np.ndarray:
        """``(buckets,)`` observed over expected accepted tokens per depth bucket, shrunk."""
        f = np.empty(self.buckets, np.float64)
        prev = 1.0
        for b in range(self.buckets):
            prev = f[b] = (self.accepted[b] + self.prior * prev) / (self.expected[b] + self.prior)
        return f

    def __call__(self, calibrated: np.ndarray, depths: np.ndarray) -> np.ndarray:
        """``(n,)`` the row's estimates for nodes with ``(n,)`` calibrated scores at ``(n,)`` depths."""
        f = self.factors()[depth_bucket(depths, self.buckets)]
        return np.minimum(np.asarray(calibrated, np.float64) * f, 1.0)

    def update(self, depths: np.ndarray, calibrated: np.ndarray, accepted: int) -> None:
        """One step: the last chain's ``(m,)`` node depths and calibrated scores, of which the
        first ``accepted`` were accepted (empty when nothing was drafted: the sums only decay)."""
        self.expected *= self.decay
        self.accepted *= self.decay
        b = depth_bucket(depths, self.buckets)
        if b.shape[0] == 0:
            return
        # one chain is one observation per bucket (its nodes live or die together on one path)
        n = np.bincount(b, minlength=self.buckets).astype(np.float64)
        seen = n > 0
        self.expected[seen] += np.bincount(b, np.asarray(calibrated, np.float64), self.buckets)[seen] / n[seen]
        self.accepted[seen] += np.bincount(b[:int(accepted)], minlength=self.buckets)[seen] / n[seen]


class SpeedRate:
    """The engine's recent speed-up, in accepted tokens per unit of step cost.

    Throughput is tokens over time summed over all steps; the drafting that maximises it (the
    Dinkelbach form of a ratio objective) maximises, per step, ``tokens - rate * cost`` with
    ``rate`` the best tokens per unit cost reached. So a drafted token costing ``c`` (in plain
    one-token steps) pays when its acceptance chance exceeds ``c * rate``: at a 4x speed-up a
    token must be accepted four times as often as at none, because the step it lengthens was
    already committing four tokens. ``rate`` is estimated by decayed sums over row-steps of the
    tokens committed (accepted + 1) and the step's cost (``1 + c * drafted``), floored at 1
    (plain decoding's rate: a proposer never does worse than drafting nothing).

    Args:
        decay: weight of the past per row-step.
    """

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = float(decay)
        self.tokens = 0.0
        self.cost = 0.0

    @property
    def rate(self) -> float:
        return max(self.tokens / self.cost, 1.0) if self.cost > 0 else 1.0

    def update(self, committed: int, drafted: int, token_cost: float) -> None:
        """One row-step: ``committed`` tokens (accepted drafts + bonus) for ``drafted`` drafted
        tokens at ``token_cost`` each (plain-step units)."""
        self.tokens = self.decay * self.tokens + float(committed)
        self.cost = self.decay * self.cost + 1.0 + float(token_cost) * float(drafted)


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
