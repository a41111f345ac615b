"""ADED (arXiv 2407.12021): an adaptive tri-gram table searched with PUCT.

The table maps the last two tokens ``(t-2, t-1)`` to weighted successors (with a one-token
fallback row for pairs never seen). It adapts while decoding: every new token of the text adds
weight to its tri-gram, the model's own top candidates at accepted nodes add weight scaled by
their probability, and each update first decays the row, so weights follow the current text
and saturate at ``cap`` instead of growing without bound.

Drafts come from a small Monte-Carlo tree search over the table rather than a fixed template:
selection by PUCT (``Q + P * sqrt(N) / (1 + n) * (c1 + log((N + c2 + 1) / c2))``), expansion
of a node's ``width`` heaviest successors, a greedy rollout of ``rollout`` steps whose value is
the expected number of accepted tokens under the table's probabilities. The search spends its
``iterations`` where the probability mass is, but the exploration term lets it also open a
second-best branch that a pure top-k template would never reach. The most visited nodes form
the draft.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ..errors import ConfigError
from ..tree import DraftTree
from ._ngram import NgramTable, claim, context_hash, find, sort_row
from ._topk import top_probs
from .base import Drafter

__all__ = ["Aded"]


@numba.njit(cache=True)
def _add(tok, w, s, t, amount, decay, cap):
    """Decay row ``s`` then add ``amount`` to successor ``t`` (replacing the lightest if new)."""
    k = tok.shape[1]
    hit = -1
    for r in range(k):
        w[s, r] *= decay
        if tok[s, r] == t:
            hit = r
    if hit < 0:
        hit = k - 1  # rows are sorted: the last is the lightest or empty
        tok[s, hit] = t
        w[s, hit] = 0.0
    w[s, hit] = min(w[s, hit] + amount, cap)
    sort_row(tok, w, s)


@numba.njit(cache=True)
def _count_text(keys, tok, w, stamp, count, ids, start, decay, cap, now):
    """Count the tri-grams (and bigram fall-backs) ending at ``ids[start:]``."""
    two = np.empty(2, np.int64)
    for j in range(max(start, 1), ids.shape[0]):
        t = ids[j]
        two[0] = ids[j - 2] if j >= 2 else -2
        two[1] = ids[j - 1]
        s = claim(keys, tok, w, stamp, count, context_hash(two, 2, 1), now)
        _add(tok, w, s, t, 1.0, decay, cap)
        if j >= 2:
            s = claim(keys, tok, w, stamp, count, context_hash(two, 2, 2), now)
            _add(tok, w, s, t, 1.0, decay, cap)


@numba.njit(cache=True)
def _learn_candidates(keys, tok, w, stamp, count, prev, cur, top_tok, top_p, scale, decay, cap, now):
    """Add the model's candidates after ``(prev[i], cur[i])`` with weight ``scale * p``."""
    two = np.empty(2, np.int64)
    for i in range(prev.shape[0]):
        two[0] = prev[i]
        two[1] = cur[i]
        for order in (1, 2):
            if order == 2 and prev[i] < 0:
                continue
            s = claim(keys, tok, w, stamp, count, context_hash(two, 2, order), now)
            for r in range(top_tok.shape[1]):
                if top_tok[i, r] >= 0:
                    _add(tok, w, s, top_tok[i, r], scale * top_p[i, r], decay, cap)


@numba.njit(cache=True)
def _row(keys, prev, cur):
    two = np.empty(2, np.int64)
    two[0] = prev
    two[1] = cur
    if prev >= 0:
        s = find(keys, context_hash(two, 2, 2))
        if s >= 0:
            return s
    return find(keys, context_hash(two, 2, 1))


