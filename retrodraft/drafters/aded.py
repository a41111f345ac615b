"""ADED (arXiv 2407.12021): an adaptive tri-gram table searched with PUCT.

The table maps the last two tokens ``(t-2, t-1)`` to weighted successors (with a one-token
fallback row for pairs never seen). It adapts while decoding: every token of the prompt and of
the committed text adds weight to its tri-gram, the model's own top candidates at accepted nodes add weight scaled by
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
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..jit import njit
from ..tree import DraftTree
from ._kernels import add_node, discount, grown, init_root, to_tree, tree_buffers
from ._ngram import PAD, NgramTable, claim, context_hash, find, sort_row
from ._state import load_table_state, table_state
from .base import Drafter, Outcome, Request

__all__ = ["Aded"]


@njit
def _add(tab, s, t, amount, rule):
    """Decay row ``s`` then add ``amount`` to successor ``t`` (replacing the lightest if new);
    ``rule = (decay, cap)``: a weight saturates at ``cap``."""
    decay, cap = rule
    tok, w = tab.tok, tab.w
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


@njit
def _count_text(tab, ids, start, rule, now):
    """Count the tri-grams (and bigram fall-backs) ending at ``ids[start:]``."""
    two = np.empty(2, np.int64)
    for j in range(max(start, 1), ids.shape[0]):
        two[0] = ids[j - 2] if j >= 2 else PAD
        two[1] = ids[j - 1]
        _add(tab, claim(tab, context_hash(two, 2, 1), now), ids[j], 1.0, rule)
        if j >= 2:
            _add(tab, claim(tab, context_hash(two, 2, 2), now), ids[j], 1.0, rule)


@njit
def _learn_candidates(tab, prev, cur, top_tok, top_p, scale, rule, now):
    """Add the model's candidates after ``(prev[i], cur[i])`` with weight ``scale * p``."""
    two = np.empty(2, np.int64)
    for i in range(prev.shape[0]):
        two[0] = prev[i]
        two[1] = cur[i]
        for order in (1, 2):
            if order == 2 and prev[i] < 0:
                continue
            s = claim(tab, context_hash(two, 2, order), now)
            for r in range(top_tok.shape[1]):
                if top_tok[i, r] >= 0:
                    _add(tab, s, top_tok[i, r], scale * top_p[i, r], rule)


@njit
def _row(keys, prev, cur):
    two = np.empty(2, np.int64)
    two[0] = prev
    two[1] = cur
    if prev >= 0:
        s = find(keys, context_hash(two, 2, 2))
        if s >= 0:
            return s
    return find(keys, context_hash(two, 2, 1))


class _Search(NamedTuple):
    """The search tree of one draft (node 0 = root), allocated once and grown on demand."""

    tok: np.ndarray  # (cap,) int64 token
    prev: np.ndarray  # (cap,) int64 the token before it
    par: np.ndarray  # (cap,) int64 parent node
    dep: np.ndarray  # (cap,) int64 depth
    p: np.ndarray  # (cap,) float64 prior: the table's probability of this child
    sc: np.ndarray  # (cap,) float64 path acceptance estimate
    n: np.ndarray  # (cap,) int64 visits
    w: np.ndarray  # (cap,) float64 summed value
    c0: np.ndarray  # (cap,) int64 first child
    cn: np.ndarray  # (cap,) int64 children, -1 = not expanded yet
    path: np.ndarray  # (max_depth + 2,) int64 the current selection path


def _search_tree(cap: int, max_depth: int) -> _Search:
    i8, f8 = np.int64, np.float64
    return _Search(np.empty(cap, i8), np.empty(cap, i8), np.empty(cap, i8), np.empty(cap, i8), np.empty(cap, f8),
                   np.empty(cap, f8), np.empty(cap, i8), np.empty(cap, f8), np.empty(cap, i8), np.empty(cap, i8),
                   np.empty(max_depth + 2, i8))


@njit
def _new_node(st, i, tok, prev, par, dep, p, sc):
    st.tok[i], st.prev[i], st.par[i], st.dep[i], st.p[i], st.sc[i] = tok, prev, par, dep, p, sc
    st.n[i], st.w[i], st.c0[i], st.cn[i] = 0, 0.0, 0, -1


