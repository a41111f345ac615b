"""Following requests by their content when rows are reused and compacted."""

import numpy as np

from retrodraft.vllm.rows import ContentRows


def _batch(rows, width=16):
    ids = np.zeros((4, width), np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, np.array([len(r) for r in rows] + [0] * (4 - len(rows)), np.int32)


def test_rows_swapped_between_steps_keep_their_requests():
    rows = ContentRows()
    ids, n = _batch([[1, 2, 3, 7], [4, 5, 6, 8]])
    k1, live = rows.step([[7], [8]], n, ids)
    assert k1[0] != k1[1] and live == set(k1)
    ids, n = _batch([[4, 5, 6, 8, 9, 10], [1, 2, 3, 7, 11]])  # compacted: swapped, 2 and 1 sampled
    k2, live = rows.step([[9, 10], [11]], n, ids)
    assert k2 == [k1[1], k1[0]]


def test_a_request_gone_from_the_batch_is_no_longer_live():
    rows = ContentRows()
    ids, n = _batch([[1, 2, 3], [4, 5, 6]])
    k1, _ = rows.step([[3], [6]], n, ids)
    ids, n = _batch([[4, 5, 6, 1]])
    k2, live = rows.step([[1]], n, ids)
    assert k2 == [k1[1]] and live == {k1[1]}


def test_a_skipped_row_keeps_its_request_and_a_new_prompt_gets_a_new_key():
    rows = ContentRows()
    ids, n = _batch([[1, 2, 3]])
    k1, _ = rows.step([[3]], n, ids)
    ids, n = _batch([[1, 2, 3], [1, 2, 3, 5]])
    k2, live = rows.step([[], [5]], n, ids)  # row 0 not decoding this step; row 1 a new request
    assert k2[0] == k1[0] and k2[1] not in (None, k1[0]) and live == {k1[0], k2[1]}
