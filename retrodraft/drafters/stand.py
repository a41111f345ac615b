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

from typing import NamedTuple, Sequence

import numpy as np

from ..errors import ConfigError
from ..jit import njit
from ..tree import DraftTree
from ._kernels import add_node, discount, fill_template, grown, init_root, shift_in, sort_desc, to_tree, tree_buffers
from ._ngram import PAD, NgramTable, claim, context_hash, longest_row
from ._state import load_table_state, table_state
from ._template import compile_template, template_paths
from .base import Drafter, Outcome, Request

__all__ = ["Stand"]


@njit
def _histories(tail, tokens, parents):
    """``(n, N)`` last ``N`` tokens ending at each node (``tail``: the ``N`` ending at the root)."""
    hist = np.empty((tokens.shape[0], tail.shape[0]), np.int64)
    hist[0] = tail
    for i in range(1, tokens.shape[0]):
        shift_in(hist, i, parents[i], tokens[i])
    return hist


@njit
def _merge_rows(tab, hist, nodes, top_tok, top_p, n_min, max_count, now):
    """Average each node's top-k distribution into its rows of order ``n_min..N``: the old row
    weighs ``c / (c + 1)``, the new one ``1 / (c + 1)``, ``c`` the row's count (capped).

    Shapes: hist ``(n, N)``, nodes ``(m,)`` (indices into hist / top_*), top_* ``(n, k)``.
    """
    tok, w, count = tab.tok, tab.w, tab.count
    k = tok.shape[1]
    big_n = hist.shape[1]
    ut = np.empty(k + top_tok.shape[1], np.int32)
    uw = np.empty(k + top_tok.shape[1], np.float32)
    for j in range(nodes.shape[0]):
        i = nodes[j]
        for order in range(n_min, big_n + 1):
            if hist[i, big_n - order] == PAD:
                break
            s = claim(tab, context_hash(hist[i], big_n, order), now)
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
            sort_desc(ut, uw, m)
            for r in range(k):
                if r < m:
                    tok[s, r] = ut[r]
                    w[s, r] = uw[r]
                else:
                    tok[s, r] = -1
                    w[s, r] = 0.0
            count[s] = min(c + 1.0, max_count)


class _Scratch(NamedTuple):
    """Working arrays of a best-first draft of up to ``n - 1`` nodes, allocated once."""

    hist: np.ndarray  # (n, N) int64: the last N tokens ending at each node
    c_par: np.ndarray  # (n * width,) int64: candidate children (parent, token, score, taken)
    c_tok: np.ndarray
    c_sc: np.ndarray
    c_used: np.ndarray
    key: np.ndarray  # (k,) float64 Gumbel keys / log q of one row
    q: np.ndarray  # (k,) float64
    taken: np.ndarray  # (k,) bool
    prop_order: np.ndarray  # (n, width) int64: draws per expanded node, in order, -1 padded
    prop_supp: np.ndarray  # (n, k) int64 / float32: the distribution they were drawn from
    prop_q: np.ndarray


def _scratch(n: int, big_n: int, k: int, width: int) -> _Scratch:
    return _Scratch(np.empty((n, big_n), np.int64), np.empty(n * width, np.int64), np.empty(n * width, np.int64),
                    np.empty(n * width, np.float32), np.empty(n * width, np.bool_), np.empty(k, np.float64),
                    np.empty(k, np.float64), np.empty(k, np.bool_), np.full((n, width), -1, np.int64),
                    np.full((n, k), -1, np.int64), np.zeros((n, k), np.float32))


