"""A bounded suffix automaton over token sequences: the data structure behind the memory.

:class:`SuffixAutomaton` holds token sequences and answers "what is the longest suffix of this
context seen before, where, and what followed it, how often". It is a suffix automaton of all
sequences joined by a separator (``SEP = -1``, never in a context, so no match spans two
sequences):

* appending a token is O(1) amortised (Blumer et al.'s online construction), so a sequence can
  be extended step by step and a finished one added without rebuilding anything;
* the longest suffix of a context that occurred before is found by walking its last ``max_len``
  tokens through the automaton (matching statistics), O(max_len);
* a state's occurrence count ``cnt`` (the size of its end-position set, kept online) gives the
  frequency of every continuation: the children of the matched state are the tokens that followed,
  ``cnt[child]`` how often.

Transitions live in one open-addressing hash table keyed by (state, token) plus a per-state
linked list for enumeration, all flat numpy arrays held in one :class:`Arrays` record that the
numba kernels take whole: ``BYTES_PER_TOKEN`` bytes reserved per token in the worst case (2
states and 3 transitions per token).

Bounded: a byte budget (``nbytes`` never exceeds ``max_bytes``) and a sequence budget; when an
addition would exceed either, the oldest sequences are evicted and the automaton is rebuilt in
place from the rest (down to 3/4 of the budget, so rebuilds are rare). Positions handed out
(``Match.pos``) are valid for one ``generation``; a rebuild starts a new one.

Example::

    >>> a = SuffixAutomaton()
    >>> a.add([5, 6, 7, 8]); a.add([1, 6, 7, 9])
    >>> a.match(np.array([4, 6, 7])).length, sorted(a.continuations(np.array([4, 6, 7])).items())
    (2, [(8, 1), (9, 1)])

Thread safety: every public method holds one re-entrant lock (:attr:`SuffixAutomaton.lock`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import ConfigError
from .jit import njit

__all__ = ["SuffixAutomaton", "Arrays", "Match", "SEP", "BYTES_PER_TOKEN"]

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


class Arrays(NamedTuple):
    """The automaton, as flat arrays (``c`` = token capacity).

    Attributes:
        tok: ``(c,)`` int32 the token stream (``SEP`` between sequences).
        slen: ``(2c + 1,)`` int32 longest string length of each state.
        link: ``(2c + 1,)`` int32 suffix link (-1 for the initial state 0).
        fpos: ``(2c + 1,)`` int32 end index of the state's first occurrence.
        cnt: ``(2c + 1,)`` int32 occurrences (exact unless ``meta[_DIRTY]``).
        own: ``(2c + 1,)`` int8 1 for states created as a new end (not clones).
        head: ``(2c + 1,)`` int32 first outgoing edge, -1 if none.
        order: ``(2c + 1,)`` int32 scratch of the recount.
        e_from, e_tok, e_to, e_next: ``(3c + 1,)`` int32 edges: source, token, target, next edge
            of the same source (-1 ends the list).
        table: ``(4c + 8,)`` int32 open-addressing hash of (source, token) -> edge + 1 (0: empty).
        meta: ``(5,)`` int64 tokens, states, edges, last state, dirty flag.
    """

    tok: np.ndarray
    slen: np.ndarray
    link: np.ndarray
    fpos: np.ndarray
    cnt: np.ndarray
    own: np.ndarray
    head: np.ndarray
    order: np.ndarray
    e_from: np.ndarray
    e_tok: np.ndarray
    e_to: np.ndarray
    e_next: np.ndarray
    table: np.ndarray
    meta: np.ndarray


def _arrays(cap: int) -> Arrays:
    s, e, h = 2 * cap + 1, 3 * cap + 1, 4 * cap + 8
    i32 = (lambda n: np.zeros(n, np.int32))
    return Arrays(i32(cap), i32(s), i32(s), i32(s), i32(s), np.zeros(s, np.int8), i32(s), i32(s),
                  i32(e), i32(e), i32(e), i32(e), i32(h), np.zeros(5, np.int64))


# ---------------------------------------------------------------------------------------- kernels
@njit(inline="always")
def _slot(v, c, size):
    h = np.uint64(v) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(c & 0xFFFFFFFF) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return np.int64(((h >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32))


@njit
def _find(a, v, c):
    """The edge index of transition (v, c), or -1."""
    size = a.table.shape[0]
    s = _slot(v, c, size)
    while True:
        e = a.table[s] - 1
        if e < 0:
            return -1
        if a.e_from[e] == v and a.e_tok[e] == c:
            return e
        s += 1
        if s == size:
            s = 0


@njit
def _insert(a, e):
    size = a.table.shape[0]
    s = _slot(a.e_from[e], a.e_tok[e], size)
    while a.table[s] != 0:
        s += 1
        if s == size:
            s = 0
    a.table[s] = e + 1


@njit
def _add_edge(a, v, c, to):
    e = a.meta[_NEDGES]
    a.meta[_NEDGES] = e + 1
    a.e_from[e] = v
    a.e_tok[e] = c
    a.e_to[e] = to
    a.e_next[e] = a.head[v]
    a.head[v] = e
    _insert(a, e)


@njit
def _append(a, src, count_walk):
    """Append ``src`` (int tokens) to the automaton; capacity was checked by the caller.

    Invariants (see :class:`Arrays`): ``slen[v]`` is the longest string of state v, ``link[v]``
    its suffix link, ``fpos[v]`` the end of its first occurrence, ``cnt[v]`` its occurrences.
    """
    slen, link, fpos, cnt, meta = a.slen, a.link, a.fpos, a.cnt, a.meta
    for j in range(src.shape[0]):
        c = src[j]
        i = meta[_NTOK]
        a.tok[i] = c
        meta[_NTOK] = i + 1
        cur = meta[_NSTATES]
        meta[_NSTATES] = cur + 1
        last = meta[_LAST]
        slen[cur] = slen[last] + 1
        fpos[cur] = i
        cnt[cur] = 0
        a.own[cur] = 1
        a.head[cur] = -1
        p = last
        e = -1
        while p != -1:
            e = _find(a, p, c)
            if e >= 0:
                break
            _add_edge(a, p, c, cur)
            p = link[p]
        if p == -1:
            link[cur] = 0
        else:
            q = a.e_to[e]
            if slen[p] + 1 == slen[q]:
                link[cur] = q
            else:
                clone = meta[_NSTATES]
                meta[_NSTATES] = clone + 1
                slen[clone] = slen[p] + 1
                fpos[clone] = fpos[q]
                link[clone] = link[q]
                cnt[clone] = cnt[q]
                a.own[clone] = 0
                a.head[clone] = -1
                f = a.head[q]
                while f >= 0:
                    _add_edge(a, clone, a.e_tok[f], a.e_to[f])
                    f = a.e_next[f]
                while p != -1:
                    e = _find(a, p, c)
                    if e < 0 or a.e_to[e] != q:
                        break
                    a.e_to[e] = clone
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


@njit
def _recount(a):
    """Exact occurrence counts: own ends summed up the suffix-link tree, longest states first."""
    slen, link, cnt, order = a.slen, a.link, a.cnt, a.order
    ns = a.meta[_NSTATES]
    top = a.meta[_NTOK] + 1
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
        cnt[v] = a.own[v]
    cnt[0] = 0
    for k in range(ns):
        v = order[k]
        if v > 0 and link[v] > 0:
            cnt[link[v]] += cnt[v]
    a.meta[_DIRTY] = 0


@njit
def _rehash(a):
    a.table[:] = 0
    for e in range(a.meta[_NEDGES]):
        _insert(a, e)


@njit
def _match(a, ctx, start):
    """(state, length) of the longest suffix of ``ctx[start:]`` that occurred with a next token.

    Matching statistics: after reading ``ctx[i]``, ``length`` is the longest suffix of
    ``ctx[start:i + 1]`` present in the automaton and ``state`` its state.
    """
    v = 0
    length = 0
    for i in range(start, ctx.shape[0]):
        c = ctx[i]
        while True:
            e = _find(a, v, c)
            if e >= 0:
                v = a.e_to[e]
                length += 1
                break
            if v == 0:
                length = 0
                break
            v = a.link[v]
            length = a.slen[v]
    # An occurrence only at the very end has no continuation: shorten to one that does.
    n_tok = a.meta[_NTOK]
    while v > 0 and a.fpos[v] + 1 >= n_tok:
        v = a.link[v]
        length = a.slen[v]
    return v, length


@njit
def _children(a, v, out_tok, out_cnt):
    n = 0
    f = a.head[v]
    while f >= 0:
        if a.e_tok[f] >= 0:
            out_tok[n] = a.e_tok[f]
            out_cnt[n] = a.cnt[a.e_to[f]]
            n += 1
        f = a.e_next[f]
    return n


@njit
def _find_near(a, pattern, lo, hi):
    """The first s in [lo, hi) with ``tok[s:s+m] == pattern`` and a token after it; -1 if none."""
    m = pattern.shape[0]
    for s in range(max(lo, 0), min(hi, a.meta[_NTOK] - m)):
        ok = True
        for k in range(m):
            if a.tok[s + k] != pattern[k]:
                ok = False
                break
        if ok:
            return s
    return -1


# ---------------------------------------------------------------------------------------- automaton
@dataclass(frozen=True)
class Match:
    """The longest suffix of a context that occurred before with a continuation.

    Attributes:
        length: matched tokens (0: none).
        count: how many times it occurred (an occurrence ending the stream included).
        pos: index in the token stream of the token that followed its first occurrence (read it
            with :meth:`SuffixAutomaton.read`), -1 when no match.
        generation: the automaton generation ``pos`` and ``state`` belong to.
        state: automaton state (for a drafting policy walking :attr:`SuffixAutomaton.arrays`).
    """

    length: int
    count: int
    pos: int
    generation: int
    state: int


def _check_int(label: str, v, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"{label} must be an integer >= {lo}, got {v!r}.")


def _tokens(tokens) -> np.ndarray:
    tokens = np.asarray(tokens, np.int64).reshape(-1)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(np.int32).max):
        raise ConfigError("token ids must be in [0, 2^31).")
    return tokens


class SuffixAutomaton:
    """Token sequences in a suffix automaton, bounded in bytes and sequences.

    Args:
        max_bytes: the arrays held never exceed this.
        max_sequences: sequences kept; the oldest go first.

    A drafting policy that walks the automaton itself reads :attr:`arrays` while holding
    :attr:`lock` (a re-entrant lock every method takes), so no addition moves them meanwhile.
    """

    def __init__(self, max_bytes: int = 256 << 20, max_sequences: int = 10_000) -> None:
        _check_int("max_bytes", max_bytes, 1 << 16)
        _check_int("max_sequences", max_sequences, 1)
        self._n_seq = 0
        self.max_bytes = int(max_bytes)
        self.max_sequences = int(max_sequences)
        starts_bytes = 8 * (self.max_sequences + 1)
        self.max_tokens = (self.max_bytes - starts_bytes - _FIXED_BYTES) // BYTES_PER_TOKEN
        if self.max_tokens < 256:
            need = 256 * BYTES_PER_TOKEN + starts_bytes + _FIXED_BYTES
            raise ConfigError(f"max_bytes={max_bytes} leaves room for {max(self.max_tokens, 0)} tokens "
                              f"with {max_sequences} sequences; allow at least {need}.")
        self.lock = threading.RLock()
        self.generation = 0
        self.arrays = _arrays(min(4096, self.max_tokens))
        self._clear_arrays()
        self._starts = np.zeros(min(64, self.max_sequences + 1), np.int64)

    # ------------------------------------------------------------------ storage
    def _clear_arrays(self) -> None:
        a = self.arrays
        a.meta[:] = 0
        a.meta[_NSTATES] = 1
        a.slen[0], a.link[0], a.fpos[0], a.cnt[0], a.head[0] = 0, -1, -1, 0, -1
        a.table[:] = 0

    def _grow(self, need: int) -> None:
        """Capacity for ``need`` tokens (<= max_tokens), doubling."""
        cap = self.arrays.tok.shape[0]
        if need <= cap:
            return
        old = self.arrays
        new = _arrays(min(self.max_tokens, max(need, 2 * cap)))
        for name in ("tok", "slen", "link", "fpos", "cnt", "own", "head", "e_from", "e_tok", "e_to", "e_next"):
            src = getattr(old, name)
            getattr(new, name)[: src.shape[0]] = src
        new.meta[:] = old.meta
        _rehash(new)
        self.arrays = new

    def _push(self, tokens: np.ndarray, count_walk: int = _COUNT_WALK) -> None:
        _append(self.arrays, tokens, count_walk)
        if self.arrays.meta[_DIRTY]:
            _recount(self.arrays)

    def _rebuild_from(self, start: int) -> None:
        """Keep tokens ``[start, n_tok)`` only (moved to the front) and rebuild the automaton."""
        keep = self.arrays.tok[start: self.n_tokens].copy()
        self._clear_arrays()
        if keep.size:
            _append(self.arrays, keep, 0)  # counted once below
        _recount(self.arrays)
        self.generation += 1

    def _evict(self, incoming: int, new_sequence: bool) -> None:
        """Drop the oldest sequences (or the oldest tokens of the only one) so that ``incoming``
        more tokens fit; go down to the low-water mark so rebuilds stay rare."""
        n_tok = self.n_tokens
        too_many = new_sequence and self._n_seq + 1 > self.max_sequences
        if n_tok + incoming <= self.max_tokens and not too_many:
            return
        target_tok = int(self.max_tokens * _LOW_WATER) - incoming
        target_seq = self.max_sequences - max(1, self.max_sequences // 8) if too_many else self._n_seq
        drop = 0
        keep_open = 0 if new_sequence else 1  # never drop the sequence being extended
        while drop < self._n_seq - keep_open and (
                n_tok - self._starts[drop] > target_tok or self._n_seq - drop > target_seq):
            drop += 1
        start = int(self._starts[drop])  # starts[n_seq] is the end of the stream
        if n_tok - start > target_tok:  # the last sequence alone is too long: keep its tail
            start = n_tok - target_tok
        kept = self._n_seq - drop
        self._starts[: kept + 1] = self._starts[drop: self._n_seq + 1] - start
        self._n_seq = kept
        if kept:
            self._starts[0] = 0
        self._rebuild_from(start)

    def _new_sequence(self) -> None:
        if self._n_seq + 1 > self._starts.shape[0] - 1:
            grown = np.zeros(min(self.max_sequences + 1, 2 * self._starts.shape[0]), np.int64)
            grown[: self._starts.shape[0]] = self._starts
            self._starts = grown
        if self._n_seq:
            self._push(np.array([SEP], np.int64))
        self._starts[self._n_seq] = self.n_tokens
        self._n_seq += 1
        self._starts[self._n_seq] = self.n_tokens

    def _write(self, tokens: np.ndarray, new_sequence: bool) -> None:
        with self.lock:
            limit = int(self.max_tokens * _LOW_WATER) - 1
            if tokens.size > limit:
                tokens = tokens[-limit:]
            sep = 1 if new_sequence and self._n_seq else 0
            self._evict(tokens.size + sep, new_sequence)
            sep = 1 if new_sequence and self._n_seq else 0
            self._grow(self.n_tokens + tokens.size + sep)
            if new_sequence:
                self._new_sequence()
            if tokens.size:
                self._push(tokens)
                self._starts[self._n_seq] = self.n_tokens

    # ------------------------------------------------------------------ mutation
    def add(self, tokens) -> None:
        """Append one sequence ``(n,)`` (atomically)."""
        self._write(_tokens(tokens), new_sequence=True)

    def append(self, tokens) -> None:
        """Append ``(n,)`` tokens to the last sequence (a new one if there is none)."""
        tokens = _tokens(tokens)
        with self.lock:
            self._write(tokens, new_sequence=self._n_seq == 0)

    def clear(self) -> None:
        """Forget every sequence (capacity is kept)."""
        with self.lock:
            self._clear_arrays()
            self._n_seq = 0
            self.generation += 1

    # ------------------------------------------------------------------ queries
    def match(self, context: np.ndarray, max_len: int = 64) -> Match:
        """The longest suffix of ``context[-max_len:]`` (``(n,)`` ints) that occurred before with a
        next token (an occurrence that ends the stream, like the context itself, does not count)."""
        ctx = np.ascontiguousarray(context, np.int64)
        with self.lock:
            v, length = _match(self.arrays, ctx, max(0, ctx.shape[0] - int(max_len)))
            if length == 0:
                return Match(0, 0, -1, self.generation, 0)
            return Match(int(length), int(self.arrays.cnt[v]), int(self.arrays.fpos[v]) + 1, self.generation, int(v))

    def continuations(self, context: np.ndarray, max_len: int = 64) -> dict[int, int]:
        """``{next token: count}`` after the longest matched suffix of ``context`` ({} if none)."""
        with self.lock:
            m = self.match(context, max_len)
            if m.length == 0:
                return {}
            size = self.arrays.e_tok.shape[0]
            toks, cnts = np.empty(size, np.int64), np.empty(size, np.int64)
            n = _children(self.arrays, m.state, toks, cnts)
            return {int(t): int(c) for t, c in zip(toks[:n], cnts[:n])}

    def read(self, pos: int, n: int, generation: int) -> np.ndarray:
        """Up to ``n`` tokens from stream index ``pos`` (stopping at a sequence boundary or the
        end); empty when ``generation`` is not the current one."""
        with self.lock:
            if generation != self.generation or pos < 0:
                return np.zeros(0, np.int64)
            out = self.arrays.tok[pos: min(pos + n, self.n_tokens)].astype(np.int64)
        cut = np.flatnonzero(out == SEP)
        return out[: cut[0]] if cut.size else out

    def find_near(self, pattern: np.ndarray, lo: int, hi: int, generation: int) -> int:
        """The first start ``s`` in ``[lo, hi)`` where ``pattern`` occurs in the stream followed by a
        token (so never the stream's own end), -1 if none."""
        pattern = np.ascontiguousarray(pattern, np.int64)
        with self.lock:
            if generation != self.generation or pattern.size == 0:
                return -1
            return int(_find_near(self.arrays, pattern, int(lo), int(hi)))

    # ------------------------------------------------------------------ sizes
    @property
    def n_tokens(self) -> int:
        """Tokens held, separators included."""
        return int(self.arrays.meta[_NTOK])

    @property
    def n_sequences(self) -> int:
        return self._n_seq

    @property
    def nbytes(self) -> int:
        """Bytes of every array held (never more than ``max_bytes``)."""
        with self.lock:
            return int(sum(a.nbytes for a in self.arrays) + self._starts.nbytes)

    def sequences(self) -> list[np.ndarray]:
        """The sequences held, oldest first (``(n_i,)`` int64 each)."""
        with self.lock:
            tok, st, n = self.arrays.tok, self._starts, self._n_seq
            return [tok[st[r]: st[r + 1] - (1 if r + 1 < n else 0)].astype(np.int64) for r in range(n)]
