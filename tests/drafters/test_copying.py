"""The copy pointer on its own: anchoring, following, resuming after an edit, learning rules."""

import numpy as np

from helpers import has_path

from retrodraft.drafters._confidence import confidence
from retrodraft.drafters.copying import RESUME_PRIORS, CopyPointer
from retrodraft.automaton import SuffixAutomaton

CONF = confidence(np.arange(200), ceil=0.985)


class _Copy:
    """A request whose prompt holds ``source``; the output is fed step by step."""

    def __init__(self, source, store=None):
        rng = np.random.default_rng(0)
        self.prompt = np.concatenate([rng.integers(5000, 6000, 10), source, rng.integers(5000, 6000, 5)])
        self.local = SuffixAutomaton(1 << 20, 1)
        self.local.add(self.prompt)
        self.store = store if store is not None else SuffixAutomaton(1 << 20)
        self.cp = CopyPointer(CONF)
        self.ctx = self.prompt.astype(np.int64)

    def feed(self, tokens):
        tokens = np.asarray(tokens, np.int64)
        self.local.append(tokens)
        self.cp.observe(self.local, self.store, self.ctx, tokens)
        self.ctx = np.concatenate([self.ctx, tokens])

    def propose(self, budget=32):
        return self.cp.propose(self.local, self.store, self.ctx, budget)


def _source(n=200, seed=1):
    return np.random.default_rng(seed).permutation(np.arange(100, 5000))[:n]  # one place per token



def test_no_pointer_before_a_long_enough_match():
    src = _source()
    c = _Copy(src)
    c.feed(src[:3])  # 3 < min_anchor
    assert c.propose() == (None, None)
    c.feed(src[3:4])
    tree, unedited = c.propose(16)
    assert unedited is None and tree.paths() == [src[4:20].tolist()]
    assert tree.root == src[3]


def test_following_keeps_drafting_the_source_and_scores_fall():
    src = _source()
    c = _Copy(src)
    for i in range(0, 60, 7):
        c.feed(src[i: i + 7])
    tree, _ = c.propose(32)
    assert tree.paths() == [src[63:95].tolist()]
    assert np.all(np.diff(tree.scores) <= 0) and tree.scores[-1] > 0.5


def test_a_pointer_is_only_for_the_context_it_was_moved_to():
    src = _source()
    c = _Copy(src)
    c.feed(src[:10])
    assert c.cp.propose(c.local, c.store, c.ctx[:-1], 8) == (None, None)


def test_after_a_substitution_the_resume_points_are_drafted():
    src = _source()
    c = _Copy(src)
    c.feed(src[:50])
    c.feed([7])  # src[50] replaced by 7
    tree, _ = c.propose(32)
    assert has_path(tree, src[51:63])  # same length substitution: resume after src[50]
    assert has_path(tree, src[50:62])  # insertion: src[50] still to come
    assert tree.max_depth <= 12  # short chains until the output rejoins the source
    first = {int(tree.tokens[i]): float(tree.scores[i]) for i in range(1, len(tree)) if tree.parents[i] == 0}
    assert first[int(src[51])] > first[int(src[50])]  # priors: substitution before insertion
    assert RESUME_PRIORS[0] > RESUME_PRIORS[2]
    c.feed(src[51:53])  # rejoined: re-anchored, deep again
    tree, _ = c.propose(32)
    assert tree.paths() == [src[53:85].tolist()]


def _renamed():
    """A source whose token at 40 recurs at 120, and the output with it renamed to 7 both times."""
    src = _source()
    x = int(src[40])
    src[120] = x
    out = src.copy()
    out[out == x] = 7
    return src, out, x


def test_a_rename_is_learnt_and_applied_to_the_next_occurrence():
    src, out, x = _renamed()
    c = _Copy(src)
    c.feed(out[:40])
    c.feed(out[40:41])  # diverges at 40
    c.feed(out[41:44])  # rejoins: the rule x -> 7 is learnt
    assert c.cp._rules == {(x,): [(7,), 0, 0]}
    c.feed(out[44:110])
    tree, unedited = c.propose(32)
    assert has_path(tree, out[110:142])  # through the renamed second occurrence
    assert has_path(tree, src[110:142])  # the unedited source: a second branch
    path, factor = unedited
    assert path == src[110:121].tolist() and 0 < factor < 1
    c.cp.reset()
    assert c.cp._rules == {} and c.propose() == (None, None)


def test_a_step_that_copies_then_edits_anchors_and_learns_the_edit():
    src, out, x = _renamed()
    c = _Copy(src)
    c.feed(out[:3])  # too short to anchor
    c.feed(out[3:41])  # one step: 37 copied tokens, then the edit - the context's suffix matches nothing
    tree, _ = c.propose(32)
    assert tree is not None and has_path(tree, src[41:53])  # resuming after the edit is drafted
    c.feed(out[41:44])
    assert c.cp._rules == {(x,): [(7,), 0, 0]}  # learnt: the next occurrence is drafted renamed
    c.feed(out[44:110])
    tree, _ = c.propose(32)
    assert has_path(tree, out[110:142])


def test_a_short_chance_match_inside_a_step_sets_no_pointer():
    src = _source()
    c = _Copy(src)
    c.feed(np.concatenate([[9, 9], src[:5], [8]]))  # 5 copied tokens < _INSIDE_MIN, then a new one
    assert c.propose() == (None, None)


def test_a_pointer_into_the_store_dies_with_its_generation():
    src = _source()
    store = SuffixAutomaton(1 << 20)
    store.add(src)
    c = _Copy(np.zeros(0, np.int64), store)  # the prompt does not hold the source: the store does
    c.feed(src[:20])
    tree, _ = c.propose(8)
    assert tree.paths() == [src[20:28].tolist()]
    store.clear()
    c.feed(src[20:22])
    assert c.propose() == (None, None)
