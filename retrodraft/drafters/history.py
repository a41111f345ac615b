"""History: drafts what followed the context in past requests and earlier in this one, and keeps
copying a source through small edits.

Two ideas, each from a workload where model-free drafting pays most:

1. **Memory across requests** (SuffixDecoding, arXiv 2411.04975). Finished requests (prompt and
   output) go into a :class:`~retrodraft.memory.SuffixMemory` that can be shared by many
   drafters and threads; the current request lives in a private one until it ends (so two
   requests' tokens never interleave). Each step the longest suffix of the context seen before -
   up to ``max_match`` tokens, in either memory - is looked up, and what followed it becomes a
   trie scored by frequency and match length (a child's score: its parent's, times the chance
   that a context agreeing on ``L + d`` tokens keeps agreeing, times its share of the
   continuations). The draft depth grows with the match: ``clip(alpha * L, min_depth,
   max_depth)``, SuffixDecoding's adaptive speculation, so a long unique match drafts a deep chain
   and the cost model decides how much of it to verify.

2. **Edit-aware copying.** A *copy pointer* follows the source the output is copying (a prompt
   file, an earlier answer). When the output diverges - a renamed identifier, an inserted line, a
   changed literal - the pointer is not dropped: until the output rejoins the source, the
   source's continuation from a few plausible resume points is drafted (same-length substitution,
   one token replaced, insertion); once the last committed tokens are found again shortly after
   the divergence point, the pointer re-anchors there, so drafting resumes where the source left
   off instead of from a new short match. The edit itself (``source span -> output span``) is
   remembered as a *rule* for the rest of the request, so the next occurrence of a renamed
   identifier is drafted already renamed (with the unedited source as a second branch until the
   rule has proved itself).

Example (one request, prompt = a function, output = the function with ``data`` renamed)::

    prompt  ... def f ( data ) : return data + 1 ...        (source)
    output      def f ( rows ) : return                     diverged at `data`, 1 token since:
    drafts      : return data + 1   (resume after `data`: same-length substitution)
    after `) :` re-anchors; rule (`data` -> `rows`) learnt; the next draft is
                return rows + 1 ...  (and, weaker, return data + 1 ...)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, StateError
from ..memory import SuffixMemory, warm_up
from ..tree import DraftTree
from ._state import expect_array
from .base import Drafter, Outcome, Request
from .lookup import confidence

__all__ = ["History"]

#: Prior that the output resumes the source right after a divergence, per hypothesis: the
#: diverging tokens replaced as many source tokens (a renamed identifier of equal length), one
#: source token (a longer or shorter name), none (an insertion).
RESUME_PRIORS = (0.4, 0.25, 0.15)
#: Re-anchoring: the last ``r`` committed tokens found ``k`` source tokens after the divergence
#: point is accepted when ``k <= REACH[r](j)`` for ``j`` tokens output since the divergence.
_REACH = {1: lambda j: j + 1, 2: lambda j: j + 8, 3: lambda j: 256, 4: lambda j: 512}
_BACK = 32  # r >= 4 may also re-anchor up to this many tokens before the divergence point
_HYPOTHESIS_DEPTH = 12  # tokens drafted from each resume point before the output has rejoined
_MAX_SINCE = 48
_LOCAL_BONUS = 16  # output tokens after a divergence before the pointer is given up
_RULE_SRC, _RULE_OUT = 8, 16  # longest source / output span of a learnt edit rule


@dataclass
class _Pointer:
    """Where in a memory's token stream the output is copying from.

    ``pos`` is the stream index of the next source token, valid for contexts of ``ctx_len``
    tokens; ``pend`` are output tokens of an edit rule still to come before ``pos``; ``run``
    counts tokens agreed with the source lately. After a divergence, ``div`` is the source index
    where it happened and ``since`` the output tokens emitted from there.
    """

    local: bool
    pos: int
    gen: int
    ctx_len: int
    run: int
    pend: tuple = ()
    div: int = -1
    since: list = field(default_factory=list)


class History(Drafter):
    """Drafts continuations from a memory of past requests and the current one, copying edits.

    Args:
        memory: a :class:`~retrodraft.memory.SuffixMemory` to share between drafters (and
            threads); default: a private one with its default budget (256 MiB, 10,000 requests).
        max_match: longest context suffix matched.
        alpha / min_depth / max_depth: draft depth ``clip(alpha * match length, min_depth,
            max_depth)``. SuffixDecoding uses ``alpha = 1`` to size a fixed-length draft; here
            the scores and the cost model cut the tree, so the cap only bounds the work (on a
            simulated 400-token copy with 32 renames, budget 32: 4 / 8 took 89 steps without the
            copy pointer where 2 / 4 took 101, and 21 with it, as 2 / 4 did; 8 / 16 took 25).
        max_fanout: continuations kept per node (the most frequent).
        remember: what a finished request leaves in the memory: ``"all"`` (prompt and output)
            or ``"output"``. A prompt that starts with this drafter's previous request (a chat or
            agent loop resending its history) is stored from where it differs.
        copy: follow a copy pointer through edits (idea 2 above).
        min_anchor: a pointer is set on a match of at least this many tokens.
        local_bytes: byte budget of the current request's memory.
    """

    name = "history"

    def __init__(self, memory: SuffixMemory | None = None, max_match: int = 64, alpha: float = 4.0,
                 min_depth: int = 8, max_depth: int = 64, max_fanout: int = 4, remember: str = "all",
                 copy: bool = True, min_anchor: int = 4, local_bytes: int = 64 << 20) -> None:
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
        self._owns_memory = memory is None
        self.memory = SuffixMemory() if memory is None else memory
        self.local = SuffixMemory(max_bytes=local_bytes, max_requests=1)
        self.max_match, self.alpha = int(max_match), float(alpha)
        self.min_depth, self.max_depth, self.max_fanout = int(min_depth), int(max_depth), int(max_fanout)
        self.remember, self.copy, self.min_anchor = remember, bool(copy), int(min_anchor)
        self._conf = confidence(np.arange(self.max_match + self.max_depth + 2), ceil=0.985).astype(np.float64)
        self._lock = threading.Lock()  # one drafter, one request at a time; guards begin/observe
        self._seq_len = 0  # tokens of the current request taken into self.local
        self._prompt_len = 0
        self._open = False
        self._previous = np.zeros(0, np.int32)  # what this drafter last left in the memory
        self._ptr: _Pointer | None = None
        self._rules: dict[tuple, list] = {}  # source span -> [output span, hits, misses]
        self._rule_first: dict[int, list[tuple]] = {}
        warm_up()

    # ------------------------------------------------------------------ requests
    def begin(self, request: Request) -> None:
        """Store the previous request in the memory and start this one from its prompt."""
        with self._lock:
            self._finalize()
            prompt = np.asarray(request.prompt, np.int64).reshape(-1)
            self.local.clear()
            self.local.start()
            self.local.extend(prompt)
            self._seq_len = self._prompt_len = prompt.shape[0]
            self._open = True
            self._ptr = None
            self._rules, self._rule_first = {}, {}

    def flush(self) -> None:
        """Store the current request in the memory now (``begin`` of the next one does it too)."""
        with self._lock:
            self._finalize()

    def end(self) -> None:
        """The request ended: store it in the memory now."""
        self.flush()

    def _finalize(self) -> None:
        if not self._open:
            return
        self._open = False
        seqs = self.local.sequences()
        if not seqs:
            return
        seq = seqs[-1]
        if self.remember == "output":
            seq = seq[max(0, seq.shape[0] - (self._seq_len - self._prompt_len)):]
        prev = self._previous
        stored = seq
        if self.remember == "all" and 0 < prev.shape[0] < seq.shape[0] and np.array_equal(seq[: prev.shape[0]], prev):
            stored = seq[prev.shape[0]:]  # the prompt resent what this drafter already stored
        if stored.shape[0]:
            self.memory.add(stored)
        self._previous = seq.astype(np.int32)

    def observe(self, outcome: Outcome) -> None:
        """Append the committed tokens to the current request and move the copy pointer."""
        ctx = np.asarray(outcome.context, np.int64)
        committed = np.asarray(outcome.committed, np.int64)
        if committed.shape[0] == 0:
            return
        with self._lock:
            new = np.concatenate([ctx, committed])
            if not self._open:
                self.local.clear()
                self.local.start()
                self._seq_len = self._prompt_len = 0
                self._open = True
            if self._seq_len <= ctx.shape[0]:
                self.local.extend(new[self._seq_len:])
            else:  # a context shorter than what we hold: take what it says was committed
                self.local.extend(committed)
            self._seq_len = new.shape[0]
            if self.copy:
                self._move_pointer(ctx, committed, new)

    def reset(self) -> None:
        """Forget the current request, the copy pointer and rules; the memory too when this
        drafter made it (a shared memory belongs to its owner: call its ``clear()``)."""
        with self._lock:
            self.local.clear()
            self._open = False
            self._seq_len = self._prompt_len = 0
            self._previous = np.zeros(0, np.int32)
            self._ptr = None
            self._rules, self._rule_first = {}, {}
            if self._owns_memory:
                self.memory.clear()

    # ------------------------------------------------------------------ drafting
    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        context = np.ascontiguousarray(context, np.int64)
        root = int(context[-1])
        if budget <= 0 or context.shape[0] < 2:
            return DraftTree.root_only(root)
        parts = []
        for mem in (self.local, self.memory):
            if mem.n_tokens:
                tok, par, sc, _ = mem.draft(context, self._conf, max_len=self.max_match, alpha=self.alpha,
                                            min_depth=self.min_depth, max_depth=self.max_depth, max_nodes=int(budget),
                                            max_fanout=self.max_fanout)
                if tok.shape[0] > 1:
                    parts.append((tok, par, sc))
        ptr = self._ptr
        unedited = None
        if self.copy and ptr is not None and ptr.ctx_len == context.shape[0]:
            depth = min(int(budget), self.max_depth)
            paths, unedited = self._pointer_paths(ptr, depth)
            for path, scores in paths:
                k = len(path)
                parts.append((np.concatenate([[root], path]).astype(np.int64),
                              np.arange(-1, k, dtype=np.int32), np.concatenate([[1.0], scores]).astype(np.float32)))
        if not parts:
            return DraftTree.root_only(root)
        tree = _fuse(root, parts)
        if unedited is not None:
            # Where a learnt edit applies, copying the source unedited - whichever branch drafted
            # it (the pointer or the memory's trie) - has only the rule's remaining chance.
            path, factor = unedited
            _scale_subtree(tree, path, factor)
        return tree.prune(int(budget))

    def _chain_scores(self, run: int, n: int, factor: float = 1.0) -> np.ndarray:
        top = self._conf.shape[0] - 1
        steps = self._conf[np.minimum(run + np.arange(n), top)]
        return factor * np.cumprod(steps)

    def _pointer_paths(self, p: _Pointer, depth: int):
        """Token paths (below the root) the copy pointer predicts with their path scores, and
        ``(unedited path up to where a rule applies, 1 - the rule's confidence)`` or None."""
        mem = self.local if p.local else self.memory
        out = []
        if p.div < 0:
            src = mem.read(p.pos, depth + _RULE_SRC, p.gen)
            edited, at, conf = self._apply_rules(list(p.pend), src, depth)
            if edited:
                s = self._chain_scores(p.run, len(edited))
                if at >= 0:
                    s[at:] *= conf
                out.append((edited, s))
            if at < 0:
                return out, None
            plain = (list(p.pend) + src.tolist())[:depth]  # in case the rule does not apply here
            out.append((plain, self._chain_scores(p.run, len(plain))))
            return out, (plain[: at + 1], 1.0 - conf)
        # Diverged: the source's continuation from each plausible resume point, a short chain
        # each (the step after the output rejoins the source re-anchors and drafts deep again).
        depth = min(depth, _HYPOTHESIS_DEPTH)
        j = len(p.since)
        carry = min(p.run, 64) // 2
        seen = set()
        for q, prior in zip((p.div + j, p.div + 1, p.div), RESUME_PRIORS):
            if q in seen or j > 8:
                continue
            seen.add(q)
            src = mem.read(q, depth + _RULE_SRC, p.gen)
            edited, at, conf = self._apply_rules([], src, depth)
            if edited:
                s = self._chain_scores(carry, len(edited), prior)
                if at >= 0:
                    s[at:] *= conf
                out.append((edited, s))
        return out, None

    def _apply_rules(self, head: list[int], src: np.ndarray, depth: int) -> tuple[list[int], int, float]:
        """``head`` + ``src`` with learnt edit rules applied, cut at ``depth``; also where the first
        rule applied (-1: none) and its confidence."""
        out = list(head)
        at, conf = -1, 1.0
        toks = src.tolist()
        i = 0
        while len(out) < depth and i < len(toks):
            key = self._rule_at(toks, i) if self._rule_first else None
            if key is None:
                out.append(toks[i])
                i += 1
                continue
            value, hits, misses = self._rules[key]
            if at < 0:
                at, conf = len(out), (hits + 1.0) / (hits + misses + 2.0)
            out.extend(value)
            i += len(key)
        return out[:depth], (at if at < depth else -1), conf

    def _rule_at(self, toks: list[int], i: int) -> tuple | None:
        best = None
        for key in self._rule_first.get(toks[i], ()):
            if tuple(toks[i: i + len(key)]) == key and (best is None or len(key) > len(best)):
                best = key
        return best

    # ------------------------------------------------------------------ the copy pointer
    def _move_pointer(self, ctx: np.ndarray, committed: np.ndarray, new: np.ndarray) -> None:
        p = self._ptr
        if p is not None:
            mem = self.local if p.local else self.memory
            if p.gen != mem.generation or p.ctx_len != ctx.shape[0]:
                p = None
        if p is not None:
            toks = committed.tolist()
            if p.div < 0:
                toks = self._follow(p, mem, toks)
            if toks:  # diverged (now or before)
                if p.div < 0:
                    p.div, p.since = p.pos, []
                    p.pend = ()
                p.since.extend(toks)
            p.ctx_len = new.shape[0]
            if p.div >= 0 and not self._reanchor(p, mem, new):
                if len(p.since) > _MAX_SINCE:
                    p = None
        if p is None or p.div >= 0:
            fresh = self._anchor(new)
            if fresh is not None and (p is None or fresh.run >= max(self.min_anchor, len(p.since))):
                p = fresh
        self._ptr = p

    def _follow(self, p: _Pointer, mem: SuffixMemory, toks: list[int]) -> list[int]:
        """Advance ``p`` over the tokens that agree with the source; returns the rest."""
        src = mem.read(p.pos, (len(toks) + 1) * _RULE_SRC, p.gen).tolist()
        i = 0  # into src
        for k, t in enumerate(toks):
            if p.pend:
                if t != p.pend[0]:
                    return toks[k:]
                p.pend = p.pend[1:]
                p.run += 1
                continue
            key = self._rule_at(src, i) if self._rule_first and i < len(src) else None
            if key is not None and t == self._rules[key][0][0]:
                rule = self._rules[key]
                rule[1] += 1
                p.pend = tuple(rule[0][1:])
                p.pos += len(key)
                i += len(key)
                p.run += 1
                continue
            if i >= len(src) or src[i] != t:
                return toks[k:]
            if key is not None:
                self._rules[key][2] += 1  # the source was copied unedited this time
            p.pos += 1
            i += 1
            p.run += 1
        return []

    def _reanchor(self, p: _Pointer, mem: SuffixMemory, new: np.ndarray) -> bool:
        """Find where the source resumes after a divergence; learn the edit as a rule.

        The last ``r`` output tokens (longest first) are looked up shortly after the divergence
        point; the last ``t`` may be left out (another edit right after the resumption, e.g. a
        renamed identifier used twice in a line), and are then followed from the new position.
        """
        j = len(p.since)
        n = new.shape[0]
        for t in range(min(3, j - 1) + 1):
            jt = j - t
            for r in range(min(8, n - t), 0, -1):
                pattern = new[n - t - r: n - t]
                hi = p.div + _REACH[min(r, 4)](jt) + 1
                if p.local:  # the current request is the local stream: not its own occurrence
                    hi = min(hi, mem.n_tokens - t - r)
                s = mem.find_near(pattern, p.div, hi, p.gen)
                if s < 0 and r >= 4:
                    s = mem.find_near(pattern, p.div - _BACK, p.div, p.gen)
                if s < 0:
                    continue
                matched_out = min(r, jt)  # of the pattern, tokens output since the divergence
                src_end = s + r - matched_out  # where the source resumes in the output
                n_out = jt - matched_out
                if src_end > p.div and n_out > 0:
                    self._learn(tuple(mem.read(p.div, src_end - p.div, p.gen).tolist()), tuple(p.since[:n_out]))
                p.run = r + min(p.run, 64) // 2
                p.pos, p.div, p.since, p.pend = s + r, -1, [], ()
                if t:
                    rest = self._follow(p, mem, new[n - t:].tolist())
                    if rest:
                        p.div, p.since = p.pos, rest
                return True
        return False

    def _learn(self, key: tuple, value: tuple) -> None:
        while key and value and key[-1] == value[-1]:  # keep the edit minimal
            key, value = key[:-1], value[:-1]
        if not key or not value or key[0] == value[0] or len(key) > _RULE_SRC or len(value) > _RULE_OUT:
            return
        old = self._rules.get(key)
        if old is not None and old[0] == value:
            old[1] += 1
            return
        self._rules[key] = [value, 0, 0]
        keys = self._rule_first.setdefault(key[0], [])
        if key not in keys:
            keys.append(key)

    def _anchor(self, new: np.ndarray) -> _Pointer | None:
        """A fresh pointer at the longest match of at least ``min_anchor`` tokens, if any; the
        current request wins unless the memory's match is ``_LOCAL_BONUS`` tokens longer (its
        prompt holds the latest version of what is being copied)."""
        best, best_len = None, -1
        for mem in (self.local, self.memory):
            if not mem.n_tokens:
                continue
            m = mem.match(new, self.max_match)
            rank = m.length + (_LOCAL_BONUS if mem is self.local else 0)
            if m.length >= self.min_anchor and rank > best_len:
                best, best_len = _Pointer(mem is self.local, m.pos, m.generation, new.shape[0], m.length), rank
        return best


    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """What was learnt: the past requests held in the memory, oldest first (``tokens``
        ``(total,) int32`` concatenated, ``lengths (n,) int64``), the request in progress stored
        first (as the next :meth:`begin` would), and ``previous`` (``(m,) int32``, the last one
        stored, for recognizing a resent history)."""
        self.flush()
        seqs = self.memory.sequences()
        tokens = np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32)
        return {"tokens": tokens, "lengths": np.array([len(q) for q in seqs], np.int64),
                "previous": self._previous.astype(np.int32)}

    def load_state(self, d: dict) -> None:
        """Refill the memory with the requests saved by :meth:`state` (it replaces what it held)."""
        tokens = expect_array(d, "tokens", np.int32, (None,), self.name)
        lengths = expect_array(d, "lengths", np.int64, (None,), self.name)
        previous = expect_array(d, "previous", np.int32, (None,), self.name)
        if (lengths < 0).any() or int(lengths.sum()) != len(tokens) or (tokens < 0).any() or (previous < 0).any():
            raise StateError("the saved history memory is inconsistent.")
        with self._lock:
            self.memory.clear()
            for seq in np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []:
                self.memory.add(seq.astype(np.int64))
            self._previous = previous.copy()


def _fuse(root: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> DraftTree:
    """One trie of several parents-first (tokens, parents, scores) triples sharing the root."""
    toks, pars, scs = [np.array([root], np.int64)], [np.array([-1], np.int64)], [np.array([1.0], np.float32)]
    offset = 1
    for tok, par, sc in parts:
        p = par[1:].astype(np.int64)
        toks.append(tok[1:])
        pars.append(np.where(p == 0, 0, p + offset - 1))
        scs.append(sc[1:])
        offset += tok.shape[0] - 1
    return DraftTree.from_arrays(np.concatenate(toks), np.concatenate(pars), np.concatenate(scs))


def _scale_subtree(tree: DraftTree, path: list[int], factor: float) -> None:
    """Multiply, in place, the scores of the node reached by ``path`` and of all its descendants."""
    kids, node = tree.children(), 0
    for t in path:
        node = kids[node].get(int(t), -1)
        if node < 0:
            return
    inside = np.zeros(len(tree), bool)
    inside[node] = True
    for i in range(node + 1, len(tree)):
        inside[i] = inside[tree.parents[i]]
    tree.scores[inside] *= np.float32(factor)
