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

from typing import Sequence

import numba
import numpy as np
import torch

from ..errors import ConfigError
from ..tree import DraftTree
from ._template import compile_template, template_paths
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
def _draft(keys, tok, w, tail, n_min, budget, width, shrink, gumbel, inv_temp,
           out_tok, out_par, out_dep, out_sc, prop_order, prop_supp, prop_q):
    """Best-first tree of up to ``budget`` nodes below the root; returns the node count.

    Each node offers ``width`` children from the longest matching context, the candidate with
    the highest path score is added next. Greedy (``gumbel`` is None): the row's most likely
    tokens. Sampling: Gumbel-top-k over ``log q``, ``q`` the row at temperature ``1 / inv_temp``,
    i.e. ``width`` draws without replacement from ``q``, recorded per expanded node in
    ``prop_order`` (draw order, -1 padded), ``prop_supp`` / ``prop_q`` (the distribution).
    A draw's score depends on its rank, not on the token drawn (see the comment below), and
    never increases along a draw sequence, so a budget cut keeps a prefix of it.
    Shapes: tail ``(N,)``, out_* ``(budget + 1,)``, gumbel / prop_supp / prop_q
    ``(budget + 1, k)``, prop_order ``(budget + 1, width)``.
    """
    big_n = tail.shape[0]
    k = tok.shape[1]
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
    key = np.empty(k, np.float64)
    q = np.empty(k, np.float64)
    taken = np.zeros(k, np.bool_)
    nc = 0
    m = 1
    expand = 0
    while True:
        s = _lookup(keys, hist[expand], n_min)
        if s >= 0:
            if gumbel is None:
                for r in range(min(width, k)):
                    t = tok[s, r]
                    if t < 0:
                        break
                    p = w[s, r]
                    c_par[nc] = expand
                    c_tok[nc] = t
                    c_sc[nc] = out_sc[expand] * (p / (1.0 + shrink * p))
                    nc += 1
            else:
                top = -1e300
                for r in range(k):
                    if tok[s, r] >= 0 and w[s, r] > 0:
                        key[r] = np.log(w[s, r]) * inv_temp
                        top = max(top, key[r])
                total = 0.0
                for r in range(k):
                    q[r] = np.exp(key[r] - top) if tok[s, r] >= 0 and w[s, r] > 0 else 0.0
                    total += q[r]
                for r in range(k):
                    q[r] /= total
                    prop_supp[expand, r] = tok[s, r]
                    prop_q[expand, r] = q[r]
                    key[r] = key[r] + gumbel[expand, r] if q[r] > 0 else -1e300
                    taken[r] = False
                for j in range(min(width, k)):
                    best = -1
                    for r in range(k):
                        if q[r] > 0 and not taken[r] and (best < 0 or key[r] > key[best]):
                            best = r
                    if best < 0:
                        break
                    taken[best] = True
                    prop_order[expand, j] = tok[s, best]
                    # The j-th draw is scored by the j-th largest q (the row is sorted), never by
                    # what was drawn: whether a draw makes it into the tree must not depend on its
                    # value, or the verifier's rejection chain would see a biased sample.
                    c_par[nc] = expand
                    c_tok[nc] = tok[s, best]
                    c_sc[nc] = out_sc[expand] * (q[j] / (1.0 + shrink * q[j]))
                    nc += 1
        if m > budget:
            break
        best = -1
        for c in range(nc):
            if not c_used[c] and (best < 0 or c_sc[c] > c_sc[best]):
                best = c
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


@numba.njit(cache=True)
def _fill_template(keys, tok, w, tail, n_min, tpl_parent, tpl_rank, shrink, out_tok, out_par, out_dep, out_sc, where):
    """Fill a rank-path template (see ``_template``) from the longest known contexts.

    Template node ``j`` becomes candidate ``tpl_rank[j]`` of its parent's row; ``where[j]`` is
    its output index, or -1 when the row is unknown or shorter. Returns the node count.
    Shapes: tpl_* / where / out_* ``(T,)``, tail ``(N,)``.
    """
    big_n = tail.shape[0]
    n_tpl = tpl_parent.shape[0]
    hist = np.empty((n_tpl, big_n), np.int64)
    slot = np.full(n_tpl, -2, np.int64)  # -2: not looked up yet
    hist[0] = tail
    out_tok[0] = tail[big_n - 1]
    out_par[0] = -1
    out_dep[0] = 0
    out_sc[0] = 1.0
    where[0] = 0
    m = 1
    for j in range(1, n_tpl):
        where[j] = -1
        pj = where[tpl_parent[j]]
        if pj < 0:
            continue
        if slot[pj] == -2:
            slot[pj] = _lookup(keys, hist[pj], n_min)
        s = slot[pj]
        r = tpl_rank[j]
        if s < 0 or r >= tok.shape[1] or tok[s, r] < 0:
            continue
        t = tok[s, r]
        p = w[s, r]
        where[j] = m
        out_tok[m] = t
        out_par[m] = pj
        out_dep[m] = out_dep[pj] + 1
        out_sc[m] = out_sc[pj] * (p / (1.0 + shrink * p))
        for z in range(big_n - 1):
            hist[m, z] = hist[pj, z + 1]
        hist[m, big_n - 1] = t
        m += 1
    return m


