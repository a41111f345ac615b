"""Token memory across requests: an incremental suffix automaton, bounded in bytes.

:class:`SuffixMemory` holds token sequences (one per request: its prompt and output) and answers,
in microseconds at a million tokens, "what is the longest suffix of this context seen before,
where, and what followed it, how often". The structure is a suffix automaton of all sequences
joined by a separator (``SEP = -1``, never in a context, so no match spans two requests):

* appending a token is O(1) amortised (Blumer et al.'s online construction), so the current
  request can be extended step by step and a finished one added without rebuilding anything;
* the longest suffix of a context that occurred before is found by walking its last ``max_len``
  tokens through the automaton (matching statistics), O(max_len);
* a state's occurrence count ``cnt`` (the size of its end-position set, kept online) gives the
  frequency of every continuation: the children of the matched state are the tokens that followed,
  ``cnt[child]`` how often.

Transitions live in one open-addressing hash table keyed by (state, token) plus a per-state
linked list for enumeration, all in flat numpy arrays walked by numba kernels: about 118 bytes per
token reserved in the worst case (2 states and 3 transitions per token). ``benchmarks/memory_bench.py``
measures it against a rebuilt suffix array (the alternative for a growing history).

Example::

    >>> m = SuffixMemory()
    >>> m.add([5, 6, 7, 8]); m.add([1, 6, 7, 9])
    >>> m.match(np.array([4, 6, 7])).length, sorted(m.continuations(np.array([4, 6, 7])).items())
    (2, [(8, 1), (9, 1)])

Bounded: a byte budget (``nbytes`` never exceeds ``max_bytes``) and a request budget; when an
addition would exceed either, the oldest requests are evicted and the automaton is rebuilt in
place from the rest (down to 3/4 of the budget, so rebuilds are rare). Positions handed out
(``Match.pos``) are valid for one ``generation``; a rebuild starts a new one.

Thread safety: every public method holds one re-entrant lock, so one memory can be shared by many
drafters and threads; a sequence is added atomically.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numba
import numpy as np

from .errors import ConfigError

__all__ = ["SuffixMemory", "Match", "SEP", "BYTES_PER_TOKEN", "warm_up"]

SEP = -1
#: Bytes reserved per token of capacity: token 4, 2 states x (5 int32 + 1 flag + 1 int32 sort
#: slot) 50, 3 transitions x 4 int32 48, 4 hash slots x int32 16.
BYTES_PER_TOKEN = 118
_FIXED_BYTES = 113  # the + 1 / + 8 slots of the state, edge and hash arrays, and meta
_LOW_WATER = 0.75
#: Longest occurrence-count update walked per appended token; past it the counts are rebuilt in
#: one O(n) pass (only periodic text, e.g. "a a a a ...", has longer suffix-link chains).
_COUNT_WALK = 1024

# meta slots
_NTOK, _NSTATES, _NEDGES, _LAST, _DIRTY = range(5)


# ---------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, inline="always")
def _slot(v, c, size):
    h = np.uint64(v) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(c & 0xFFFFFFFF) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return np.int64(((h >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32))


@numba.njit(cache=True)
def _find(table, e_from, e_tok, v, c):
    # The edge index of transition (v, c), or -1. table[s] = edge + 1, 0 = empty.
    size = table.shape[0]
    s = _slot(v, c, size)
    while True:
        e = table[s] - 1
        if e < 0:
            return -1
        if e_from[e] == v and e_tok[e] == c:
            return e
        s += 1
        if s == size:
            s = 0


@numba.njit(cache=True)
def _insert(table, e_from, e_tok, e):
    size = table.shape[0]
    s = _slot(e_from[e], e_tok[e], size)
    while table[s] != 0:
        s += 1
        if s == size:
            s = 0
    table[s] = e + 1


@numba.njit(cache=True)
def _add_edge(meta, head, e_from, e_tok, e_to, e_next, table, v, c, to):
    e = meta[_NEDGES]
    meta[_NEDGES] = e + 1
    e_from[e] = v
    e_tok[e] = c
    e_to[e] = to
    e_next[e] = head[v]
    head[v] = e
    _insert(table, e_from, e_tok, e)


@numba.njit(cache=True)
def _append(meta, src, tok, slen, link, fpos, cnt, own, head, e_from, e_tok, e_to, e_next, table, count_walk):
    """Append ``src`` (int tokens) to the automaton; capacity was checked by the caller.

    Invariants: ``slen[v]`` is the longest string of state v, ``link[v]`` its suffix link,
    ``fpos[v]`` the end index of its first occurrence, ``cnt[v]`` its number of occurrences
    (exact unless ``meta[_DIRTY]``), ``own[v]`` 1 for states created as a new end (not clones).
    """
    for j in range(src.shape[0]):
        c = src[j]
        i = meta[_NTOK]
        tok[i] = c
        meta[_NTOK] = i + 1
        cur = meta[_NSTATES]
        meta[_NSTATES] = cur + 1
        last = meta[_LAST]
        slen[cur] = slen[last] + 1
        fpos[cur] = i
        cnt[cur] = 0
        own[cur] = 1
        head[cur] = -1
        p = last
        e = -1
        while p != -1:
            e = _find(table, e_from, e_tok, p, c)
            if e >= 0:
                break
            _add_edge(meta, head, e_from, e_tok, e_to, e_next, table, p, c, cur)
            p = link[p]
        if p == -1:
            link[cur] = 0
        else:
            q = e_to[e]
            if slen[p] + 1 == slen[q]:
                link[cur] = q
            else:
                clone = meta[_NSTATES]
                meta[_NSTATES] = clone + 1
                slen[clone] = slen[p] + 1
                fpos[clone] = fpos[q]
                link[clone] = link[q]
                cnt[clone] = cnt[q]
                own[clone] = 0
                head[clone] = -1
                f = head[q]
                while f >= 0:
                    _add_edge(meta, head, e_from, e_tok, e_to, e_next, table, clone, e_tok[f], e_to[f])
                    f = e_next[f]
                while p != -1:
                    e = _find(table, e_from, e_tok, p, c)
                    if e < 0 or e_to[e] != q:
                        break
                    e_to[e] = clone
                    p = link[p]
                link[q] = clone
                link[cur] = clone
        meta[_LAST] = cur
        # The new end position is in the end-position set of every state on cur's link chain.
        v = cur
        steps = 0
        while v > 0 and steps < count_walk:
            cnt[v] += 1
            v = link[v]
            steps += 1
        if v > 0:
            meta[_DIRTY] = 1


@numba.njit(cache=True)
def _recount(meta, slen, link, cnt, own, order):
    """Exact occurrence counts: own ends summed up the suffix-link tree, longest states first."""
    ns = meta[_NSTATES]
    top = meta[_NTOK] + 1
    for k in range(top + 1):
        cnt[k] = 0
    for v in range(ns):  # cnt doubles as the histogram of lengths (top + 1 <= len(cnt))
        cnt[slen[v]] += 1
    acc = 0
    for k in range(top, -1, -1):  # start offsets, longest first
        n_k = cnt[k]
        cnt[k] = acc
        acc += n_k
    for v in range(ns):
        order[cnt[slen[v]]] = v
        cnt[slen[v]] += 1
    for v in range(ns):
        cnt[v] = own[v]
    cnt[0] = 0
    for k in range(ns):
        v = order[k]
        if v > 0 and link[v] > 0:
            cnt[link[v]] += cnt[v]
    meta[_DIRTY] = 0


@numba.njit(cache=True)
def _rehash(meta, e_from, e_tok, table):
    table[:] = 0
    for e in range(meta[_NEDGES]):
        _insert(table, e_from, e_tok, e)


@numba.njit(cache=True)
def _match(ctx, start, n_tok, slen, link, fpos, table, e_from, e_tok, e_to):
    """(state, length) of the longest suffix of ``ctx[start:]`` that occurred with a next token.

    Matching statistics: after reading ``ctx[i]``, ``length`` is the longest suffix of
    ``ctx[start:i + 1]`` present in the memory and ``state`` its state.
    """
    v = 0
    length = 0
    for i in range(start, ctx.shape[0]):
        c = ctx[i]
        while True:
            e = _find(table, e_from, e_tok, v, c)
            if e >= 0:
                v = e_to[e]
                length += 1
                break
            if v == 0:
                length = 0
                break
            v = link[v]
            length = slen[v]
    # An occurrence only at the very end has no continuation: shorten to one that does.
    while v > 0 and fpos[v] + 1 >= n_tok:
        v = link[v]
        length = slen[v]
    return v, length


@numba.njit(cache=True)
def _heap_push(h_sc, h_id, size, score, ident):
    i = size
    h_sc[i] = score
    h_id[i] = ident
    while i > 0:
        p = (i - 1) >> 1
        # max-heap on score; equal scores: smaller id (pushed earlier) first, for determinism
        if h_sc[p] > h_sc[i] or (h_sc[p] == h_sc[i] and h_id[p] < h_id[i]):
            break
        h_sc[p], h_sc[i] = h_sc[i], h_sc[p]
        h_id[p], h_id[i] = h_id[i], h_id[p]
        i = p
    return size + 1


@numba.njit(cache=True)
def _heap_pop(h_sc, h_id, size):
    size -= 1
    h_sc[0] = h_sc[size]
    h_id[0] = h_id[size]
    i = 0
    while True:
        l = 2 * i + 1
        r = l + 1
        b = i
        if l < size and (h_sc[l] > h_sc[b] or (h_sc[l] == h_sc[b] and h_id[l] < h_id[b])):
            b = l
        if r < size and (h_sc[r] > h_sc[b] or (h_sc[r] == h_sc[b] and h_id[r] < h_id[b])):
            b = r
        if b == i:
            break
        h_sc[b], h_sc[i] = h_sc[i], h_sc[b]
        h_id[b], h_id[i] = h_id[i], h_id[b]
        i = b
    return size


@numba.njit(cache=True)
def _expand(cnt, head, e_tok, e_to, e_next, v0, length, conf, max_depth, max_nodes, max_fanout, max_scan, min_score,
            out_tok, out_par, out_sc, out_dep):  # fmt: skip
    """Best-first continuation trie below state ``v0`` (matched ``length`` tokens); returns its size.

    Node 0 is the root (token left for the caller). A child's score is its parent's times
    ``conf[length + depth(parent)]`` (the chance that a context agreeing on that many tokens
    keeps agreeing) times its count share among the parent's children (the ``max_fanout`` most
    frequent of the first ``max_scan`` listed). Nodes are taken highest score first until
    ``max_nodes`` draft nodes, ``max_depth`` or ``min_score``.
    """
    top = conf.shape[0] - 1
    cap = (max_nodes + 1) * max_fanout + 1
    c_sc = np.empty(cap, np.float64)  # candidates: score, parent node, state, token
    c_par = np.empty(cap, np.int64)
    c_state = np.empty(cap, np.int64)
    c_tok = np.empty(cap, np.int64)
    h_sc = np.empty(cap, np.float64)
    h_id = np.empty(cap, np.int64)
    state = np.empty(max_nodes + 1, np.int64)
    k_cnt = np.empty(max_fanout, np.int64)
    k_edge = np.empty(max_fanout, np.int64)
    out_par[0] = -1
    out_sc[0] = 1.0
    out_dep[0] = 0
    state[0] = v0
    n_cand = 0
    h_size = 0
    size = 1
    node = 0
    while True:
        # push the children of `node`
        if out_dep[node] < max_depth:
            v = state[node]
            kept = 0
            total = 0
            scanned = 0
            f = head[v]
            while f >= 0 and scanned < max_scan:
                scanned += 1
                if e_tok[f] >= 0:
                    c = cnt[e_to[f]]
                    total += c
                    # keep the max_fanout largest counts, insertion-sorted descending
                    if kept < max_fanout or c > k_cnt[kept - 1]:
                        j = kept if kept < max_fanout else max_fanout - 1
                        while j > 0 and k_cnt[j - 1] < c:
                            k_cnt[j] = k_cnt[j - 1]
                            k_edge[j] = k_edge[j - 1]
                            j -= 1
                        k_cnt[j] = c
                        k_edge[j] = f
                        if kept < max_fanout:
                            kept += 1
                f = e_next[f]
            if total > 0:
                step = conf[min(length + out_dep[node], top)]
                for j in range(kept):
                    s = out_sc[node] * step * k_cnt[j] / total
                    if s >= min_score:
                        c_sc[n_cand] = s
                        c_par[n_cand] = node
                        c_state[n_cand] = e_to[k_edge[j]]
                        c_tok[n_cand] = e_tok[k_edge[j]]
                        h_size = _heap_push(h_sc, h_id, h_size, s, n_cand)
                        n_cand += 1
        if size > max_nodes or h_size == 0:
            break
        k = h_id[0]
        h_size = _heap_pop(h_sc, h_id, h_size)
        node = size
        size += 1
        out_tok[node] = c_tok[k]
        out_par[node] = c_par[k]
        out_sc[node] = c_sc[k]
        out_dep[node] = out_dep[c_par[k]] + 1
        state[node] = c_state[k]
    return size


@numba.njit(cache=True)
def _children(cnt, head, e_tok, e_to, e_next, v, out_tok, out_cnt):
    n = 0
    f = head[v]
    while f >= 0:
        if e_tok[f] >= 0:
            out_tok[n] = e_tok[f]
            out_cnt[n] = cnt[e_to[f]]
            n += 1
        f = e_next[f]
    return n


@numba.njit(cache=True)
def _find_near(tok, n_tok, pattern, lo, hi):
    """The first s in [lo, hi) with ``tok[s:s+m] == pattern`` and a token after it; -1 if none."""
    m = pattern.shape[0]
    for s in range(max(lo, 0), min(hi, n_tok - m)):
        ok = True
        for k in range(m):
            if tok[s + k] != pattern[k]:
                ok = False
                break
        if ok:
            return s
    return -1


# ---------------------------------------------------------------------------------------- class
@dataclass(frozen=True)
class Match:
    """The longest suffix of a context that occurred before with a continuation.

    Attributes:
        length: matched tokens (0: none).
        count: how many times it occurred (an occurrence ending the stream included).
        pos: index in the memory's token stream of the token that followed its first occurrence
            (read it with :meth:`SuffixMemory.read`), -1 when no match.
        generation: the memory generation ``pos`` belongs to.
        state: automaton state (internal).
    """

    length: int
    count: int
    pos: int
    generation: int
    state: int


class SuffixMemory:
    """Past requests' tokens in a suffix automaton, bounded in bytes and requests.

    Args:
        max_bytes: the arrays held never exceed this (default 256 MiB: ~2.2M tokens).
        max_requests: sequences kept (default 10,000); the oldest go first.
    """

    def __init__(self, max_bytes: int = 256 << 20, max_requests: int = 10_000) -> None:
        for label, v, lo in (("max_bytes", max_bytes, 1 << 16), ("max_requests", max_requests, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{label} must be an integer >= {lo}, got {v!r}.")
        self._n_req = 0
        self.max_bytes = int(max_bytes)
        self.max_requests = int(max_requests)
        starts_bytes = 8 * (self.max_requests + 1)
        self.max_tokens = (self.max_bytes - starts_bytes - _FIXED_BYTES) // BYTES_PER_TOKEN
        if self.max_tokens < 256:
            need = 256 * BYTES_PER_TOKEN + starts_bytes + _FIXED_BYTES
            raise ConfigError(f"max_bytes={max_bytes} leaves room for {max(self.max_tokens, 0)} tokens "
                              f"with max_requests={max_requests}; allow at least {need}.")
        self._lock = threading.RLock()
        self.generation = 0
        self._alloc(min(4096, self.max_tokens))
        self._starts = np.zeros(min(64, self.max_requests + 1), np.int64)

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int) -> None:
        self._cap = cap
        s, e, h = 2 * cap + 1, 3 * cap + 1, 4 * cap + 8
        self._tok = np.zeros(cap, np.int32)
        self._slen, self._link, self._fpos, self._cnt, self._head, self._order = (
            np.zeros(s, np.int32) for _ in range(6))
        self._own = np.zeros(s, np.int8)
        self._e_from, self._e_tok, self._e_to, self._e_next = (np.zeros(e, np.int32) for _ in range(4))
        self._table = np.zeros(h, np.int32)
        self._meta = np.zeros(5, np.int64)
        self._clear_automaton()

    def _clear_automaton(self) -> None:
        self._meta[:] = 0
        self._meta[_NSTATES] = 1
        self._slen[0], self._link[0], self._fpos[0], self._cnt[0], self._head[0] = 0, -1, -1, 0, -1
        self._table[:] = 0

    def _grow(self, need: int) -> None:
        """Capacity for ``need`` tokens (<= max_tokens), doubling."""
        if need <= self._cap:
            return
        old = (self._tok, self._slen, self._link, self._fpos, self._cnt, self._head, self._own,
               self._e_from, self._e_tok, self._e_to, self._e_next)
        meta = self._meta.copy()
        self._alloc(min(self.max_tokens, max(need, 2 * self._cap)))
        new = (self._tok, self._slen, self._link, self._fpos, self._cnt, self._head, self._own,
               self._e_from, self._e_tok, self._e_to, self._e_next)
        for a, b in zip(old, new):
            b[: a.shape[0]] = a
        self._meta[:] = meta
        _rehash(self._meta, self._e_from, self._e_tok, self._table)

    def _arrays(self):
        return (self._tok, self._slen, self._link, self._fpos, self._cnt, self._own, self._head,
                self._e_from, self._e_tok, self._e_to, self._e_next, self._table)

    def _push(self, tokens: np.ndarray, count_walk: int = _COUNT_WALK) -> None:
        t = self._tok, self._slen, self._link, self._fpos, self._cnt, self._own, self._head
        _append(self._meta, tokens, *t, self._e_from, self._e_tok, self._e_to, self._e_next, self._table, count_walk)

    def _finish(self) -> None:
        if self._meta[_DIRTY]:
            _recount(self._meta, self._slen, self._link, self._cnt, self._own, self._order)

    def _rebuild_from(self, start: int) -> None:
        """Keep tokens ``[start, n_tok)`` only (moved to the front) and rebuild the automaton."""
        n = int(self._meta[_NTOK])
        keep = self._tok[start:n].copy()
        self._clear_automaton()
        if keep.size:
            self._push(keep, count_walk=0)  # counted once below
        self._meta[_DIRTY] = 1
        self._finish()
        self.generation += 1

    def _evict(self, incoming: int, new_request: bool) -> None:
        """Drop the oldest requests (or the oldest tokens of the only one) so that ``incoming``
        more tokens fit; go down to the low-water mark so rebuilds stay rare."""
        n_tok = int(self._meta[_NTOK])
        too_many = new_request and self._n_req + 1 > self.max_requests
        if n_tok + incoming <= self.max_tokens and not too_many:
            return
        target_tok = int(self.max_tokens * _LOW_WATER) - incoming
        target_req = self.max_requests - max(1, self.max_requests // 8) if too_many else self._n_req
        drop = 0
        keep_open = 0 if new_request else 1  # never drop the sequence being extended
        while drop < self._n_req - keep_open and (
                n_tok - self._starts[drop] > target_tok or self._n_req - drop > target_req):
            drop += 1
        start = int(self._starts[drop])  # starts[n_req] is the end of the stream
        if n_tok - start > target_tok:  # the open request alone is too long: keep its tail
            start = n_tok - target_tok
        kept = self._n_req - drop
        self._starts[: kept + 1] = self._starts[drop: self._n_req + 1] - start
        self._n_req = kept
        if kept:
            self._starts[0] = 0
        self._rebuild_from(start)

    def _new_request(self) -> None:
        if self._n_req + 1 > self._starts.shape[0] - 1:
            grown = np.zeros(min(self.max_requests + 1, 2 * self._starts.shape[0]), np.int64)
            grown[: self._starts.shape[0]] = self._starts
            self._starts = grown
        if self._n_req:
            self._push(np.array([SEP], np.int64))
        self._starts[self._n_req] = self._meta[_NTOK]
        self._n_req += 1
        self._starts[self._n_req] = self._meta[_NTOK]

    # ------------------------------------------------------------------ mutation
    def add(self, tokens) -> None:
        """Append one finished sequence ``(n,)`` as a new request (atomically)."""
        self._write(np.asarray(tokens, np.int64).reshape(-1), new_request=True)

    def start(self) -> None:
        """Open a new, empty request that :meth:`extend` appends to."""
        self._write(np.zeros(0, np.int64), new_request=True)

    def extend(self, tokens) -> None:
        """Append ``(n,)`` tokens to the last request (a new one if there is none)."""
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        with self._lock:
            self._write(tokens, new_request=self._n_req == 0)

    def _write(self, tokens: np.ndarray, new_request: bool) -> None:
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(np.int32).max):
            raise ConfigError("token ids must be in [0, 2^31).")
        with self._lock:
            limit = int(self.max_tokens * _LOW_WATER) - 1
            if tokens.size > limit:
                tokens = tokens[-limit:]
            incoming = tokens.size + (1 if new_request and self._n_req else 0)
            self._evict(incoming, new_request)
            incoming = tokens.size + (1 if new_request and self._n_req else 0)
            self._grow(int(self._meta[_NTOK]) + incoming)
            if new_request:
                self._new_request()
            if tokens.size:
                self._push(tokens)
                self._finish()
                self._starts[self._n_req] = self._meta[_NTOK]

    def clear(self) -> None:
        """Forget every sequence (capacity is kept)."""
        with self._lock:
            self._clear_automaton()
            self._n_req = 0
            self.generation += 1

    # ------------------------------------------------------------------ queries
    def match(self, context: np.ndarray, max_len: int = 64) -> Match:
        """The longest suffix of ``context[-max_len:]`` (``(n,)`` ints) that occurred before with a
        next token (an occurrence that ends the stream, like the context itself, does not count)."""
        ctx = np.ascontiguousarray(context, np.int64)
        with self._lock:
            n_tok = int(self._meta[_NTOK])
            v, length = _match(ctx, max(0, ctx.shape[0] - int(max_len)), n_tok, self._slen, self._link, self._fpos,
                               self._table, self._e_from, self._e_tok, self._e_to)
            if length == 0:
                return Match(0, 0, -1, self.generation, 0)
            return Match(int(length), int(self._cnt[v]), int(self._fpos[v]) + 1, self.generation, int(v))

    def continuations(self, context: np.ndarray, max_len: int = 64) -> dict[int, int]:
        """``{next token: count}`` after the longest matched suffix of ``context`` ({} if none)."""
        with self._lock:
            m = self.match(context, max_len)
            if m.length == 0:
                return {}
            size = self._e_tok.shape[0]
            toks, cnts = np.empty(size, np.int64), np.empty(size, np.int64)
            n = _children(self._cnt, self._head, self._e_tok, self._e_to, self._e_next, m.state, toks, cnts)
            return {int(t): int(c) for t, c in zip(toks[:n], cnts[:n])}

    def draft(self, context: np.ndarray, conf: np.ndarray, max_len: int = 64, alpha: float = 4.0,
              min_depth: int = 8, max_depth: int = 64, max_nodes: int = 32, max_fanout: int = 4,
              max_scan: int = 256, min_score: float = 1e-3):
        """A continuation trie of the longest matched suffix of ``context``.

        Args:
            context: ``(n,)`` ids; ``context[-1]`` is the root.
            conf: ``(k,)`` probability that the next token still agrees after ``i`` agreeing ones.
            alpha / min_depth / max_depth: draft depth ``clip(alpha * match length, min_depth,
                max_depth)`` (SuffixDecoding's adaptive speculation length).
            max_nodes: draft nodes; max_fanout / max_scan: children kept / scanned per node;
            min_score: nodes scored lower are not drafted.

        Returns:
            ``(tokens (m,) int64, parents (m,) int32, scores (m,) float32, match)``, parents-first
            with the root at 0 (``m == 1`` when nothing matched).
        """
        ctx = np.ascontiguousarray(context, np.int64)
        out_tok = np.empty(max_nodes + 1, np.int64)
        out_par = np.empty(max_nodes + 1, np.int64)
        out_sc = np.empty(max_nodes + 1, np.float64)
        out_dep = np.empty(max_nodes + 1, np.int64)
        with self._lock:
            m = self.match(ctx, max_len)
            size = 1
            if m.length:
                depth = int(min(max_depth, max(min_depth, np.ceil(alpha * m.length))))
                size = _expand(self._cnt, self._head, self._e_tok, self._e_to, self._e_next, m.state, m.length, conf,
                               depth, int(max_nodes), int(max_fanout), int(max_scan), float(min_score),
                               out_tok, out_par, out_sc, out_dep)
        out_tok[0] = ctx[-1]
        out_par[0] = -1
        if size == 1:
            out_sc[0] = 1.0  # nothing matched: the root alone, its score not set by _expand
        return out_tok[:size], out_par[:size].astype(np.int32), out_sc[:size].astype(np.float32), m

    def read(self, pos: int, n: int, generation: int) -> np.ndarray:
        """Up to ``n`` tokens from stream index ``pos`` (stopping at a request boundary or the end);
        empty when ``generation`` is not the current one."""
        with self._lock:
            if generation != self.generation or pos < 0:
                return np.zeros(0, np.int64)
            out = self._tok[pos: min(pos + n, int(self._meta[_NTOK]))].astype(np.int64)
        cut = np.flatnonzero(out == SEP)
        return out[: cut[0]] if cut.size else out

    def find_near(self, pattern: np.ndarray, lo: int, hi: int, generation: int) -> int:
        """The first start ``s`` in ``[lo, hi)`` where ``pattern`` occurs in the stream followed by a
        token (so never the stream's own end), -1 if none."""
        pattern = np.ascontiguousarray(pattern, np.int64)
        with self._lock:
            if generation != self.generation or pattern.size == 0:
                return -1
            return int(_find_near(self._tok, int(self._meta[_NTOK]), pattern, int(lo), int(hi)))

    # ------------------------------------------------------------------ sizes
    @property
    def n_tokens(self) -> int:
        """Tokens held, separators included."""
        return int(self._meta[_NTOK])

    @property
    def n_requests(self) -> int:
        return self._n_req

    @property
    def nbytes(self) -> int:
        """Bytes of every array held (never more than ``max_bytes``)."""
        with self._lock:
            arrays = self._arrays() + (self._order, self._meta, self._starts)
            return int(sum(a.nbytes for a in arrays))

    def sequences(self) -> list[np.ndarray]:
        """The requests held, oldest first (``(n_i,)`` int64 each)."""
        with self._lock:
            return [self._tok[self._starts[r]: self._starts[r + 1] - (1 if r + 1 < self._n_req else 0)].astype(np.int64)
                    for r in range(self._n_req)]

    def __repr__(self) -> str:
        return (f"SuffixMemory({self.n_requests} requests, {self.n_tokens} tokens, "
                f"{self.nbytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB)")


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once per process."""
    global _warm
    if _warm:
        return
    m = SuffixMemory(max_bytes=1 << 20, max_requests=2)
    for seq in ([1, 2, 3, 1, 2, 4], [1, 2, 3], [2, 3, 1]):  # the third add evicts and rebuilds
        m.add(seq)
    m.start()
    m.extend([1, 2])
    conf = np.linspace(0.3, 0.9, 8)
    m.draft(np.array([3, 1, 2], np.int64), conf)
    m.continuations(np.array([1, 2], np.int64))
    m.find_near(np.array([2, 3], np.int64), 0, 8, m.generation)
    _warm = True