@njit
def _draft(tab, tail, opts, gumbel, inv_temp, buf, sc):
    """Best-first tree of up to ``budget`` nodes below the root; returns the node count.

    ``opts = (n_min, budget, width, shrink)``. Each node offers ``width`` children from the
    longest matching context; the candidate with the highest path score is added next. Greedy
    (``gumbel`` is None): the row's most likely tokens. Sampling: Gumbel-top-k over ``log q``,
    ``q`` the row at temperature ``1 / inv_temp``, i.e. ``width`` draws without replacement
    from ``q``, recorded per expanded node in ``sc.prop_order`` (draw order, -1 padded) and
    ``sc.prop_supp`` / ``sc.prop_q`` (the distribution). A draw's score depends on its rank, not
    on the token drawn (see the comment below), and never increases along a draw sequence, so a
    budget cut keeps a prefix of it.
    Shapes: tail ``(N,)``, buf / sc ``>= budget + 1`` nodes, gumbel ``(budget + 1, k)``.
    """
    n_min, budget, width, shrink = opts
    tok, w = tab.tok, tab.w
    k = tok.shape[1]
    hist, c_par, c_tok, c_sc, c_used = sc.hist, sc.c_par, sc.c_tok, sc.c_sc, sc.c_used
    key, q, taken = sc.key, sc.q, sc.taken
    hist[0] = tail
    init_root(buf, tail[tail.shape[0] - 1])
    nc = 0
    m = 1
    expand = 0
    while True:
        s = longest_row((tab.keys, n_min), hist[expand])
        if s >= 0:
            if gumbel is None:
                for r in range(min(width, k)):
                    t = tok[s, r]
                    if t < 0:
                        break
                    c_par[nc] = expand
                    c_tok[nc] = t
                    c_sc[nc] = buf.scores[expand] * discount(w[s, r], shrink)
                    c_used[nc] = False
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
                    sc.prop_supp[expand, r] = tok[s, r]
                    sc.prop_q[expand, r] = q[r]
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
                    sc.prop_order[expand, j] = tok[s, best]
                    # The j-th draw is scored by the j-th largest q (the row is sorted), never by
                    # what was drawn: whether a draw makes it into the tree must not depend on its
                    # value, or the verifier's rejection chain would see a biased sample.
                    c_par[nc] = expand
                    c_tok[nc] = tok[s, best]
                    c_sc[nc] = buf.scores[expand] * discount(q[j], shrink)
                    c_used[nc] = False
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
        add_node(buf, m, c_par[best], c_tok[best], c_sc[best])
        shift_in(hist, m, c_par[best], c_tok[best])
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
        width: children offered per node while drafting, 1..k (default min(4, k)).
        shrink: acceptance estimate ``p / (1 + shrink * p)`` of a stored probability ``p``
            (it was measured in another context, so it is discounted as in ``recycling``).
        max_count: the averaging weight ``c`` saturates here, so recent text still moves a row.
        max_bytes: memory cap of the table (default 64 MiB); see
            :class:`~retrodraft.drafters._ngram.NgramTable`.
        shape: a fixed tree shape to fill (rank paths); default: grow best-first.
        seed: seeds the Gumbel noise of stochastic drafting (its own generator: the model's
            sampling randomness is left untouched).

    When decoding greedily the children are each context's most likely tokens; when sampling
    (``Request.temperature`` set) they are drawn without replacement from the stored
    distribution at the sampling temperature (Gumbel-top-k), and the verifier accepts them by
    rejection sampling.
    """

    name = "stand"
    fills_shape = True

    def __init__(self, max_order: int = 4, min_order: int = 1, k: int = 8, width: int | None = None, shrink: float = 0.25,
                 max_count: float = 16.0, max_bytes: int = 64 * 2**20, seed: int | None = None,
                 shape: Sequence[Sequence[int]] | None = None) -> None:
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
        self.top_k = self.table.k
        self.seed = seed
        self.temperature: float | None = None
        self._rng = np.random.default_rng(seed)
        self._buf = tree_buffers(1)
        self._scratch = _scratch(1, self.max_order, self.table.k, self.width)
        self.shape: list[tuple[int, ...]] | None = None
        self.use_shape(shape)

    def use_shape(self, paths: Sequence[Sequence[int]] | None) -> None:
        """Draft by filling this tree shape (rank paths, e.g. a calibrated
        :class:`~retrodraft.shape.TreeShape`'s ``paths``) instead of growing the tree best-first.

        ``None`` goes back to best-first. A shape draft is deterministic even when sampling.
        """
        if paths is None:
            self.shape = None
            return
        self.shape = template_paths(paths, self.table.k)
        self._tpl_parent, self._tpl_rank = compile_template(self.shape, self.table.k)
        n = len(self._tpl_parent)
        self._tpl_buf = tree_buffers(n)
        self._tpl_hist = np.empty((n, self.max_order), np.int64)

    def _tail(self, context: np.ndarray) -> np.ndarray:
        tail = np.full(self.max_order, PAD, np.int64)
        c = np.asarray(context[-self.max_order :], np.int64)
        tail[self.max_order - len(c) :] = c
        return tail

    def begin(self, request: Request) -> None:
        self.temperature = request.temperature

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        if budget <= 0:
            return DraftTree.root_only(root)
        if self.shape is not None:
            return self.shape_draft(context)[0].prune(budget)
        t = self.table
        n = budget + 1
        self._buf = grown(self._buf, n)
        if self._scratch.hist.shape[0] < n:
            self._scratch = _scratch(max(n, 2 * self._scratch.hist.shape[0]), self.max_order, t.k, self.width)
        sc = self._scratch
        temp = self.temperature
        gumbel = None
        if temp is not None:
            gumbel = self._rng.gumbel(size=(n, t.k))
            sc.prop_order[:n] = -1
            sc.prop_supp[:n] = -1
            sc.prop_q[:n] = 0.0
        m = _draft(t.arrays, self._tail(context), (self.min_order, int(budget), self.width, self.shrink), gumbel,
                   1.0 / max(temp or 1.0, 1e-3), self._buf, sc)
        proposals = {}
        if temp is not None:
            for i in range(m):
                drawn = sc.prop_order[i][sc.prop_order[i] >= 0]
                if drawn.size:
                    keep = sc.prop_supp[i] >= 0
                    proposals[i] = (drawn.copy(), sc.prop_supp[i][keep].copy(), sc.prop_q[i][keep].copy())
        return to_tree(self._buf, m, proposals)

    def shape_draft(self, context: np.ndarray) -> tuple[DraftTree, np.ndarray]:
        """The whole shape filled after ``context`` (not pruned), and for each of its nodes
        the shape position it fills (``(m,)`` int64, root = 0). Needs :meth:`use_shape`."""
        t = self.table
        buf = self._tpl_buf
        m = fill_template(longest_row, (t.keys, self.min_order), (t.tok, t.w), self._tail(context),
                          (self._tpl_parent, self._tpl_rank), self.shrink, self._tpl_hist, buf)
        position = np.empty(m, np.int64)
        hit = buf.where >= 0
        position[buf.where[hit]] = np.flatnonzero(hit)
        return to_tree(buf, m), position

    def observe(self, outcome: Outcome) -> None:
        """Merge every verified node's top-k distribution into its contexts' rows.

        The accepted path is merged last, so if the table must evict, the real text's rows are
        the freshest.
        """
        tree = outcome.tree
        hist = _histories(self._tail(outcome.context), tree.tokens.astype(np.int64), tree.parents.astype(np.int64))
        top_tok, top_p = outcome.top(self.table.k)
        accepted = np.asarray(outcome.accepted, np.int64)
        rejected = np.ones(len(tree), dtype=bool)
        rejected[accepted] = False
        nodes = np.concatenate([np.flatnonzero(rejected), accepted])
        t = self.table
        t.now += 1
        _merge_rows(t.arrays, hist, nodes, top_tok, top_p, self.min_order, self.max_count, t.now)

    def reset(self) -> None:
        self.table.clear()
        self._rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """What was learnt: the n-gram table's arrays (see :class:`~retrodraft.drafters._ngram.NgramTable`)."""
        return table_state(self.table)

    def load_state(self, d: dict) -> None:
        """Take over a table saved by :meth:`state` (same ``k`` and ``max_bytes``)."""
        load_table_state(self.table, d, self.name)
