"""Edit-aware copying: a pointer that follows the source the output copies, through small edits.

A *copy pointer* follows the source the output is copying (a prompt file, an earlier answer),
held in a :class:`~retrodraft.automaton.SuffixAutomaton`: the current request's own (``local``) or
the store of finished requests. When the output diverges - a renamed identifier, an inserted
line, a changed literal - the pointer is not dropped: until the output rejoins the source, the
source's continuation from a few plausible resume points is drafted (same-length substitution,
one token replaced, insertion); once the last committed tokens are found again shortly after the
divergence point, the pointer re-anchors there, so drafting resumes where the source left off
instead of from a new short match. The edit itself (``source span -> output span``) is
remembered as a *rule* for the rest of the request, so the next occurrence of a renamed
identifier is drafted already renamed (with the unedited source as a second branch until the
rule has proved itself).

Example (prompt = a function, output = the function with ``data`` renamed)::

    prompt  ... def f ( data ) : return data + 1 ...        (source)
    output      def f ( rows ) : return                     diverged at `data`, 1 token since:
    drafts      : return data + 1   (resume after `data`: same-length substitution)
    after `) :` re-anchors; rule (`data` -> `rows`) learnt; the next draft is
                return rows + 1 ...  (and, weaker, return data + 1 ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..automaton import SuffixAutomaton
from ..tree import DraftTree

__all__ = ["CopyPointer", "RESUME_PRIORS"]

#: Prior that the output resumes the source right after a divergence, per hypothesis: the
#: diverging tokens replaced as many source tokens (a renamed identifier of equal length), one
#: source token (a longer or shorter name), none (an insertion).
RESUME_PRIORS = (0.4, 0.25, 0.15)
#: Re-anchoring: the last ``r`` committed tokens found ``k`` source tokens after the divergence
#: point is accepted when ``k <= REACH[r](j)`` for ``j`` tokens output since the divergence.
_REACH = {1: lambda j: j + 1, 2: lambda j: j + 8, 3: lambda j: 256, 4: lambda j: 512}
_BACK = 32  # r >= 4 may also re-anchor up to this many tokens before the divergence point
_HYPOTHESIS_DEPTH = 12  # tokens drafted from each resume point before the output has rejoined
_MAX_SINCE = 48  # output tokens after a divergence before the pointer is given up
_LOCAL_BONUS = 16  # a match in the current request wins unless the store's is this much longer
_RULE_SRC, _RULE_OUT = 8, 16  # longest source / output span of a learnt edit rule
#: Anchoring inside a step's committed tokens, where the step also left the source: the match
#: that ends there must be this long. Replayed on the recorded refactor / json / agent outputs
#: (benchmarks/vllm_replay.py), 4 tokens anchored on chance matches in free text and lost more
#: steps on json and agent than it saved; 6 kept most of the refactor gain; 8 kept none.
_INSIDE_MIN = 6


@dataclass
class _Pointer:
    """Where in an automaton's token stream the output is copying from.

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