@numba.njit(cache=True)
def _search(keys, tok, w, prev, root, iterations, c1, c2, rollout, max_depth, width, shrink, budget,
            out_tok, out_par, out_dep, out_sc):
    """PUCT search from ``root``; writes the ``budget`` most visited nodes, returns the count.

    Search nodes are allocated children-after-parent, so the selected set, sorted by index, is
    parents-first; a parent is visited at least once more than any child, so the set is connected.
    """
    cap_nodes = iterations * width + 1
    s_tok = np.empty(cap_nodes, np.int64)
    s_prev = np.empty(cap_nodes, np.int64)
    s_par = np.empty(cap_nodes, np.int64)
    s_dep = np.empty(cap_nodes, np.int64)
    s_p = np.empty(cap_nodes, np.float64)  # prior: the table's probability of this child
    s_sc = np.empty(cap_nodes, np.float64)  # path acceptance estimate
    s_n = np.zeros(cap_nodes, np.int64)
    s_w = np.zeros(cap_nodes, np.float64)
    s_c0 = np.zeros(cap_nodes, np.int64)
    s_cn = np.full(cap_nodes, -1, np.int64)  # -1: not expanded yet
    path = np.empty(max_depth + 2, np.int64)
    s_tok[0], s_prev[0], s_par[0], s_dep[0], s_p[0], s_sc[0] = root, prev, -1, 0, 1.0, 1.0
    n_nodes = 1
    for _ in range(iterations):
        u = 0
        plen = 0
        path[plen] = u
        plen += 1
        while s_cn[u] > 0:
            total = s_n[u]
            explore = math.sqrt(total) * (c1 + math.log((total + c2 + 1.0) / c2))
            best, best_v = -1, -1e300
            for c in range(s_c0[u], s_c0[u] + s_cn[u]):
                q = s_w[c] / s_n[c] if s_n[c] > 0 else 0.0
                v = q + s_p[c] * explore / (1.0 + s_n[c])
                if v > best_v:
                    best, best_v = c, v
            u = best
            path[plen] = u
            plen += 1
        if s_cn[u] < 0:
            s_cn[u] = 0
            if s_dep[u] < max_depth:
                s = _row(keys, s_prev[u], s_tok[u])
                if s >= 0:
                    total_w = 0.0
                    for r in range(tok.shape[1]):
                        if tok[s, r] >= 0:
                            total_w += w[s, r]
                    s_c0[u] = n_nodes
                    for r in range(min(width, tok.shape[1])):
                        t = tok[s, r]
                        if t < 0 or total_w <= 0.0 or n_nodes >= cap_nodes:
                            break
                        p = w[s, r] / total_w
                        s_tok[n_nodes], s_prev[n_nodes], s_par[n_nodes] = t, s_tok[u], u
                        s_dep[n_nodes], s_p[n_nodes] = s_dep[u] + 1, p
                        s_sc[n_nodes] = s_sc[u] * p / (1.0 + shrink * p)
                        n_nodes += 1
                        s_cn[u] += 1
        # Value: expected accepted tokens at and below u along a greedy rollout.
        value = s_sc[u]
        chain = s_sc[u]
        a, b = s_prev[u], s_tok[u]
        for _r in range(rollout):
            s = _row(keys, a, b)
            if s < 0 or tok[s, 0] < 0:
                break
            total_w = 0.0
            for r in range(tok.shape[1]):
                if tok[s, r] >= 0:
                    total_w += w[s, r]
            p = w[s, 0] / total_w
            chain *= p / (1.0 + shrink * p)
            value += chain
            a, b = b, tok[s, 0]
        for j in range(plen):
            s_n[path[j]] += 1
            s_w[path[j]] += value
    # The most visited nodes (ties: shallower first), then parents-first by index.
    cand = np.empty(n_nodes - 1, np.int64)
    m = 0
    for i in range(1, n_nodes):
        if s_n[i] > 0:
            cand[m] = i
            m += 1
    key = np.empty(m, np.float64)
    for j in range(m):
        key[j] = -s_n[cand[j]] * 1000.0 + s_dep[cand[j]]
    order = np.argsort(key, kind="mergesort")
    take = min(m, budget)
    chosen = np.sort(cand[order[:take]])
    where = np.full(n_nodes, -1, np.int64)
    where[0] = 0
    out_tok[0], out_par[0], out_dep[0], out_sc[0] = root, -1, 0, 1.0
    for j in range(take):
        i = chosen[j]
        where[i] = j + 1
        out_tok[j + 1] = s_tok[i]
        out_par[j + 1] = where[s_par[i]]
        out_dep[j + 1] = s_dep[i]
        out_sc[j + 1] = s_sc[i]
    return take + 1