class Stand(Drafter):
    """Drafts from n-gram contexts (orders ``min_order..max_order``) that store distributions.

    Args:
        max_order: longest context ``N`` (tokens), 1..16. Longer contexts predict better once
            seen but are seen less often; the drafter falls back to shorter ones.
        min_order: shortest context used, 1..max_order.
        k: candidates stored per context, 1..32.
        width: children offered per node while drafting, 1..k (default min(4, k)).
        shrink: acceptance estimate ``p / (1 + shrink * p)`` of a stored probability ``p``
            (it was measured in another context, so it is discounted as in ``recycling``).
        max_count: the averaging weight ``c`` saturates here, so recent text still moves a row.
        max_bytes: memory cap of the table (default 64 MiB); see
            :class:`~retrodraft.drafters._ngram.NgramTable`.
        template: a fixed tree shape to fill (rank paths); default: grow best-first.
        seed: seeds the Gumbel noise of stochastic drafting (its own generator: the model's
            sampling randomness is left untouched).

    When decoding greedily the children are each context's most likely tokens; when sampling
    they are drawn without replacement from the stored distribution at the sampling
    temperature (Gumbel-top-k), and the verifier accepts them by rejection sampling.
    """

    name = "stand"

    def __init__(self, max_order: int = 4, min_order: int = 1, k: int = 8, width: int | None = None, shrink: float = 0.25,
                 max_count: float = 16.0, max_bytes: int = 64 * 2**20, seed: int | None = None,
                 template: Sequence[Sequence[int]] | None = None) -> None:
        for label, v, lo, hi in (("max_order", max_order, 1, 16), ("k", k, 1, 32)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        if isinstance(min_order, bool) or not isinstance(min_order, (int, np.integer)) or not 1 <= min_order <= max_order:
            raise ConfigError(f"min_order must be an integer from 1 to max_order={max_order}, got {min_order!r}.")
        width = min(4, k) if width is None else width
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= k:
            raise ConfigError(f"width must be an integer from 1 to k={k}, got {width!r}.")
        if not isinstance(shrink, (int, float)) or isinstance(shrink, bool) or not 0 <= shrink <= 10:
            raise ConfigError(f"shrink must be a number from 0 to 10, got {shrink!r}.")
        if not isinstance(max_count, (int, float)) or isinstance(max_count, bool) or max_count < 1:
            raise ConfigError(f"max_count must be a number >= 1, got {max_count!r}.")
        self.max_order, self.min_order, self.width = int(max_order), int(min_order), int(width)
        self.shrink, self.max_count = float(shrink), float(max_count)
        self.table = NgramTable(int(k), max_bytes)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.template: list[tuple[int, ...]] | None = None
        self.record = False
        self.use_template(template)

    def use_template(self, template: Sequence[Sequence[int]] | None) -> None:
        """Draft by filling this tree shape (rank paths, e.g. a calibrated
        :class:`~retrodraft.shape.TreeShape`) instead of growing the tree best-first.

        ``None`` goes back to best-first. A template draft is deterministic even when sampling.
        """
        if template is None:
            self.template = None
            return
        self.template = template_paths(template, self.table.k)
        self._tpl_parent, self._tpl_rank = compile_template(self.template, self.table.k)
        self.position_hits = np.zeros(len(self._tpl_parent), np.int64)
        self.position_steps = 0
        self._last = None

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
        if self.template is not None:
            return self._propose_template(budget)
        n = budget + 1
        out_tok = np.empty(n, np.int64)
        out_par = np.empty(n, np.int32)
        out_dep = np.empty(n, np.int32)
        out_sc = np.empty(n, np.float32)
        temp = self.sampling_temperature
        gumbel = None
        prop_order = np.full((n, self.width), -1, np.int64)
        prop_supp = np.full((n, t.k), -1, np.int64)
        prop_q = np.zeros((n, t.k), np.float32)
        if temp is not None:
            gumbel = self._rng.gumbel(size=(n, t.k))
        m = _draft(t.keys, t.tok, t.w, self._last_tail, self.min_order, int(budget), self.width, self.shrink,
                   gumbel, 1.0 / max(temp or 1.0, 1e-3), out_tok, out_par, out_dep, out_sc, prop_order, prop_supp,
                   prop_q)
        proposals = {}
        if temp is not None:
            for i in range(m):
                drawn = prop_order[i][prop_order[i] >= 0]
                if drawn.size:
                    keep = prop_supp[i] >= 0
                    proposals[i] = (drawn, prop_supp[i][keep], prop_q[i][keep])
        return DraftTree(out_tok[:m], out_par[:m], out_dep[:m], out_sc[:m], proposals)

    def _propose_template(self, budget: int) -> DraftTree:
        t = self.table
        n = len(self._tpl_parent)
        out_tok = np.empty(n, np.int64)
        out_par = np.empty(n, np.int32)
        out_dep = np.empty(n, np.int32)
        out_sc = np.empty(n, np.float32)
        where = np.empty(n, np.int64)
        m = _fill_template(t.keys, t.tok, t.w, self._last_tail, self.min_order, self._tpl_parent, self._tpl_rank,
                           self.shrink, out_tok, out_par, out_dep, out_sc, where)
        tree = DraftTree(out_tok[:m], out_par[:m], out_dep[:m], out_sc[:m])
        if self.record:
            position = np.empty(m, np.int64)
            hit = where >= 0
            position[where[hit]] = np.flatnonzero(hit)
            self._last = (tree, position)
        return tree.prune(budget)

    def observe(self, tree: DraftTree, accepted: np.ndarray, logits: torch.Tensor) -> None:
        """Merge every verified node's top-k distribution into its contexts' rows.

        The accepted path is merged last, so if the table must evict, the real text's rows are
        the freshest.
        """
        if self.record and self._last is not None:
            mine, position = self._last
            self._last = None
            if len(mine) == len(tree) and np.array_equal(mine.tokens, tree.tokens):  # verified unchanged
                self.position_steps += 1
                self.position_hits[position[np.asarray(accepted)]] += 1
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
        self._rng = np.random.default_rng(self.seed)
