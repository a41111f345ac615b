"""The proposer against a simulated vLLM batch loop (no vLLM needed): a deterministic "model",
rows that move, requests that end; chains verified as vLLM does (longest accepted prefix + bonus)."""

import json
from types import SimpleNamespace

import numpy as np

from retrodraft.vllm import proposer as P
from retrodraft.vllm import speculative_config

VOCAB, WIDTH = 64, 512


def _model(ctx):
    """Greedy next token: a function of the last three tokens (so outputs repeat their patterns)."""
    return int((ctx[-1] * 7 + ctx[-2] * 3 + ctx[-3] + 5) % VOCAB)


def _proposer(k=8, **options):
    name = speculative_config(num_speculative_tokens=k, **options)["model"].rsplit(".", 1)[1]
    cfg = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=k),
                          model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB, tokenizer=None, model="none"))
    p = getattr(P, name)(cfg)
    p.load_model(None)  # not called by a runner: the content fallback
    return p


class _Engine:
    """Rows of (tokens, budget left); ``shuffle`` permutes rows every step (compaction)."""

    def __init__(self, proposer, shuffle=False):
        self.p, self.rows, self.shuffle, self.rng = proposer, [], shuffle, np.random.default_rng(0)
        self.chains = []

    def add(self, prompt, max_new):
        toks = list(prompt)
        toks.append(_model(toks))  # prefill samples the first token
        self.rows.append([toks, max_new - 1, [toks[-1]]])
        self.chains.append([])

    def run(self):
        outputs = []
        while self.rows:
            order = self.rng.permutation(len(self.rows)) if self.shuffle else np.arange(len(self.rows))
            self.rows = [self.rows[i] for i in order]
            self.chains = [self.chains[i] for i in order]
            ids = np.zeros((8, WIDTH), np.int32)
            for i, (toks, _, _) in enumerate(self.rows):
                ids[i, :len(toks)] = toks
            n = np.array([len(r[0]) for r in self.rows] + [0] * (8 - len(self.rows)), np.int32)
            self.chains = self.p.propose([r[2] for r in self.rows], n, ids)
            assert all(len(c) <= self.p.k for c in self.chains)
            keep = []
            for (toks, left, _), chain in zip(self.rows, self.chains):
                sampled = []
                for d in chain + [None]:  # verify: accept while the draft is the model's token
                    t = _model(toks + sampled)
                    sampled.append(t)
                    if d != t or len(sampled) >= left:
                        break
                sampled = sampled[:left]
                toks = toks + sampled
                if left - len(sampled) > 0:
                    keep.append([toks, left - len(sampled), sampled])
                else:
                    outputs.append(toks)
            self.rows = keep
        return outputs


def _plain(prompt, max_new):
    toks = list(prompt)
    for _ in range(max_new):
        toks.append(_model(toks))
    return toks


def test_outputs_are_the_model_s_and_a_repeated_request_drafts_more(tmp_path):
    p = _proposer(stats=tmp_path / "stats.json")
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, VOCAB, size=int(rng.integers(5, 40))).tolist() for _ in range(5)]
    eng = _Engine(p, shuffle=True)
    for q in prompts:
        eng.add(q, 60)
    assert sorted(eng.run()) == sorted(_plain(q, 60) for q in prompts)
    for again in (prompts[0], prompts[0]):
        eng.add(again, 60)
        assert eng.run() == [_plain(again, 60)]
    eng.add([1, 2, 3], 2)  # its first step ends the previous request
    eng.run()
    stats = json.loads((tmp_path / "stats.json").read_text())
    first, repeat = stats["finished"][0], stats["finished"][-1]
    assert stats["requests"] == 7 and stats["memory"]["requests"] >= 6
    assert repeat["accepted"] > first["accepted"] and repeat["steps"] < first["steps"]
    assert stats["mean_accepted_length"] > 1.0


def test_a_big_batch_drafts_within_the_token_budget():
    p = _proposer(k=16, batch_tokens=20)
    eng = _Engine(p)
    for i in range(8):
        eng.add([i, i + 1, i + 2] * 10, 30)
    original = p.propose
    seen = []

    def spy(*a, **kw):
        out = original(*a, **kw)
        seen.append(sum(len(c) for c in out))
        return out

    p.propose = spy
    eng.run()
    assert max(seen) <= 20 and sum(seen) > 0


def test_the_memory_is_saved_and_loaded(tmp_path, monkeypatch):
    tok = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1}, all_special_tokens=[], name_or_path="t")
    monkeypatch.setattr(P.RetroDraftProposer, "tokenizer", property(lambda self: tok))
    from retrodraft.vllm import options as O
    monkeypatch.setattr(P, "_state_io", _fake_fp(monkeypatch))
    name = O.encode(O.VllmOptions(state=str(tmp_path / "state"), save_every=1))
    cfg = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=8),
                          model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB, tokenizer=None, model="none"))
    p = getattr(P, name)(cfg)
    eng = _Engine(p)
    eng.add([5, 6, 7, 8], 40)
    eng.run()
    p.close()
    assert (tmp_path / "state" / "state.json").exists()
    q = getattr(P, name)(cfg)
    assert q.memory.n_requests == 1
    eng = _Engine(q)
    eng.add([5, 6, 7, 8], 40)
    eng.run()
    q.close()
    assert q.finished[0]["steps"] < p.finished[0]["steps"]


def _fake_fp(monkeypatch):
    """The real state I/O with a fixed tokenizer fingerprint (no tokenizer files in this test)."""
    from retrodraft import state
    from retrodraft.vllm import _state_io

    monkeypatch.setattr(state, "fingerprint", lambda tok: "fp-test")
    return _state_io


def test_the_rate_cut_drafts_fewer_tokens_for_as_many_steps():
    # prompts whose continuations the drafters mostly miss: the earlier cut ('gain') keeps
    # drafting long chains that fail; 'rate' learns per row and depth and drafts fewer
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, VOCAB, size=30).tolist() for _ in range(6)]
    runs = {}
    for cut in ("gain", "rate"):
        p = _proposer(k=16, cut=cut)
        eng = _Engine(p)
        for q in prompts:
            eng.add(q, 80)
            assert eng.run() == [_plain(q, 80)]
        runs[cut] = p.stats()
    gain, rate = runs["gain"], runs["rate"]
    assert rate["drafted"] < 0.8 * gain["drafted"]
    assert rate["steps"] <= 1.05 * gain["steps"]


def test_the_warm_up_leaves_no_trace():
    p = _proposer(k=16)  # load_model ran the warm-up
    assert p.memory.n_requests == 0 and not p.live
    assert p.totals["drafted"] == 0 and p.calibrator.proposed.sum() == 0
