"""STAND (arXiv 2506.04708): n-grams that remember the model's next-token *distributions*.

Token Recycling keys its memory on one token; STAND keys it on the last 1..N tokens and keeps,
for each context, the top-k of the model's own next-token distribution, averaged over every
time the context was verified (an old row weighs ``c / (c + 1)``, the new one ``1 / (c + 1)``,
``c`` capped so the table keeps following the text). Drafting walks the tree best-first: each
node's children come from the longest context the table knows, scored by path probability.

Every verified node teaches the table, accepted or not: its logits are the model's real
prediction after that node's path, whether or not the path was kept.

Example (N = 2): after verifying ``... a b`` with the model predicting ``c`` (0.7) and ``d`` (0.2),
rows ``(b,)`` and ``(a, b)`` hold ``[c: 0.7, d: 0.2]``; a later context ending in ``a b`` drafts
``c`` then ``d`` as children of ``b``, each continued from row ``(b, c)`` / ``(c,)`` and so on.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..errors import ConfigError
from ..tree import DraftTree
from ._ngram import NgramTable, claim, context_hash, find
from ._topk import top_probs
from .base import Drafter

__all__ = ["Stand"]

PAD = -2  # history slots before the start of the text


@numba.njit(cache=True)
def _histories(tail, tokens, parents):
    """``(n, N)`` last ``N`` tokens ending at each node (``tail``: the ``N`` ending at the root)."""
    n, big_n = tokens.shape[0], tail.shape[0]
    hist = np.empty((n, big_n), np.int64)
    hist[0] = tail
    for i in range(1, n):
        p = parents[i]
        for j in range(big_n - 1):
            hist[i, j] = hist[p, j + 1]
        hist[i, big_n - 1] = tokens[i]
    return hist


@numba.njit(cache=True)
def _merge_rows(keys, tok, w, stamp, count, hist, nodes, top_tok, top_p, n_min, max_count, now):
    """Average each node's top-k distribution into its rows of order ``n_min..N``.

    Shapes: hist ``(n, N)``, nodes ``(m,)`` (indices into hist / top_*), top_* ``(n, k)``.
    """
    k = tok.shape[1]
    big_n = hist.shape[1]
    ut = np.empty(2 * k, np.int32)
    uw = np.empty(2 * k, np.float32)
    for j in range(nodes.shape[0]):
        i = nodes[j]
        for order in range(n_min, big_n + 1):
            if hist[i, big_n - order] == PAD:
                break
            s = claim(keys, tok, w, stamp, count, context_hash(hist[i], big_n, order), now)
            c = count[s]
            a = c / (c + 1.0)
            b = 1.0 / (c + 1.0)
            m = 0
            for r in range(k):
                if tok[s, r] >= 0:
                    ut[m] = tok[s, r]
                    uw[m] = a * w[s, r]
                    m += 1
            for r in range(top_tok.shape[1]):
                t = top_tok[i, r]
                if t < 0:
                    continue
                found = False
                for q in range(m):
                    if ut[q] == t:
                        uw[q] += b * top_p[i, r]
                        found = True
                        break
                if not found:
                    ut[m] = t
                    uw[m] = b * top_p[i, r]
                    m += 1
            for q in range(1, m):  # descending by weight
                t, x = ut[q], uw[q]
                z = q - 1
                while z >= 0 and uw[z] < x:
                    ut[z + 1] = ut[z]
                    uw[z + 1] = uw[z]
                    z -= 1
                ut[z + 1] = t
                uw[z + 1] = x
            for r in range(k):
                if r < m:
                    tok[s, r] = ut[r]
                    w[s, r] = uw[r]
                else:
                    tok[s, r] = -1
                    w[s, r] = 0.0
            count[s] = min(c + 1.0, max_count)


@numba.njit(cache=True)
def _lookup(keys, hist_row, n_min):
    """Slot of the longest known context ending ``hist_row`` (order >= n_min), or -1."""
    big_n = hist_row.shape[0]
    for order in range(big_n, n_min - 1, -1):
        if hist_row[big_n - order] == PAD:
            continue
        s = find(keys, context_hash(hist_row, big_n, order))
        if s >= 0:
            return s
    return -1


@numba.njit(cache=True)
def _draft(keys, tok, w, tail, n_min, budget, width, shrink, out_tok, out_par, out_dep, out_sc):
    """Best-first tree of up to ``budget`` nodes below the root; returns the node count.

    Each node offers its ``width`` most likely children from the longest matching context;
    the candidate with the highest path score is added next. Shapes: tail ``(N,)``,
    out_* ``(budget + 1,)``.
    """
    big_n = tail.shape[0]
    hist = np.empty((budget + 1, big_n), np.int64)
    hist[0] = tail
    out_tok[0] = tail[big_n - 1]
    out_par[0] = -1
    out_dep[0] = 0
    out_sc[0] = 1.0
    cap = (budget + 1) * width
    c_par = np.empty(cap, np.int64)
    c_tok = np.empty(cap, np.int64)
    c_sc = np.empty(cap, np.float32)
    c_used = np.zeros(cap, np.bool_)
    nc = 0
    m = 1
    expand = 0
    while True:
        s = _lookup(keys, hist[expand], n_min)
        if s >= 0:
            for r in range(min(width, tok.shape[1])):
                t = tok[s, r]
                if t < 0:
                    break
                p = w[s, r]
                c_par[nc] = expand
                c_tok[nc] = t
                c_sc[nc] = out_sc[expand] * (p / (1.0 + shrink * p))
                nc += 1
        if m > budget:
            break
        best = -1
        for q in range(nc):
            if not c_used[q] and (best < 0 or c_sc[q] > c_sc[best]):
                best = q
        if best < 0:
            break
        c_used[best] = True
        par = c_par[best]
        out_tok[m] = c_tok[best]
        out_par[m] = par
        out_dep[m] = out_dep[par] + 1
        out_sc[m] = c_sc[best]
        for j in range(big_n - 1):
            hist[m, j] = hist[par, j + 1]
        hist[m, big_n - 1] = c_tok[best]
        expand = m
        m += 1
    return m


class Stand(Drafter):
    """Drafts from n-gram contexts (orders ``min_order..max_order``) that store distributions.

    Args:
        max_order: longest context ``N`` (tokens), 1..16. Longer contexts predict better once
            seen but are seen less often; the drafter falls back to shorter ones.
        min_order: shortest context used, 1..max_order.
        k: candidates stored per context, 1..32.
        width: children offered per node while drafting, 1..k.
        shrink: acceptance estimate ``p / (1 + shrink * p)`` of a stored probability ``p``
            (it was measured in another context, so it is discounted as in ``recycling``).
        max_count: the averaging weight ``c`` saturates here, so recent text still moves a row.
        max_bytes: memory cap of the table (default 64 MiB); see
            :class:`~retrodraft.drafters._ngram.NgramTable`.
    """

    name = "stand"

    def __init__(self, max_order: int = 4, min_order: int = 1, k: int = 8, width: int = 4, shrink: float = 0.25,
                 max_count: float = 16.0, max_bytes: int = 64 * 2**20) -> None:
        for label, v, lo, hi in (("max_order", max_order, 1, 16), ("k", k, 1, 32)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        if isinstance(min_order, bool) or not isinstance(min_order, (int, np.integer)) or not 1 <= min_order <= max_order:
            raise ConfigError(f"min_order must be an integer from 1 to max_order={max_order}, got {min_order!r}.")
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= k:
            raise ConfigError(f"width must be an integer from 1 to k={k}, got {width!r}.")
        if not isinstance(shrink, (int, float)) or isinstance(shrink, bool) or not 0 <= shrink <= 10:
            raise ConfigError(f"shrink must be a number from 0 to 10, got {shrink!r}.")
        if not isinstance(max_count, (int, float)) or isinstance(max_count, bool) or max_count < 1:
            raise ConfigError(f"max_count must be a number >= 1, got {max_count!r}.")
        self.max_order, self.min_order, self.width = int(max_order), int(min_order), int(width)
        self.shrink, self.max_count = float(shrink), float(max_count)
        self.table = NgramTable(int(k), max_bytes)

    def _tail(self, context: np.ndarray) -> np.ndarray:
        tail = np.full(self.max_order, PAD, np.int64)
        c = np.asarray(context[-self.max_order :], np.int64)
        tail[self.max_order - len(c) :] = c
        return tail

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        self._last_tail = self._tail(context)
        if budget <= 0:
            return DraftTree.root_only(root)
        t = self.table
        out_tok = np.empty(budget + 1, np.int64)
        out_par = np.empty(budget + 1, np.int32)
        out_dep = np.empty(budget + 1, np.int32)
        out_sc = np.empty(budget + 1, np.float32)
        m = _draft(t.keys, t.tok, t.w, self._last_tail, self.min_order, int(budget), self.width, self.shrink,
                   out_tok, out_par, out_dep, out_sc)
        return DraftTree(out_tok[:m], out_par[:m], out_dep[:m], out_sc[:m])

    def observe(self, tree: DraftTree, accepted: np.ndarray, logits: torch.Tensor) -> None:
        """Merge every verified node's top-k distribution into its contexts' rows.

        The accepted path is merged last, so if the table must evict, the real text's rows are
        the freshest.
        """
        tail = getattr(self, "_last_tail", None)
        if tail is None or tail[-1] != tree.tokens[0]:
            tail = self._tail(tree.tokens[:1])
        hist = _histories(tail, tree.tokens.astype(np.int64), tree.parents.astype(np.int64))
        top_tok, top_p = top_probs(logits, self.table.k)
        rejected = np.ones(len(tree), dtype=bool)
        rejected[accepted] = False
        nodes = np.concatenate([np.flatnonzero(rejected), np.asarray(accepted, dtype=np.int64)])
        t = self.table
        t.now += 1
        _merge_rows(t.keys, t.tok, t.w, t.stamp, t.count, hist, nodes, top_tok, top_p, self.min_order,
                    self.max_count, t.now)

    def reset(self) -> None:
        self.table.clear()
        self._last_tail = None
