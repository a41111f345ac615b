"""The token memory: the suffix automaton against a brute-force reference, its counts, its
eviction within budgets, and the request lifecycle (several open at once, threads, resends)."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrodraft.errors import ConfigError
from retrodraft.automaton import SEP, SuffixAutomaton
from retrodraft.memory import SuffixMemory


# ------------------------------------------------------------------------------------ reference
def _stream(seqs):
    out = []
    for i, s in enumerate(seqs):
        if i:
            out.append(SEP)
        out += [int(t) for t in s]
    return out


def _brute(seqs, ctx, max_len):
    """(length, {next: count}, first next position) of the longest suffix of ctx[-max_len:] that
    occurred in the stream with a token after it."""
    t = _stream(seqs)
    c = [int(x) for x in ctx[-max_len:]]
    for length in range(len(c), 0, -1):
        suf = c[-length:]
        ends = [e for e in range(length - 1, len(t) - 1) if t[e - length + 1: e + 1] == suf]
        if ends:
            nxt = {}
            for e in ends:
                if t[e + 1] != SEP:
                    nxt[t[e + 1]] = nxt.get(t[e + 1], 0) + 1
            return length, nxt, ends[0] + 1
    return 0, {}, -1


def _check_against_brute(mem, seqs, ctx, max_len):
    length, nxt, pos = _brute(seqs, ctx, max_len)
    m = mem.match(np.asarray(ctx, np.int64), max_len)
    assert m.length == length, (seqs, ctx, max_len)
    if length:
        assert m.pos == pos
        assert mem.continuations(np.asarray(ctx, np.int64), max_len) == nxt


# ------------------------------------------------------------------------------------ automaton
def test_memory_docstring_example():
    m = SuffixMemory()
    m.add([5, 6, 7, 8])
    m.add([1, 6, 7, 9])
    hit = m.match(np.array([4, 6, 7]))
    assert hit.length == 2 and hit.count == 2
    assert m.continuations(np.array([4, 6, 7])) == {8: 1, 9: 1}
    assert m.read(hit.pos, 4, hit.generation).tolist() == [8]  # stops at the request boundary
    assert m.sequences()[1].tolist() == [1, 6, 7, 9]


@settings(max_examples=60, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(0, 4), max_size=30), min_size=1, max_size=5),
       tail=st.lists(st.lists(st.integers(0, 4), max_size=6), max_size=4),
       queries=st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.integers(1, 10)),
                        min_size=1, max_size=6))
def test_memory_lookups_match_brute_force(seqs, tail, queries):
    # Finished sequences, then an open one extended chunk by chunk (as a request is decoded).
    m = SuffixAutomaton(max_bytes=1 << 20)
    for s in seqs:
        m.add(s)
    m.add([])
    for chunk in tail:
        m.append(chunk)
    held = seqs + [sum(tail, [])]
    for ctx, max_len in queries:
        _check_against_brute(m, held, ctx, max_len)
        # the open sequence's own suffix: only earlier occurrences count
        if held[-1]:
            _check_against_brute(m, held, held[-1], max_len)


def test_context_occurring_only_at_the_end_is_not_a_match():
    m = SuffixAutomaton()
    m.append([1, 2, 3, 4])
    assert m.match(np.array([1, 2, 3, 4])).length == 0  # nothing follows it
    m.append([9, 3, 4])
    assert m.match(np.array([9, 3, 4])).length == 2  # [3, 4] occurred before, followed by 9
    assert m.continuations(np.array([9, 3, 4])) == {9: 1}


def test_periodic_text_counts_are_exact():
    # "1 1 1 ..." has suffix-link chains as long as the text: counts fall back to a full recount.
    m = SuffixAutomaton()
    m.add([1] * 1500)
    assert m.continuations(np.array([1, 1])) == {1: 1498}
    m.add([])
    m.append([1] * 1200)
    assert m.continuations(np.array([1, 1])) == {1: 1498 + 1198}


def test_eviction_keeps_bytes_and_requests_under_budget():
    rng = np.random.default_rng(0)
    m = SuffixMemory(max_bytes=1 << 16, max_requests=7)
    added = []
    for i in range(200):
        s = rng.integers(0, 6, int(rng.integers(1, 90))).tolist()
        m.add(s)
        added.append(s)
        assert m.nbytes <= m.max_bytes
        assert m.n_requests <= 7
        assert m.n_tokens <= m.max_tokens
    kept = [s.tolist() for s in m.sequences()]
    assert kept == added[-len(kept):]  # the oldest went first
    assert m.generation > 0  # evictions happened
    for q in range(20):
        _check_against_brute(m, kept, rng.integers(0, 6, 8), 6)


def test_one_request_longer_than_the_budget_keeps_its_tail():
    m = SuffixAutomaton(max_bytes=1 << 16, max_sequences=1)
    m.add([])
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 50, 3000)
    for i in range(0, 3000, 100):
        m.append(seq[i: i + 100])
        assert m.nbytes <= m.max_bytes
    held = m.sequences()[-1]
    assert 0 < held.size < 3000 and held.tolist() == seq[-held.size:].tolist()
    _check_against_brute(m, [held.tolist()], seq[-40:-20], 10)


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigError, match="max_bytes"):
        SuffixMemory(max_bytes=1000)
    with pytest.raises(ConfigError, match="max_requests"):
        SuffixMemory(max_requests=0)
    with pytest.raises(ConfigError, match="private_bytes"):
        SuffixMemory(private_bytes=1000)
    with pytest.raises(ConfigError, match="token ids"):
        SuffixMemory().add([1, -5])


def test_shared_memory_is_thread_safe():
    # 8 threads add their own sequences and look up concurrently; nothing is lost or mixed.
    m = SuffixMemory()
    errors = []

    def work(t):
        rng = np.random.default_rng(t)
        try:
            for i in range(25):
                seq = (t * 1000 + rng.integers(0, 40, 60)).tolist()
                m.add(seq)
                hit = m.match(np.asarray(seq[:20]))
                assert hit.length == 20
                assert seq[20] in m.continuations(np.asarray(seq[:20]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    _run_threads(work, 8)
    assert not errors, errors
    seqs = m.sequences()
    assert len(seqs) == 200
    for s in seqs:  # every stored request is one thread's, whole
        assert s.size == 60 and len(set((s // 1000).tolist())) == 1


# ------------------------------------------------------------------------------------ lifecycle
def test_open_requests_are_private_until_finished():
    m = SuffixMemory()
    m.start("a", [1, 2, 3])
    m.start("b", [7, 8])
    m.extend("a", [4, 5])
    m.extend("b", [9])
    assert m.n_open == 2 and m.n_requests == 0
    assert m.match(np.array([2, 3])).length == 0  # nobody else sees an open request
    a = m.private("a")
    assert a.sequences()[0].tolist() == [1, 2, 3, 4, 5]
    assert a.continuations(np.array([2, 3])) == {4: 1}
    assert m.private("b").match(np.array([2, 3])).length == 0  # nor does another open one
    m.finish("a")
    assert m.private("a") is None and m.n_open == 1
    assert [s.tolist() for s in m.sequences()] == [[1, 2, 3, 4, 5]]
    assert m.continuations(np.array([2, 3])) == {4: 1}
    m.abort("b")  # cancelled: never stored
    assert m.n_open == 0 and [s.tolist() for s in m.sequences()] == [[1, 2, 3, 4, 5]]


def test_finish_output_only_keeps_what_followed_the_prompt():
    m = SuffixMemory()
    m.start(1, [1, 2, 3])
    m.extend(1, [4, 5])
    m.extend(1, [6])
    m.finish(1, with_prompt=False)
    assert [s.tolist() for s in m.sequences()] == [[4, 5, 6]]


def test_lifecycle_errors_name_the_request():
    m = SuffixMemory()
    m.start("x", [1])
    with pytest.raises(ConfigError, match="'x' is already open"):
        m.start("x", [2])
    for call in (lambda: m.extend("y", [1]), lambda: m.finish("y"), lambda: m.abort("y")):
        with pytest.raises(ConfigError, match="'y' is not open"):
            call()
    with pytest.raises(ConfigError, match="token ids"):
        m.extend("x", [-1])


def test_private_budget_keeps_the_tail_and_finishing_stores_it():
    m = SuffixMemory(private_bytes=1 << 16)
    rng = np.random.default_rng(2)
    seq = rng.integers(0, 50, 3000)
    m.start(0, seq[:100])
    for i in range(100, 3000, 100):
        m.extend(0, seq[i: i + 100])
        assert m.private(0).nbytes <= 1 << 16
    m.finish(0)
    held = m.sequences()[-1]
    assert 0 < held.size < 3000 and held.tolist() == seq[-held.size:].tolist()


def test_a_prompt_resending_a_finished_request_is_stored_from_where_it_differs():
    m = SuffixMemory()
    rng = np.random.default_rng(3)
    p1, o1 = rng.integers(0, 50, 30), rng.integers(50, 90, 20)
    m.start("t1", p1)
    m.extend("t1", o1)
    m.finish("t1")
    other = rng.integers(100, 150, 25)  # another conversation in between
    m.start("u", other)
    m.finish("u")
    p2 = np.concatenate([p1, o1, rng.integers(0, 50, 10)])
    m.start("t2", p2)
    m.extend("t2", rng.integers(50, 90, 20))
    m.finish("t2")
    assert [s.size for s in m.sequences()] == [50, 25, 30]
    # the third turn resends the second whole (not only what the second stored)
    p3 = np.concatenate([p2, m.sequences()[-1][10:], [1, 2]])
    m.start("t3", p3)
    m.finish("t3")
    assert m.sequences()[-1].tolist() == [1, 2]
    lengths, digests = m.recent()
    assert lengths.tolist() == [50, 25, 80, 82] and digests.shape == (4, 16)


def test_resend_after_an_eviction_is_stored_whole():
    m = SuffixMemory(max_bytes=1 << 16, max_requests=2)
    m.start(0, [1, 2, 3])
    m.finish(0)
    m.add([7, 7])
    m.add([8, 8])  # evicts [1, 2, 3]: a resend of it must not be cut
    m.start(1, [1, 2, 3, 4])
    m.finish(1)
    assert m.sequences()[-1].tolist() == [1, 2, 3, 4]


def test_recent_round_trip():
    m = SuffixMemory()
    m.start(0, [1, 2, 3])
    m.finish(0)
    lengths, digests = m.recent()
    fresh = SuffixMemory()
    fresh.add([1, 2, 3])
    fresh.load_recent(lengths, digests)
    fresh.start(1, [1, 2, 3, 9])
    fresh.finish(1)
    assert [s.tolist() for s in fresh.sequences()] == [[1, 2, 3], [9]]


def test_many_open_requests_in_threads_are_stored_whole():
    # 8 threads each run 20 requests (start, 5 extends, finish or abort) against one memory.
    m = SuffixMemory()
    errors = []

    def work(t):
        rng = np.random.default_rng(t)
        try:
            for i in range(20):
                rid = (t, i)
                seq = t * 1000 + rng.integers(0, 40, 36)
                m.start(rid, seq[:6])
                for k in range(6, 36, 6):
                    m.extend(rid, seq[k: k + 6])
                    assert m.private(rid).sequences()[0].tolist() == seq[: k + 6].tolist()
                if i % 4 == 3:
                    m.abort(rid)
                else:
                    m.finish(rid)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    _run_threads(work, 8)
    assert not errors, errors
    seqs = m.sequences()
    assert m.n_open == 0 and len(seqs) == 8 * 15
    for s in seqs:
        assert s.size == 36 and len(set((s // 1000).tolist())) == 1


def _run_threads(work, n: int) -> None:
    """Run ``work(t)`` for t in 0..n-1 on n threads at once and wait for all of them."""
    threads = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