class CopyPointer:
    """Follows, through edits, the source the output copies; drafts its continuation.

    Args:
        conf: ``(k,)`` probability that the next token still agrees after ``i`` agreeing ones.
        max_match: longest context suffix matched when anchoring.
        max_depth: deepest path drafted.
        min_anchor: a pointer is set on a match of at least this many tokens.

    Sources: ``local`` is the current request's automaton (prompt and output so far, or None),
    ``store`` the finished requests'. One instance follows one request at a time.
    """

    def __init__(self, conf: np.ndarray, max_match: int = 64, max_depth: int = 64, min_anchor: int = 4) -> None:
        self.conf = np.asarray(conf, np.float64)
        self.max_match, self.max_depth, self.min_anchor = int(max_match), int(max_depth), int(min_anchor)
        self.reset()

    def reset(self) -> None:
        """Forget the pointer and the learnt rules (a new request)."""
        self._ptr: _Pointer | None = None
        self._rules: dict[tuple, list] = {}  # source span -> [output span, hits, misses]
        self._rule_first: dict[int, list[tuple]] = {}

    # ------------------------------------------------------------------ drafting
    def propose(self, local: SuffixAutomaton | None, store: SuffixAutomaton, context: np.ndarray,
                budget: int) -> tuple[DraftTree | None, tuple[list[int], float] | None]:
        """The paths the pointer predicts below ``context[-1]`` as one tree (None: no pointer), and
        ``(unedited path up to where a learnt rule applies, 1 - the rule's confidence)`` or None.

        The second is for the caller's fused tree: where a rule applies, copying the source
        unedited - whichever drafter drafted it - has only the rule's remaining chance.
        """
        p = self._ptr
        if p is None or p.ctx_len != context.shape[0] or (p.local and local is None):
            return None, None
        paths, unedited = self._paths(p, local if p.local else store, min(int(budget), self.max_depth))
        root = int(context[-1])
        tree = None
        for path, scores in paths:
            k = len(path)
            chain = DraftTree.from_arrays(np.concatenate([[root], path]).astype(np.int64), np.arange(-1, k),
                                          np.concatenate([[1.0], scores]).astype(np.float32))
            tree = chain if tree is None else tree.merge(chain)
        return tree, unedited

    def _chain_scores(self, run: int, n: int, factor: float = 1.0) -> np.ndarray:
        top = self.conf.shape[0] - 1
        steps = self.conf[np.minimum(run + np.arange(n), top)]
        return factor * np.cumprod(steps)

    def _paths(self, p: _Pointer, mem: SuffixAutomaton, depth: int):
        """Token paths (below the root) the pointer predicts with their path scores, and the
        unedited path with its factor (see :meth:`propose`) or None."""
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

    # ------------------------------------------------------------------ following the output
    def observe(self, local: SuffixAutomaton | None, store: SuffixAutomaton, context: np.ndarray,
                committed: np.ndarray) -> None:
        """Move the pointer over ``committed`` (``(c,)`` ids appended after ``(n,)`` ``context``),
        re-anchoring or learning an edit where the output left the source. ``local`` already
        holds the committed tokens."""
        ctx = np.asarray(context, np.int64)
        committed = np.asarray(committed, np.int64)
        new = np.concatenate([ctx, committed])
        p = self._ptr
        mem = None
        if p is not None:
            mem = local if p.local else store
            if mem is None or p.gen != mem.generation or p.ctx_len != ctx.shape[0]:
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
            fresh = self._anchor(local, store, new)
            if fresh is not None and (p is None or fresh.run >= max(self.min_anchor, len(p.since))):
                p = fresh
        if p is None and committed.shape[0] > 1:
            p = self._anchor_inside(local, new, committed.shape[0])
        self._ptr = p

    def _follow(self, p: _Pointer, mem: SuffixAutomaton, toks: list[int]) -> list[int]:
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

    def _reanchor(self, p: _Pointer, mem: SuffixAutomaton, new: np.ndarray) -> bool:
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

    def _anchor_inside(self, local: SuffixAutomaton | None, new: np.ndarray, c: int) -> _Pointer | None:
        """A pointer anchored inside the ``c`` committed tokens at the end of ``new`` and moved over
        the rest of them: diverged where they leave the source.

        Why: one step often commits the tokens that copy the source *and* the first edited one
        (``def f(`` then ``rows`` for ``data``). The whole context's suffix then matches nothing,
        no pointer is set, and the edit is never learnt as a rule. The current request is searched
        for the ``_INSIDE_MIN`` to 8 tokens ending ``t`` tokens before the end (fewest ``t``
        first), at their earliest occurrence, as prompt lookup picks one.
        """
        if local is None or not local.n_tokens:
            return None
        n = new.shape[0]
        for t in range(1, c):
            longest = min(8, n - t)
            if longest < _INSIDE_MIN:  # n - t only shrinks as t grows
                break
            for r in dict.fromkeys((longest, _INSIDE_MIN)):
                s = local.find_near(new[n - t - r: n - t], 0, local.n_tokens - t - r, local.generation)
                if s < 0:
                    continue
                p = _Pointer(True, s + r, local.generation, n, r)
                rest = self._follow(p, local, new[n - t:].tolist())
                if rest:
                    p.div, p.since = p.pos, rest
                return p
        return None

    def _anchor(self, local: SuffixAutomaton | None, store: SuffixAutomaton, new: np.ndarray) -> _Pointer | None:
        """A fresh pointer at the longest match of at least ``min_anchor`` tokens, if any; the
        current request wins unless the store's match is ``_LOCAL_BONUS`` tokens longer (its
        prompt holds the latest version of what is being copied)."""
        best, best_len = None, -1
        for mem, is_local in ((local, True), (store, False)):
            if mem is None or not mem.n_tokens:
                continue
            m = mem.match(new, self.max_match)
            rank = m.length + (_LOCAL_BONUS if is_local else 0)
            if m.length >= self.min_anchor and rank > best_len:
                best, best_len = _Pointer(is_local, m.pos, m.generation, new.shape[0], m.length), rank
        return best
