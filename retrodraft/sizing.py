"""How big a tree pays, chosen each step: the drafters' scores, calibrated, against the cost curve.

The right tree size is a property of the model, the device, the dtype - and of how confident the
drafters are *this step*: a long prompt-lookup match deserves a deep chain, free-form prose
deserves no draft at all. :class:`TreeSizer` turns the drafters' node scores into calibrated
acceptance probabilities (learnt online from which nodes were accepted) and each step picks the
number of nodes ``n`` that maximizes expected tokens per second under the
:class:`~retrodraft.cost.CostModel`::

    rate(n) = (1 + sum of the n best nodes' acceptance probabilities) / seconds(1 + n, context)

``n = 0`` is plain decoding, so a tree is verified only when its expected rate beats it. The cost
is priced at the current context length: at long contexts each extra node costs more.
"""

from __future__ import annotations

import numpy as np

from .cost import CostModel
from .errors import StateError
from .tree import DraftTree

__all__ = ["TreeSizer"]

_BUCKET = 64  # context positions priced alike


class TreeSizer:
    """Chooses, each step, how many of a tree's best nodes to verify.

    A drafter's node score is its own estimate that the path to the node is accepted; the sizer
    recalibrates it against what actually happened (scores in ``bins`` equal-width bins, each
    bin's acceptance rate counted with ``prior`` pseudo-observations at the bin's centre, so the
    drafters are trusted until evidence says otherwise) and then maximizes expected tokens per
    second under the :class:`CostModel`.

    Args:
        cost: the device's cost curve.
        budget: never more draft nodes than this (default: the largest measured pass - 1).
        bins / prior: calibration resolution and strength (pseudo-observations per bin) of
            the initial belief.
        trust: the initial belief is that a node scored ``s`` is accepted with probability
            ``trust * s``: drafters are over-confident on a cold start over text they cannot
            predict, where every wasted node is paid for (``benchmarks/cold_start.py`` measures
            the choice).
    """

    def __init__(self, cost: CostModel, budget: int | None = None, bins: int = 20, prior: float = 8.0,
                 trust: float = 0.5) -> None:
        self.cost = cost
        self.budget = cost.max_tokens - 1 if budget is None else min(int(budget), cost.max_tokens - 1)
        self.bins = int(bins)
        centres = (np.arange(self.bins) + 0.5) / self.bins
        self._hits = centres * prior * trust
        self._seen = np.full(self.bins, float(prior))
        # seconds(1 + n) for every n the sizer may choose, per context bucket (computed once each).
        self._seconds: dict[int, np.ndarray] = {}

    def _bin(self, scores: np.ndarray) -> np.ndarray:
        # The epsilon puts float32 and float64 copies of one score (0.9 -> 17.99999 vs 18) in one bin.
        return np.minimum((np.asarray(scores, np.float64) * self.bins + 1e-5).astype(np.int64), self.bins - 1)

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Acceptance probability of nodes with these drafter scores, ``(n,)`` -> ``(n,)``."""
        b = self._bin(scores)
        return self._hits[b] / self._seen[b]

    def choose(self, tree: DraftTree, budget: int | None = None, context: int | None = None) -> int:
        """Draft nodes to keep (0 = plain decoding) for the highest expected tokens per second,
        at most ``budget`` (and the sizer's own :attr:`budget`), with passes priced after
        ``context`` cached positions (the cost model's first context when omitted)."""
        cap = self.budget if budget is None else min(self.budget, int(budget))
        s = np.sort(tree.scores[1:])[::-1][:cap]
        if s.size == 0:
            return 0
        gain = np.concatenate([[1.0], 1.0 + np.cumsum(self.calibrated(s))])
        rate = gain / self.step_seconds(context)[: gain.size]
        return int(np.argmax(rate))

    def step_seconds(self, context: int | None = None) -> np.ndarray:
        """``(budget + 1,)`` seconds of a pass of ``1 + n`` tokens after ``context`` cached
        positions, for every ``n`` (contexts rounded to 64 positions, each bucket computed once)."""
        bucket = -1 if context is None or self.cost.contexts.size == 1 else int(context) // _BUCKET
        row = self._seconds.get(bucket)
        if row is None:
            at = None if bucket < 0 else bucket * _BUCKET + _BUCKET // 2
            row = self._seconds[bucket] = self.cost.seconds_for(np.arange(1, self.budget + 2), at)
        return row

    def observe(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Count, per score bin, which verified draft nodes were on the accepted path."""
        if len(tree) <= 1:
            return
        b = self._bin(tree.scores[1:])
        hit = np.zeros(len(tree), dtype=np.float64)
        hit[accepted] = 1.0
        np.add.at(self._seen, b, 1.0)
        np.add.at(self._hits, b, hit[1:])

    def expected_accepted(self, tree: DraftTree) -> float:
        """Calibrated expected tokens committed by verifying ``tree`` (bonus token included)."""
        return 1.0 + float(self.calibrated(tree.scores[1:]).sum())

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """The calibration learnt so far (``hits``, ``seen``: ``(bins,)`` float64) and the cost
        curve it was learnt under, every context of it: ``cost_sizes`` ``(k,)``, ``cost_seconds``
        ``(k,)`` (the first context's row), ``cost_contexts`` ``(m,)``, ``cost_grid`` ``(m, k)``,
        ``cost_key``, ``cost_device``."""
        return {"hits": self._hits, "seen": self._seen, "cost_sizes": np.asarray(self.cost.sizes, np.int64),
                "cost_seconds": np.asarray(self.cost.seconds, np.float64),
                "cost_contexts": np.asarray(self.cost.contexts, np.float64),
                "cost_grid": np.asarray(self.cost.grid, np.float64), "cost_key": self.cost.key,
                "cost_device": self.cost.device}

    def load_state(self, d: dict) -> None:
        """Take over a calibration saved by :meth:`state` (same number of bins)."""
        arrays = [d.get("hits"), d.get("seen")]
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (self.bins,) for a in arrays):
            raise StateError(f"the saved tree-sizer calibration does not have {self.bins} float64 bins.")
        hits, seen = arrays
        if not (np.isfinite(hits).all() and np.isfinite(seen).all() and (seen > 0).all() and (hits >= 0).all()
                and (hits <= seen).all()):
            raise StateError("the saved tree-sizer calibration holds invalid counts.")
        self._hits, self._seen = hits.copy(), seen.copy()