@njit
def _search(tab, prev, root, opts, st, buf):
    """PUCT search from ``root``; writes the ``budget`` most visited nodes, returns the count.

    ``opts = (iterations, c1, c2, rollout, max_depth, width, shrink, budget)``. Search nodes are
    allocated children-after-parent, so the selected set, sorted by index, is parents-first; a
    parent is visited at least once more than any child, so the set is connected.
    """
    iterations, c1, c2, rollout, max_depth, width, shrink, budget = opts
    keys, tok, w = tab.keys, tab.tok, tab.w
    cap_nodes = iterations * width + 1
    path = st.path
    _new_node(st, 0, root, prev, -1, 0, 1.0, 1.0)
    n_nodes = 1
    for _ in range(iterations):
        u = 0
        plen = 0
        path[plen] = u
        plen += 1
        while st.cn[u] > 0:
            total = st.n[u]
            explore = math.sqrt(total) * (c1 + math.log((total + c2 + 1.0) / c2))
            best, best_v = -1, -1e300
            for c in range(st.c0[u], st.c0[u] + st.cn[u]):
                q = st.w[c] / st.n[c] if st.n[c] > 0 else 0.0
                v = q + st.p[c] * explore / (1.0 + st.n[c])
                if v > best_v:
                    best, best_v = c, v
            u = best
            path[plen] = u
            plen += 1
        if st.cn[u] < 0:
            st.cn[u] = 0
            if st.dep[u] < max_depth:
                s = _row(keys, st.prev[u], st.tok[u])
                if s >= 0:
                    total_w = 0.0
                    for r in range(tok.shape[1]):
                        if tok[s, r] >= 0:
                            total_w += w[s, r]
                    st.c0[u] = n_nodes
                    for r in range(min(width, tok.shape[1])):
                        t = tok[s, r]
                        if t < 0 or total_w <= 0.0 or n_nodes >= cap_nodes:
                            break
                        p = w[s, r] / total_w
                        _new_node(st, n_nodes, t, st.tok[u], u, st.dep[u] + 1, p, st.sc[u] * discount(p, shrink))
                        n_nodes += 1
                        st.cn[u] += 1
        # Value: expected accepted tokens at and below u along a greedy rollout.
        value = st.sc[u]
        chain = st.sc[u]
        a, b = st.prev[u], st.tok[u]
        for _r in range(rollout):
            s = _row(keys, a, b)
            if s < 0 or tok[s, 0] < 0:
                break
            total_w = 0.0
            for r in range(tok.shape[1]):
                if tok[s, r] >= 0:
                    total_w += w[s, r]
            chain *= discount(w[s, 0] / total_w, shrink)
            value += chain
            a, b = b, tok[s, 0]
        for j in range(plen):
            st.n[path[j]] += 1
            st.w[path[j]] += value
    # The most visited nodes (ties: shallower first), then parents-first by index.
    cand = np.empty(n_nodes - 1, np.int64)
    m = 0
    for i in range(1, n_nodes):
        if st.n[i] > 0:
            cand[m] = i
            m += 1
    key = np.empty(m, np.float64)
    for j in range(m):
        key[j] = -st.n[cand[j]] * 1000.0 + st.dep[cand[j]]
    order = np.argsort(key, kind="mergesort")
    take = min(m, budget)
    chosen = np.sort(cand[order[:take]])
    where = buf.where
    where[0] = 0
    init_root(buf, root)
    for j in range(take):
        i = chosen[j]
        where[i] = j + 1
        add_node(buf, j + 1, where[st.par[i]], st.tok[i], st.sc[i])
    return take + 1


class Aded(Drafter):
    """Adaptive tri-gram drafting with a PUCT search (see the module docstring).

    Args:
        iterations: search iterations per step (each expands at most one node).
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
    top_k = 4

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
        self._seen = 0  # tokens of the current text already counted
        self._search = _search_tree(self.iterations * self.width + 1, self.max_depth)
        self._buf = tree_buffers(1)

    def _count(self, ids: np.ndarray, start: int) -> None:
        t = self.table
        t.now += 1
        _count_text(t.arrays, ids, start, (self.decay, self.cap), t.now)
        self._seen = len(ids)

    def begin(self, request: Request) -> None:
        """Count the prompt's tri-grams."""
        self._count(np.asarray(request.prompt, np.int64), 0)

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        if budget <= 0:
            return DraftTree.root_only(root)
        prev = int(context[-2]) if len(context) >= 2 else PAD
        iterations = max(self.iterations, budget)
        cap = iterations * self.width + 1
        if self._search.tok.shape[0] < cap:
            self._search = _search_tree(cap, self.max_depth)
        self._buf = grown(self._buf, max(budget + 1, cap))
        t = self.table
        opts = (iterations, self.c1, self.c2, self.rollout, self.max_depth, self.width, self.shrink, int(budget))
        m = _search(t.arrays, prev, root, opts, self._search, self._buf)
        return to_tree(self._buf, m)

    def observe(self, outcome: Outcome) -> None:
        """Teach the table the model's own top candidates after each accepted node, then count
        the committed tokens' tri-grams."""
        ctx = np.asarray(outcome.context, np.int64)
        start = self._seen if self._seen <= len(ctx) else 0
        if start < len(ctx):  # text the table has not counted yet (the prefill's token)
            self._count(ctx, start)
        if self.model_weight > 0:
            acc = np.asarray(outcome.accepted, np.int64)
            path = outcome.tree.tokens[acc].astype(np.int64)
            before = ctx[-2] if len(ctx) >= 2 else PAD
            prev = np.concatenate([[before], path[:-1]])
            top_tok, top_p = outcome.top(self.top_k)
            t = self.table
            t.now += 1
            _learn_candidates(t.arrays, prev, path, top_tok[acc], top_p[acc], self.model_weight,
                              (self.decay, self.cap), t.now)
        if len(outcome.committed):
            self._count(np.concatenate([ctx, np.asarray(outcome.committed, np.int64)]), len(ctx))

    def reset(self) -> None:
        self.table.clear()
        self._seen = 0

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """What was learnt: the tri-gram table's arrays (see :class:`~retrodraft.drafters._ngram.NgramTable`)."""
        return table_state(self.table)

    def load_state(self, d: dict) -> None:
        """Take over a table saved by :meth:`state` (same ``k`` and ``max_bytes``)."""
        load_table_state(self.table, d, self.name)