class Aded(Drafter):
    """Adaptive tri-gram drafting with a PUCT search (see the module docstring).

    Args:
        iterations: search iterations per step (each expands at most one node); the search
            costs ~1 µs per iteration, far below a verification pass.
        width: successors expanded per node, 1..k.
        rollout: greedy steps valued beyond a new leaf.
        max_depth: deepest draft node.
        c1, c2: PUCT exploration constants (larger c1 explores more).
        k: successors kept per context, 1..32.
        decay: each update multiplies the row by this first (recent text weighs more).
        cap: a successor's weight saturates here.
        model_weight: weight of the model's top candidates at accepted nodes, times their
            probability (an occurrence in the text weighs 1).
        shrink: acceptance estimate ``p / (1 + shrink * p)`` of a table probability ``p``.
        max_bytes: memory cap of the table (default 32 MiB).
    """

    name = "aded"

    def __init__(self, iterations: int = 96, width: int = 4, rollout: int = 4, max_depth: int = 8,
                 c1: float = 2.0, c2: float = 8.0, k: int = 8, decay: float = 0.95, cap: float = 8.0,
                 model_weight: float = 0.5, shrink: float = 0.25, max_bytes: int = 32 * 2**20) -> None:
        ints = (("iterations", iterations, 1, 100_000), ("rollout", rollout, 0, 64), ("max_depth", max_depth, 1, 64),
                ("k", k, 1, 32), ("width", width, 1, k if isinstance(k, int) else 32))
        for label, v, lo, hi in ints:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        floats = (("c1", c1, 0.0, 1e6), ("c2", c2, 1e-6, 1e6), ("decay", decay, 1e-6, 1.0), ("cap", cap, 1e-6, 1e9),
                  ("model_weight", model_weight, 0.0, 1e6), ("shrink", shrink, 0.0, 10.0))
        for label, v, lo, hi in floats:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be a number from {lo} to {hi}, got {v!r}.")
        self.iterations, self.width, self.rollout, self.max_depth = int(iterations), int(width), int(rollout), int(max_depth)
        self.c1, self.c2, self.decay, self.cap = float(c1), float(c2), float(decay), float(cap)
        self.model_weight, self.shrink = float(model_weight), float(shrink)
        self.table = NgramTable(int(k), max_bytes)
        self._seen = 0
        self._last = np.zeros(0, np.int64)

    def begin(self, prompt: np.ndarray, vocab_size: int) -> None:
        self._seen = 0  # the prompt is counted on the first proposal

    def _catch_up(self, context: np.ndarray) -> None:
        ctx = np.asarray(context, np.int64)
        start = self._seen if self._seen <= len(ctx) else 0
        t = self.table
        t.now += 1
        _count_text(t.keys, t.tok, t.w, t.stamp, t.count, ctx, start, self.decay, self.cap, t.now)
        self._seen = len(ctx)
        self._last = ctx[-2:].copy()

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        self._catch_up(context)
        root = int(context[-1])
        if budget <= 0:
            return DraftTree.root_only(root)
        prev = int(context[-2]) if len(context) >= 2 else -2
        out_tok = np.empty(budget + 1, np.int64)
        out_par = np.empty(budget + 1, np.int32)
        out_dep = np.empty(budget + 1, np.int32)
        out_sc = np.empty(budget + 1, np.float32)
        t = self.table
        m = _search(t.keys, t.tok, t.w, prev, root, max(self.iterations, budget), self.c1, self.c2, self.rollout,
                    self.max_depth, self.width, self.shrink, int(budget), out_tok, out_par, out_dep, out_sc)
        return DraftTree(out_tok[:m], out_par[:m], out_dep[:m], out_sc[:m])

    def observe(self, tree: DraftTree, accepted: np.ndarray, logits: torch.Tensor) -> None:
        """Teach the table the model's own top candidates after each accepted node."""
        if self.model_weight <= 0:
            return
        acc = np.asarray(accepted, np.int64)
        path = tree.tokens[acc].astype(np.int64)
        before = self._last[0] if len(self._last) == 2 else -2
        prev = np.concatenate([[before], path[:-1]])
        top_tok, top_p = top_probs(logits, 4)
        t = self.table
        t.now += 1
        _learn_candidates(t.keys, t.tok, t.w, t.stamp, t.count, prev, path, top_tok[acc], top_p[acc],
                          self.model_weight, self.decay, self.cap, t.now)

    def reset(self) -> None:
        self.table.clear()
        self._seen = 0
        self._last = np.zeros(0, np.int64)
