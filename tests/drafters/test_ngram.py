import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.drafters._ngram import NgramTable, claim, context_hash, find
from retrodraft.errors import ConfigError


def test_memory_is_bounded_by_max_bytes():
    for cap in (64 * 1024, 10**6, 3 * 2**20):
        t = NgramTable(8, cap)
        assert t.nbytes <= cap and t.nbytes > cap // 2


def test_too_small_a_table_is_refused():
    with pytest.raises(ConfigError, match="at least"):
        NgramTable(8, 1000)


def test_hash_depends_on_order_and_tokens():
    h = np.array([3, 4, 5])
    assert context_hash(h, 3, 1) != context_hash(h, 3, 2)
    assert context_hash(h, 3, 2) == context_hash(np.array([9, 4, 5]), 3, 2)
    assert context_hash(h, 3, 3) != context_hash(np.array([9, 4, 5]), 3, 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=3), min_size=1, max_size=60))
def test_rows_behave_like_a_dict_until_full(contexts):
    t = NgramTable(2, 64 * (8 + 16 + 12) * 4)  # 256 slots: never full here
    ref = {}
    for i, ctx in enumerate(contexts):
        a = np.array(ctx, np.int64)
        s = claim(t.arrays, np.uint64(context_hash(a, len(a), len(a))), i + 1)
        t.tok[s, 0] = i
        ref[tuple(ctx)] = i
    for ctx, i in ref.items():
        a = np.array(ctx, np.int64)
        s = find(t.keys, np.uint64(context_hash(a, len(a), len(a))))
        assert s >= 0 and t.tok[s, 0] == i


def test_a_full_table_evicts_the_stalest_row_and_keeps_its_size():
    t = NgramTable(2, 64 * (8 + 16 + 12))  # 64 slots
    for i in range(1000):
        a = np.array([i], np.int64)
        s = claim(t.arrays, np.uint64(context_hash(a, 1, 1)), i + 1)
        t.tok[s, 0] = i
    assert t.used == t.slots == 64
    # the most recent key is always findable; a key from the distant past is gone
    last = np.array([999], np.int64)
    assert find(t.keys, np.uint64(context_hash(last, 1, 1))) >= 0
    assert find(t.keys, np.uint64(context_hash(np.array([0], np.int64), 1, 1))) < 0
