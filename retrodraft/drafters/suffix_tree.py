"""The suffix-tree drafting policy: what followed the context's longest earlier match, as a trie.

SuffixDecoding's idea (arXiv 2411.04975) over a :class:`~retrodraft.automaton.SuffixAutomaton`: the
longest suffix of the context seen before (up to ``max_match`` tokens) is matched; the states
below it are the tokens that followed, each with how often. The trie is grown best-first: a
child's score is its parent's, times the chance that a context agreeing on ``L + d`` tokens keeps
agreeing (``conf[L + d]``, ``L`` the match length, ``d`` the parent's depth), times its share of
the parent's continuations (the ``max_fanout`` most frequent of the first ``max_scan`` listed).
Nodes are taken highest score first until ``budget`` nodes, a depth of
``clip(ceil(alpha * L), min_depth, max_depth)`` (SuffixDecoding's adaptive speculation length: a
long unique match drafts a deep chain) or a score under ``min_score``.

Example (conf = 0.5 everywhere, budget 3)::

    stored: [5, 6, 7, 8] and [1, 6, 7, 9]; context [4, 6, 7]: [6, 7] matched (L = 2)
    children of the match: 8 (1 of 2), 9 (1 of 2)       scores 0.5 * 1/2 = 0.25 each
    below 8: nothing (its sequence ended) ; below 9: nothing
    tree: 7 -> 8 (0.25)
            -> 9 (0.25)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..automaton import SuffixAutomaton
from ..jit import njit
from ..tree import DraftTree
from ._kernels import add_node, grown, heap_pop, heap_push, init_root, keep_top, to_tree, tree_buffers

__all__ = ["SuffixTree"]


class _Scratch(NamedTuple):
    """Work arrays of one expansion, for ``n`` nodes and ``f`` children kept per node."""

    c_sc: np.ndarray  # (c,) float64 candidate score, c = (n + 1) * f + 1
    c_par: np.ndarray  # (c,) int64 candidate's parent node
    c_state: np.ndarray  # (c,) int64 candidate's automaton state
    c_tok: np.ndarray  # (c,) int64 candidate's token
    h_sc: np.ndarray  # (c,) float64 heap of candidates: score
    h_id: np.ndarray  # (c,) int64 heap: candidate index
    n_sc: np.ndarray  # (n + 1,) float64 node score (exact, before the float32 of the tree)
    n_state: np.ndarray  # (n + 1,) int64 node's automaton state
    k_cnt: np.ndarray  # (f,) int64 counts of the children kept at one node, descending
    k_edge: np.ndarray  # (f,) int64 their edges


def _scratch(nodes: int, fanout: int) -> _Scratch:
    c = (nodes + 1) * fanout + 1
    return _Scratch(np.empty(c, np.float64), np.empty(c, np.int64), np.empty(c, np.int64), np.empty(c, np.int64),
                    np.empty(c, np.float64), np.empty(c, np.int64), np.empty(nodes + 1, np.float64),
                    np.empty(nodes + 1, np.int64), np.empty(fanout, np.int64), np.empty(fanout, np.int64))


@njit
def _expand(a, root, v0, length, conf, lim, s, buf):
    """Best-first continuation trie below state ``v0`` (``length`` tokens matched) into ``buf``
    with ``root`` at node 0; returns its size. ``lim = (max_depth, max_nodes, max_scan,
    min_score)``; the fanout is ``len(s.k_cnt)``."""
    max_depth, max_nodes, max_scan, min_score = lim
    init_root(buf, root)
    top = conf.shape[0] - 1
    s.n_sc[0] = 1.0
    s.n_state[0] = v0
    n_cand = 0
    h_size = 0
    size = 1
    node = 0
    while True:
        # offer the children of `node`
        if buf.depths[node] < max_depth:
            kept = 0
            total = 0
            scanned = 0
            f = a.head[s.n_state[node]]
            while f >= 0 and scanned < max_scan:
                scanned += 1
                if a.e_tok[f] >= 0:
                    c = a.cnt[a.e_to[f]]
                    total += c
                    kept = keep_top(s.k_cnt, s.k_edge, kept, c, f)
                f = a.e_next[f]
            if total > 0:
                step = conf[min(length + buf.depths[node], top)]
                for j in range(kept):
                    sc = s.n_sc[node] * step * s.k_cnt[j] / total
                    if sc >= min_score:
                        e = s.k_edge[j]
                        s.c_sc[n_cand] = sc
                        s.c_par[n_cand] = node
                        s.c_state[n_cand] = a.e_to[e]
                        s.c_tok[n_cand] = a.e_tok[e]
                        h_size = heap_push(s.h_sc, s.h_id, h_size, sc, n_cand)
                        n_cand += 1
        if size > max_nodes or h_size == 0:
            break
        k = s.h_id[0]
        h_size = heap_pop(s.h_sc, s.h_id, h_size)
        node = size
        size += 1
        add_node(buf, node, s.c_par[k], s.c_tok[k], s.c_sc[k])
        s.n_sc[node] = s.c_sc[k]
        s.n_state[node] = s.c_state[k]
    return size


class SuffixTree:
    """Drafts the continuation trie of the longest matched suffix from any suffix automaton.

    Args:
        conf: ``(k,)`` float64 probability that the next token still agrees after ``i`` agreeing
            ones (``conf[min(i, k - 1)]``).
        max_match: longest context suffix matched.
        alpha / min_depth / max_depth: draft depth ``clip(ceil(alpha * match length), min_depth,
            max_depth)``.
        max_fanout / max_scan: children kept / scanned per node.
        min_score: nodes scored lower are not drafted.

    The output and work arrays are allocated once and grown with the budget: one instance drafts
    for one caller at a time.
    """

    def __init__(self, conf: np.ndarray, max_match: int = 64, alpha: float = 4.0, min_depth: int = 8,
                 max_depth: int = 64, max_fanout: int = 4, max_scan: int = 256, min_score: float = 1e-3) -> None:
        if min(max_fanout, max_scan, min_depth, max_depth) < 1:
            raise ConfigError("max_fanout, max_scan, min_depth and max_depth must be >= 1.")
        self.conf = np.ascontiguousarray(conf, np.float64)
        self.max_match, self.alpha = int(max_match), float(alpha)
        self.min_depth, self.max_depth = int(min_depth), int(max_depth)
        self.max_fanout, self.max_scan, self.min_score = int(max_fanout), int(max_scan), float(min_score)
        self._buf = tree_buffers(33)
        self._scratch = _scratch(32, self.max_fanout)
        warm = SuffixAutomaton(1 << 20, 1)
        warm.add([1, 2, 3, 1, 2, 4])
        self.draft(warm, np.array([3, 1, 2], np.int64), 4)  # compile once

    def depth(self, length: int) -> int:
        """Draft depth for a match of ``length`` tokens."""
        return int(min(self.max_depth, max(self.min_depth, np.ceil(self.alpha * length))))

    def draft(self, store: SuffixAutomaton, context: np.ndarray, budget: int) -> DraftTree:
        """The trie of what followed the longest suffix of ``context`` (``(n,)`` ids, ``context[-1]``
        the root) in ``store``: at most ``budget`` draft nodes, root only when nothing matched."""
        ctx = np.ascontiguousarray(context, np.int64)
        budget = int(budget)
        self._buf = grown(self._buf, budget + 1)
        if self._scratch.n_sc.shape[0] < budget + 1:
            self._scratch = _scratch(max(budget, 2 * (self._scratch.n_sc.shape[0] - 1)), self.max_fanout)
        with store.lock:
            m = store.match(ctx, self.max_match)
            if m.length and budget > 0:
                lim = (self.depth(m.length), budget, self.max_scan, self.min_score)
                size = _expand(store.arrays, ctx[-1], m.state, m.length, self.conf, lim, self._scratch, self._buf)
                return to_tree(self._buf, size)
        return DraftTree.root_only(int(ctx[-1]))
