"""Token memory across requests: finished requests shared by many drafters, requests in flight.

:class:`SuffixMemory` keeps finished requests (prompt and output) in one bounded
:class:`~retrodraft.automaton.SuffixAutomaton` that drafters and threads share, and owns the
request lifecycle: a request's tokens stay in a private automaton of its own while it runs
(matched by its drafter, by no one else), and join the shared store when it finishes::

    memory.start(request_id, prompt)    # open a request (several may be open at once)
    memory.extend(request_id, tokens)   # its output, as it is committed
    memory.finish(request_id)           # prompt + output join the shared store
    memory.abort(request_id)            # or: forget it (a cancelled request)
    memory.add(tokens)                  # one finished sequence at once (saved state, corpora)

Example::

    >>> m = SuffixMemory()
    >>> m.start("r1", [5, 6, 7]); m.extend("r1", [8]); m.finish("r1")
    >>> m.add([1, 6, 7, 9])
    >>> m.match(np.array([4, 6, 7])).length, sorted(m.continuations(np.array([4, 6, 7])).items())
    (2, [(8, 1), (9, 1)])

Thread safety: every public method holds a lock, so one memory can be shared by many drafters
and threads; a request is stored atomically.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from .automaton import Match, SuffixAutomaton
from .errors import ConfigError

__all__ = ["SuffixMemory", "warm_up"]

#: Finished requests remembered (by length and digest) to recognize a prompt that resends one.
_RECENT = 32
_DIGEST = 16


@dataclass
class _Open:
    view: SuffixAutomaton  # the prompt and output so far (its tail, past its byte budget)
    n_out: int = 0


def _digest(tokens: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(tokens, np.int64).tobytes(), digest_size=_DIGEST).digest()


class SuffixMemory:
    """The store of finished requests that drafters share, and the requests in flight.

    Finished requests live in one bounded :class:`SuffixAutomaton` (:attr:`shared`); each open
    request in a private one (:meth:`private`) until :meth:`finish` moves it to the shared store
    or :meth:`abort` drops it, so two requests' tokens never interleave and no request is matched
    by another before it is finished.

    Args:
        max_bytes: the shared store never exceeds this (default 256 MiB: ~2.2M tokens).
        max_requests: finished requests kept (default 10,000); the oldest go first.
        private_bytes: byte budget of each open request's private automaton (past it, the
            request's oldest tokens are dropped from its view).

    The query methods (``match``, ``continuations``, ``read``, ``find_near``, ``sequences``) and
    the sizes read the shared store.
    """

    def __init__(self, max_bytes: int = 256 << 20, max_requests: int = 10_000, private_bytes: int = 64 << 20) -> None:
        for label, v, lo in (("max_bytes", max_bytes, 1 << 16), ("max_requests", max_requests, 1),
                             ("private_bytes", private_bytes, 1 << 16)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{label} must be an integer >= {lo}, got {v!r}.")
        self.shared = SuffixAutomaton(max_bytes, max_requests)
        SuffixAutomaton(private_bytes, 1)  # refuse a private budget too small, now
        self.private_bytes = int(private_bytes)
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Open] = {}
        self._recent: deque[tuple[int, bytes, int]] = deque(maxlen=_RECENT)  # (length, digest, generation)

    # ------------------------------------------------------------------ request lifecycle
    def start(self, request_id: Hashable, prompt=()) -> None:
        """Open request ``request_id`` with its ``(n,)`` prompt tokens (kept private until finished)."""
        view = SuffixAutomaton(self.private_bytes, 1)
        view.add(prompt)
        with self._lock:
            if request_id in self._open:
                raise ConfigError(f"request {request_id!r} is already open; finish or abort it first.")
            self._open[request_id] = _Open(view)

    def extend(self, request_id: Hashable, tokens) -> None:
        """Append ``(n,)`` output tokens to open request ``request_id``."""
        rec = self._get(request_id)
        rec.view.append(tokens)
        rec.n_out += int(np.size(tokens))

    def finish(self, request_id: Hashable, with_prompt: bool = True) -> None:
        """Close ``request_id`` and store it: its prompt and output, or its output only.

        A prompt that starts with a recently finished request (a chat or agent loop resending
        its history) is stored from where it differs.
        """
        with self._lock:
            rec = self._pop(request_id)
            seqs = rec.view.sequences()
            seq = seqs[-1] if seqs else np.zeros(0, np.int64)
            if not with_prompt:
                seq = seq[max(0, seq.shape[0] - rec.n_out):]
            stored = seq[self._resent(seq):] if with_prompt else seq
            if stored.shape[0]:
                self.shared.add(stored)
            self._recent.append((int(seq.shape[0]), _digest(seq), self.shared.generation))

    def abort(self, request_id: Hashable) -> None:
        """Close ``request_id`` without storing anything (a cancelled request)."""
        with self._lock:
            self._pop(request_id)

    def add(self, tokens) -> None:
        """Store one finished ``(n,)`` sequence at once (saved state, a corpus)."""
        with self._lock:
            self.shared.add(tokens)

    def clear(self) -> None:
        """Forget every finished request (open ones stay open)."""
        with self._lock:
            self.shared.clear()
            self._recent.clear()

    def private(self, request_id: Hashable) -> SuffixAutomaton | None:
        """The private automaton of open request ``request_id`` (its prompt and output so far),
        None when it is not open."""
        with self._lock:
            rec = self._open.get(request_id)
        return None if rec is None else rec.view

    def is_open(self, request_id: Hashable) -> bool:
        with self._lock:
            return request_id in self._open

    def _get(self, request_id: Hashable) -> _Open:
        with self._lock:
            rec = self._open.get(request_id)
        if rec is None:
            raise ConfigError(f"request {request_id!r} is not open; call start() first.")
        return rec

    def _pop(self, request_id: Hashable) -> _Open:
        rec = self._open.pop(request_id, None)
        if rec is None:
            raise ConfigError(f"request {request_id!r} is not open; call start() first.")
        return rec

    def _resent(self, seq: np.ndarray) -> int:
        """Length of the longest recently finished request that ``seq`` starts with (and outgrows),
        0 if none; one stored before an eviction does not count (it may be gone)."""
        best = 0
        for length, digest, gen in self._recent:
            if best < length < seq.shape[0] and gen == self.shared.generation and _digest(seq[:length]) == digest:
                best = length
        return best

    # ------------------------------------------------------------------ saved state
    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The recently finished requests a resent prompt is recognized by, oldest first:
        ``(lengths (k,) int64, digests (k, 16) uint8)``."""
        with self._lock:
            lengths = np.array([r[0] for r in self._recent], np.int64)
            digests = np.frombuffer(b"".join(r[1] for r in self._recent), np.uint8).reshape(-1, _DIGEST)
            return lengths, digests.copy()

    def load_recent(self, lengths: np.ndarray, digests: np.ndarray) -> None:
        """Restore what :meth:`recent` returned (for the store as it is now)."""
        with self._lock:
            self._recent.clear()
            for length, d in zip(np.asarray(lengths).tolist(), np.asarray(digests, np.uint8)):
                self._recent.append((int(length), bytes(d), self.shared.generation))

    # ------------------------------------------------------------------ the shared store
    def match(self, context: np.ndarray, max_len: int = 64) -> Match:
        """:meth:`SuffixAutomaton.match` on the finished requests."""
        return self.shared.match(context, max_len)

    def continuations(self, context: np.ndarray, max_len: int = 64) -> dict[int, int]:
        """:meth:`SuffixAutomaton.continuations` on the finished requests."""
        return self.shared.continuations(context, max_len)

    def read(self, pos: int, n: int, generation: int) -> np.ndarray:
        """:meth:`SuffixAutomaton.read` on the finished requests."""
        return self.shared.read(pos, n, generation)

    def find_near(self, pattern: np.ndarray, lo: int, hi: int, generation: int) -> int:
        """:meth:`SuffixAutomaton.find_near` on the finished requests."""
        return self.shared.find_near(pattern, lo, hi, generation)

    def sequences(self) -> list[np.ndarray]:
        """The finished requests held, oldest first (``(n_i,)`` int64 each)."""
        return self.shared.sequences()

    @property
    def generation(self) -> int:
        return self.shared.generation

    @property
    def n_tokens(self) -> int:
        """Tokens of finished requests held, separators included."""
        return self.shared.n_tokens

    @property
    def n_requests(self) -> int:
        """Finished requests held."""
        return self.shared.n_sequences

    @property
    def n_open(self) -> int:
        """Requests started and not yet finished or aborted."""
        return len(self._open)

    @property
    def nbytes(self) -> int:
        """Bytes of the shared store (never more than ``max_bytes``)."""
        return self.shared.nbytes

    @property
    def max_bytes(self) -> int:
        return self.shared.max_bytes

    @property
    def max_tokens(self) -> int:
        return self.shared.max_tokens

    def __repr__(self) -> str:
        return (f"SuffixMemory({self.n_requests} requests, {self.n_tokens} tokens, {self.n_open} open, "
                f"{self.nbytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB)")


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once per process."""
    global _warm
    if _warm:
        return
    m = SuffixMemory(max_bytes=1 << 20, max_requests=2, private_bytes=1 << 20)
    for seq in ([1, 2, 3, 1, 2, 4], [1, 2, 3], [2, 3, 1]):  # the third add evicts and rebuilds
        m.add(seq)
    m.start("warm-up", [1, 2])
    m.extend("warm-up", [3, 1])
    m.continuations(np.array([1, 2], np.int64))
    m.find_near(np.array([2, 3], np.int64), 0, 8, m.generation)
    m.abort("warm-up")
    _warm = True
