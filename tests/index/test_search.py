"""Suffix-array lookups against brute force on random token streams."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.index.build import suffix_array
from retrodraft.index.search import continuations, count_trie, longest_match

streams = st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=30), min_size=1, max_size=5)


def _stream(docs):
    parts = []
    for d in docs:
        parts += d + [-1]
    return np.array(parts, np.int32)


def _occurrences(tokens, pattern):
    n, m = len(tokens), len(pattern)
    return [i for i in range(n - m + 1) if list(tokens[i:i + m]) == list(pattern)]


@settings(max_examples=150, deadline=None)
@given(streams)
def test_suffix_array_sorts_suffixes_with_separators_last(docs):
    t = _stream(docs)
    key = lambda i: [x if x >= 0 else 10**9 for x in t[i:].tolist()]
    assert suffix_array(t).tolist() == sorted(range(len(t)), key=key)


@settings(max_examples=150, deadline=None)
@given(streams, st.lists(st.integers(0, 5), min_size=1, max_size=6), st.integers(1, 3))
def test_longest_match_and_its_rows_equal_brute_force(docs, context, min_len):
    t = _stream(docs)
    sa = suffix_array(t)
    ctx = np.array(context, np.int32)
    length, lo, hi = longest_match(t, sa, ctx, min_len)
    want = 0
    for L in range(len(ctx), min_len - 1, -1):
        if _occurrences(t, ctx[len(ctx) - L:]):
            want = L
            break
    assert length == want
    if want:
        assert sorted(sa[lo:hi].tolist()) == _occurrences(t, ctx[len(ctx) - want:])
        conts = continuations(t, sa, lo, hi, want, 3, 1000)
        expect = []
        for i in _occurrences(t, ctx[len(ctx) - want:]):
            c = []
            for j in range(i + want, min(i + want + 3, len(t))):
                if t[j] < 0:
                    break
                c.append(int(t[j]))
            expect.append(c + [-1] * (3 - len(c)))
        assert sorted(conts.tolist()) == sorted(expect)


def test_count_trie_sums_weights_along_shared_prefixes():
    conts = np.array([[1, 2, -1], [1, 3, 4], [1, 2, 5]], np.int32)
    tok, par, w = count_trie(conts, np.array([1.0, 1.0, 2.0]), 9)
    paths = {}
    for i in range(1, len(tok)):
        node, path = i, []
        while node > 0:
            path.append(int(tok[node]))
            node = par[node]
        paths[tuple(reversed(path))] = w[i]
    assert paths == {(1,): 4.0, (1, 2): 3.0, (1, 3): 1.0, (1, 3, 4): 1.0, (1, 2, 5): 2.0}
    assert tok[0] == 9 and w[0] == 4.0
