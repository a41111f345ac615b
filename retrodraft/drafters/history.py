"""History: drafts what followed the context in past requests and earlier in this one, and keeps
copying a source through small edits.

A thin drafter over three parts:

* a :class:`~retrodraft.memory.SuffixMemory` (possibly shared by many drafters and threads): the
  current request is opened in it at :meth:`History.begin`, extended at every
  :meth:`History.observe` and finished at :meth:`History.end`, when its prompt and output join
  the store of finished requests;
* the suffix-tree policy (:mod:`.suffix_tree`, SuffixDecoding's idea): the continuation trie of
  the longest matched suffix, drafted from the current request and from the finished ones;
* the copy pointer (:mod:`.copying`): the source being copied, followed through edits.

Each step their trees are fused (:meth:`~retrodraft.tree.DraftTree.merge`); where a learnt edit
applies, the unedited copy is scored down (:meth:`~retrodraft.tree.DraftTree.rescored`).
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from ..errors import ConfigError, StateError
from ..automaton import SuffixAutomaton
from ..memory import SuffixMemory, warm_up
from ..tree import DraftTree
from ._confidence import confidence
from ._state import expect_array
from .base import Drafter, Outcome, Request
from .copying import CopyPointer
from .suffix_tree import SuffixTree

__all__ = ["History"]

_ids = itertools.count()  # request ids unique across the drafters sharing a memory


class History(Drafter):
    """Drafts continuations from a memory of past requests and the current one, copying edits.

    Args:
        memory: a :class:`~retrodraft.memory.SuffixMemory` to share between drafters (and
            threads); default: a private one with its default budget (256 MiB, 10,000 requests).
        max_match: longest context suffix matched.
        alpha / min_depth / max_depth: draft depth ``clip(alpha * match length, min_depth,
            max_depth)``. SuffixDecoding uses ``alpha = 1`` to size a fixed-length draft; here
            the scores and the cost model cut the tree, so the cap only bounds the work.
        max_fanout: continuations kept per node (the most frequent).
        remember: what a finished request leaves in the memory: ``"all"`` (prompt and output)
            or ``"output"``. A prompt that resends a recently finished request (a chat or agent
            loop resending its history) is stored from where it differs.
        copy: follow a copy pointer through edits (:mod:`.copying`).
        min_anchor: a pointer is set on a match of at least this many tokens.
    """

    name = "history"

    def __init__(self, memory: SuffixMemory | None = None, max_match: int = 64, alpha: float = 4.0,
                 min_depth: int = 8, max_depth: int = 64, max_fanout: int = 4, remember: str = "all",
                 copy: bool = True, min_anchor: int = 4) -> None:
        for label, v, lo, hi in (("max_match", max_match, 1, 4096), ("min_depth", min_depth, 1, 1024),
                                 ("max_depth", max_depth, 1, 1024), ("max_fanout", max_fanout, 1, 64),
                                 ("min_anchor", min_anchor, 1, 4096)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ConfigError(f"alpha must be a number > 0, got {alpha!r}.")
        if remember not in ("all", "output"):
            raise ConfigError(f"remember must be 'all' or 'output', got {remember!r}.")
        if memory is not None and not isinstance(memory, SuffixMemory):
            raise ConfigError(f"memory must be a retrodraft.memory.SuffixMemory, got {type(memory).__name__}.")
        warm_up()
        self._owns_memory = memory is None
        self.memory = SuffixMemory() if memory is None else memory
        self.remember = remember
        conf = confidence(np.arange(max_match + max_depth + 2), ceil=0.985).astype(np.float64)
        self.suffix_tree = SuffixTree(conf, max_match, alpha, min_depth, max_depth, max_fanout)
        self.copier = CopyPointer(conf, max_match, max_depth, min_anchor) if copy else None
        self._lock = threading.Lock()  # one drafter, one request at a time; guards begin/observe/end
        self._request = None  # id of the open request in self.memory, None when none is
        self._seq_len = 0  # tokens of the current request taken into the memory

    # ------------------------------------------------------------------ requests
    def begin(self, request: Request) -> None:
        """Finish the previous request if :meth:`end` was not called, and open this one."""
        with self._lock:
            self._finish()
            self._open(np.asarray(request.prompt, np.int64).reshape(-1))

    def end(self) -> None:
        """Finish the current request: its prompt and output join the memory."""
        with self._lock:
            self._finish()

    def _open(self, prompt: np.ndarray) -> None:
        self._request = ("history", next(_ids))
        self.memory.start(self._request, prompt)
        self._seq_len = prompt.shape[0]
        if self.copier is not None:
            self.copier.reset()

    def _finish(self) -> None:
        if self._request is not None:
            self.memory.finish(self._request, with_prompt=self.remember == "all")
            self._request = None

    @property
    def local(self) -> SuffixAutomaton | None:
        """The current request's tokens (prompt and output so far), None between requests."""
        rid = self._request
        return None if rid is None else self.memory.private(rid)

    def observe(self, outcome: Outcome) -> None:
        """Append the committed tokens to the current request and move the copy pointer."""
        ctx = np.asarray(outcome.context, np.int64)
        committed = np.asarray(outcome.committed, np.int64)
        if committed.shape[0] == 0:
            return
        with self._lock:
            if self._request is None:  # observed without begin: a request with no prompt
                self._open(np.zeros(0, np.int64))
            if self._seq_len <= ctx.shape[0]:
                self.memory.extend(self._request, np.concatenate([ctx[self._seq_len:], committed]))
            else:  # a context shorter than what we hold: take what it says was committed
                self.memory.extend(self._request, committed)
            self._seq_len = ctx.shape[0] + committed.shape[0]
            if self.copier is not None:
                self.copier.observe(self.local, self.memory.shared, ctx, committed)

    def reset(self) -> None:
        """Forget the current request, the copy pointer and rules; the memory too when this
        drafter made it (a shared memory belongs to its owner: call its ``clear()``)."""
        with self._lock:
            if self._request is not None:
                self.memory.abort(self._request)
                self._request = None
            self._seq_len = 0
            if self.copier is not None:
                self.copier.reset()
            if self._owns_memory:
                self.memory.clear()

    # ------------------------------------------------------------------ drafting
    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        context = np.ascontiguousarray(context, np.int64)
        root = int(context[-1])
        if budget <= 0 or context.shape[0] < 2:
            return DraftTree.root_only(root)
        local, store = self.local, self.memory.shared
        tree = DraftTree.root_only(root)
        for mem in (local, store):
            if mem is not None and mem.n_tokens:
                part = self.suffix_tree.draft(mem, context, budget)
                if len(part) > 1:
                    tree = tree.merge(part)
        if self.copier is not None:
            part, unedited = self.copier.propose(local, store, context, budget)
            if part is not None:
                tree = tree.merge(part)
            if unedited is not None:
                tree = tree.rescored(*unedited)
        return tree.prune(int(budget))

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """What was learnt, with the request in progress finished first (as :meth:`end` does): the
        finished requests held in the memory, oldest first (``tokens (total,) int32``
        concatenated, ``lengths (n,) int64``), and the recently finished ones a resent prompt is
        recognized by (``recent_lengths (k,) int64``, ``recent_digests (k, 16) uint8``)."""
        self.end()
        seqs = self.memory.sequences()
        tokens = np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32)
        recent_lengths, recent_digests = self.memory.recent()
        return {"tokens": tokens, "lengths": np.array([len(q) for q in seqs], np.int64),
                "recent_lengths": recent_lengths, "recent_digests": recent_digests}

    def load_state(self, d: dict) -> None:
        """Refill the memory with the requests saved by :meth:`state` (it replaces what it held)."""
        tokens = expect_array(d, "tokens", np.int32, (None,), self.name)
        lengths = expect_array(d, "lengths", np.int64, (None,), self.name)
        recent_lengths = expect_array(d, "recent_lengths", np.int64, (None,), self.name)
        recent_digests = expect_array(d, "recent_digests", np.uint8, (recent_lengths.shape[0], 16), self.name)
        if (lengths < 0).any() or int(lengths.sum()) != len(tokens) or (tokens < 0).any() or (recent_lengths < 0).any():
            raise StateError("the saved history memory is inconsistent.")
        with self._lock:
            self.memory.clear()
            for seq in np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []:
                self.memory.add(seq.astype(np.int64))
            self.memory.load_recent(recent_lengths, recent_digests)
