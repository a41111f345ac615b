"""benchmarks/vllm_replay.py: its n-gram proposer is vLLM's (checked against vLLM's own kernel where
vLLM is installed), and a replayed request takes the steps vLLM's loop would."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import vllm_replay as R  # noqa: E402


def test_ngram_takes_the_longest_suffix_at_its_earliest_occurrence():
    # suffix [1, 2, 3]: the 3-gram occurs at 0 and 5; the earliest wins -> what followed it (7, 8, ...)
    t = np.array([1, 2, 3, 7, 8, 1, 2, 3, 9, 4, 1, 2, 3])
    assert R.ngram_chain(t, 2, 4, 3).tolist() == [7, 8, 1]
    # a longer n beats an earlier, shorter one: [9, 1, 2] occurs only at 4..6
    t = np.array([1, 2, 5, 5, 9, 1, 2, 6, 9, 1, 2])
    assert R.ngram_chain(t, 2, 4, 2).tolist() == [6, 9]


def test_ngram_stops_at_the_row_end_and_needs_min_n():
    t = np.array([4, 4, 4])  # [4, 4] occurs at 0 (overlapping the suffix): one token follows
    assert R.ngram_chain(t, 2, 4, 16).tolist() == [4]
    assert R.ngram_chain(np.array([1, 2, 3, 1]), 2, 4, 8).tolist() == []  # only a 1-gram matches
    assert R.ngram_chain(np.array([1]), 2, 4, 8).tolist() == []


def test_ngram_is_vllms():
    ngram = pytest.importorskip("vllm.v1.spec_decode.ngram_proposer")
    rng = np.random.default_rng(0)
    for trial in range(300):
        t = rng.integers(0, 3 + trial % 6, size=int(rng.integers(1, 60))).astype(np.int32)
        k = int(rng.integers(1, 12))
        want = ngram._find_longest_matched_ngram_and_propose_tokens(t, 2, 4, 4096, k)
        assert R.ngram_chain(t, 2, 4, k).tolist() == want.tolist(), (t.tolist(), k)


class _Fixed:
    """A proposer that always drafts the same chain (to count steps by hand)."""

    def __init__(self, chain):
        self.chain = np.asarray(chain, np.int64)

    def propose(self, sampled, tokens):
        return self.chain


def test_a_replayed_step_commits_the_agreeing_prefix_and_the_bonus():
    out = np.array([5, 1, 2, 3, 4, 9, 9])
    # after the first token (prefill): drafts [1, 2, 7] -> commits 1, 2 and the bonus 3; then the
    # same draft agrees with nothing -> 4; then nothing -> 9; then 9: four steps for six tokens
    r = R.replay_request(_Fixed([1, 2, 7]), np.array([0, 0]), out, k=16)
    assert r["steps"] == 4 and r["drafted"] == 12
    assert R.replay_request(_Fixed([1, 2, 3, 4, 9, 9]), np.array([0]), out, k=16)["steps"] == 1


class _Oracle:
    """Drafts greedy's own next tokens (every drafted token is accepted)."""

    def __init__(self, prompt, out):
        self.full = np.concatenate([prompt, out])

    def propose(self, sampled, tokens):
        return self.full[tokens.shape[0]:]


def test_a_chain_is_cut_to_k():
    prompt, out = np.array([0]), np.arange(1, 12)  # 10 tokens after the first
    for k, steps in ((16, 1), (4, 2), (2, 4), (1, 5)):  # k drafted + the bonus per step
        assert R.replay_request(_Oracle(prompt, out), prompt, out, k=k)["steps"] == steps


def test_retrodraft_replays_with_the_real_proposer():
    out = np.tile(np.arange(10, 30), 6)
    method = R.RetroDraftMethod(k=8, vocab=64, options={})
    first = R.replay_request(method, np.arange(10, 30), out, k=8)
    second = R.replay_request(method, np.arange(10, 30), out, k=8)  # the memory holds the first request
    stats = method.close()
    assert stats["requests"] == 2 and first["steps"] < len(out) - 1
    assert second["steps"] <= first["steps"]
    assert (len(out) - 1) / second["steps"] > 4


def test_suffix_replays_arctic_inference_as_vllm_drives_it():
    pytest.importorskip("arctic_inference.suffix_decoding")  # .venv-vllm after benchmarks/install_arctic.sh
    out = np.tile(np.arange(10, 30), 6)
    method = R.make_method("suffix", 16, "unused")
    first = R.replay_request(method, np.arange(10, 30), out, k=16)
    second = R.replay_request(method, np.arange(40, 60), out, k=16)  # the cache holds the first output
    method.close()
    assert first["steps"] < len(out) - 1  # the prompt's and the output's repeats are drafted
    assert second["steps"] <= first["steps"]
    assert first["drafted"] > 0


def test_the_copy_oracle_copies_the_longest_earlier_run_of_the_future():
    prompt = np.array([1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 7])
    out = np.array([1, 2, 3, 4, 5, 6])  # [2, 3, 4, 5] occurs in the prompt; 6 nowhere
    oracle = R.make_method("copy-oracle", 16, "unused")
    r = R.replay_request(oracle, prompt, out, k=16)
    assert r["steps"] == 1 and r["drafted"] == 4  # 4 copied + 6 as the bonus
    assert R.replay_request(oracle, prompt, out, k=2)["steps"] == 2  # k caps the copy
