"""How big a tree pays, chosen each step: the drafters' scores, calibrated, against the cost curve.

The right tree size is a property of the model, the device, the dtype - and of how confident the
drafters are *this step*: a long prompt-lookup match deserves a deep chain, free-form prose
deserves no draft at all. :class:`TreeSizer` turns the drafters' node scores into calibrated
acceptance probabilities (learnt online from which nodes were accepted, separately for each set
of drafters that proposed a node: one drafter's 0.3 is not another's) and each step picks the
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
    recalibrates it against what actually happened and then maximizes expected tokens per second
    under the :class:`CostModel`. Calibration is kept per *origin* (the bitmask of drafters that
    proposed a node, :attr:`DraftTree.origins`): scores in ``bins`` equal-width bins, each bin's
    acceptance rate counted with ``prior`` pseudo-observations at the bin's centre, so the
    drafters are trusted until evidence says otherwise. Pooling every drafter's scores in one
    calibration under-prices a copying drafter's modest scores and over-prices a wide tree of
    model candidates: at an 8k-token code context it ran 2.27x over greedy against 2.51x per
    origin (``benchmarks/long_context.py``, methods ``auto-pooled`` and ``auto``).

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
        # What an origin not seen yet starts from: (hits, seen), (bins,) each.
        self._start = (centres * prior * trust, np.full(self.bins, float(prior)))
        # Per origin bitmask: its row in (origins, bins) hit and seen counts.
        self._rows: dict[int, int] = {}
        self._hits = np.zeros((0, self.bins))
        self._seen = np.zeros((0, self.bins))
        # seconds(1 + n) for every n the sizer may choose, per context bucket (computed once each).
        self._seconds: dict[int, np.ndarray] = {}

    def _bin(self, scores: np.ndarray) -> np.ndarray:
        # The epsilon puts float32 and float64 copies of one score (0.9 -> 17.99999 vs 18) in one bin.
        return np.minimum((np.asarray(scores, np.float64) * self.bins + 1e-5).astype(np.int64), self.bins - 1)

    def _row(self, origins: np.ndarray | None, n: int, grow: bool) -> np.ndarray:
        """``(n,)`` calibration rows of nodes with these origins (``None``: origin 0); an origin
        seen for the first time gets a row at the starting belief when ``grow``, else reads it."""
        if origins is None:
            origins = np.zeros(n, np.int64)
        masks, inverse = np.unique(np.asarray(origins, np.int64), return_inverse=True)
        rows = np.empty(masks.shape[0], np.int64)
        for i, m in enumerate(masks.tolist()):
            r = self._rows.get(m)
            if r is None:
                if not grow:
                    rows[i] = -1
                    continue
                r = self._rows[m] = self._hits.shape[0]
                self._hits = np.vstack([self._hits, self._start[0]])
                self._seen = np.vstack([self._seen, self._start[1]])
            rows[i] = r
        return rows[inverse.reshape(-1)]

    def calibrated(self, scores: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """Acceptance probability of nodes with these drafter scores and origins (bitmasks of the
        drafters that proposed them; omitted: origin 0), ``(n,)`` -> ``(n,)``."""
        scores = np.asarray(scores)
        b, rows = self._bin(scores), self._row(origins, scores.shape[0], grow=False)
        fresh = rows < 0
        out = np.empty(scores.shape[0], np.float64)
        out[~fresh] = self._hits[rows[~fresh], b[~fresh]] / self._seen[rows[~fresh], b[~fresh]]
        out[fresh] = self._start[0][b[fresh]] / self._start[1][b[fresh]]
        return out

    def choose(self, tree: DraftTree, budget: int | None = None, context: int | None = None) -> int:
        """Draft nodes to keep (0 = plain decoding) for the highest expected tokens per second,
        at most ``budget`` (and the sizer's own :attr:`budget`), with passes priced after
        ``context`` cached positions (the cost model's first context when omitted).

        The candidates are the tree's nodes in :meth:`DraftTree.prune` order (score, then index),
        so choosing ``n`` and pruning to ``n`` keep the same nodes."""
        cap = self.budget if budget is None else min(self.budget, int(budget))
        order = np.argsort(-tree.scores[1:], kind="stable")[:cap] + 1
        if order.size == 0:
            return 0
        p = self.calibrated(tree.scores[order], tree.origins[order])
        gain = np.concatenate([[1.0], 1.0 + np.cumsum(p)])
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
        """Count, per origin and score bin, which verified draft nodes were on the accepted path."""
        if len(tree) <= 1:
            return
        b, rows = self._bin(tree.scores[1:]), self._row(tree.origins[1:], len(tree) - 1, grow=True)
        hit = np.zeros(len(tree), dtype=np.float64)
        hit[accepted] = 1.0
        np.add.at(self._seen, (rows, b), 1.0)
        np.add.at(self._hits, (rows, b), hit[1:])

    def expected_accepted(self, tree: DraftTree) -> float:
        """Calibrated expected tokens committed by verifying ``tree`` (bonus token included)."""
        return 1.0 + float(self.calibrated(tree.scores[1:], tree.origins[1:]).sum())

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """The calibration learnt so far - ``origins`` ``(k,)`` int64 drafter bitmasks, ``hits``
        and ``seen`` ``(k, bins)`` float64 counts, ``start_hits`` / ``start_seen`` ``(bins,)``
        the belief a new origin starts from - and the cost curve it was learnt under, every
        context of it: ``cost_sizes`` ``(k,)``, ``cost_seconds`` ``(k,)`` (the first context's
        row), ``cost_contexts`` ``(m,)``, ``cost_grid`` ``(m, k)``, ``cost_key``, ``cost_device``."""
        origins = np.array(sorted(self._rows, key=self._rows.get), np.int64)
        return {"origins": origins, "hits": self._hits.copy(), "seen": self._seen.copy(),
                "start_hits": self._start[0].copy(), "start_seen": self._start[1].copy(),
                "cost_sizes": np.asarray(self.cost.sizes, np.int64),
                "cost_seconds": np.asarray(self.cost.seconds, np.float64),
                "cost_contexts": np.asarray(self.cost.contexts, np.float64),
                "cost_grid": np.asarray(self.cost.grid, np.float64), "cost_key": self.cost.key,
                "cost_device": self.cost.device}

    def load_state(self, d: dict) -> None:
        """Take over a calibration saved by :meth:`state` (same number of bins). A state saved
        before calibration was kept per origin (``hits``/``seen`` of shape ``(bins,)``, one
        calibration for all drafters) becomes the belief every origin starts from."""
        hits, seen = d.get("hits"), d.get("seen")
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in (hits, seen)):
            raise StateError("the saved tree-sizer calibration is not float64 counts.")
        if hits.ndim == 1:
            if hits.shape != (self.bins,) or seen.shape != (self.bins,):
                raise StateError(f"the saved tree-sizer calibration does not have {self.bins} bins.")
            _check_counts(hits, seen)
            self._start, self._rows = (hits.copy(), seen.copy()), {}
            self._hits, self._seen = np.zeros((0, self.bins)), np.zeros((0, self.bins))
            return
        origins, start = d.get("origins"), (d.get("start_hits"), d.get("start_seen"))
        k = hits.shape[0]
        if not (isinstance(origins, np.ndarray) and origins.shape == (k,) and origins.dtype.kind in "iu"
                and len(set(origins.tolist())) == k and hits.shape == (k, self.bins) and seen.shape == (k, self.bins)
                and all(isinstance(a, np.ndarray) and a.shape == (self.bins,) for a in start)):
            raise StateError(f"the saved tree-sizer calibration does not have {self.bins} bins per drafter origin.")
        _check_counts(hits, seen)
        _check_counts(*start)
        self._rows = {int(m): i for i, m in enumerate(origins.tolist())}
        self._hits, self._seen = hits.copy(), seen.copy()
        self._start = (start[0].astype(np.float64), start[1].astype(np.float64))


def _check_counts(hits: np.ndarray, seen: np.ndarray) -> None:
    if not (np.isfinite(hits).all() and np.isfinite(seen).all() and (seen > 0).all() and (hits >= 0).all()
            and (hits <= seen).all()):
        raise StateError("the saved tree-sizer calibration holds invalid counts.")
