"""The prefix cache: a resent conversation prefills only what is new, and decodes exactly as before.

Greedy output with a reused prefix must be plain ``generate``'s (float32), streamers and stop
strings included; stored entries are never changed by the calls that reuse them; the store stays
within its byte budget; KV is never reused across models, changed weights or uncopyable caches.
"""

import threading

import numpy as np
import pytest
import torch
from transformers import DynamicCache

import retrodraft  # noqa: F401  (installs the generate(assistant=...) hook)
from helpers import ARCHS, SEEDS, OracleDrafter, Recorder, tiny_model
from retrodraft import RetroDraft
from retrodraft.errors import ConfigError
from retrodraft.prefix_cache import PrefixCache

VOCAB = 96


def _gen(model, ids, **kw):
    """``model.generate`` with an all-ones mask: an answer fed back may hold the pad id."""
    return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def _ids(seed, n):
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _conversation(model, turns=3, first=20, added=9, new=24, seed=0):
    """Prompts of a resent conversation: each is the previous prompt, its greedy answer and a new message."""
    prompts, prompt = [], _ids(seed, first)
    for t in range(turns):
        prompts.append(prompt)
        answer = _gen(model, prompt, max_new_tokens=new, do_sample=False)
        prompt = torch.cat([answer, _ids(seed + 100 + t, added)], dim=1)
    return prompts


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("drafters", [["history", "recycling", "lookup"], ["oracle"]])
def test_a_resent_conversation_reuses_its_prefix_and_decodes_exactly(arch, drafters):
    model = tiny_model(arch, seed=SEEDS[arch])
    prompts = _conversation(model)
    reused = RetroDraft(drafters=list(drafters) if drafters[0] != "oracle" else None, budget=8)
    plain_assistant = RetroDraft(budget=8, prefix_cache=0)
    for t, ids in enumerate(prompts):
        ref = _gen(model, ids, max_new_tokens=24, do_sample=False)
        if drafters[0] == "oracle":
            oracle = [OracleDrafter(ref[0, ids.shape[1]:].tolist(), ids.shape[1], VOCAB, miss_every=3)]
            reused.drafters = plain_assistant.drafters = oracle
        out = _gen(model, ids, max_new_tokens=24, do_sample=False, assistant=reused)
        assert torch.equal(out, ref), (arch, t)
        if t == 0:
            assert reused.stats.prefix_reused == 0 and reused.stats.prefix_skip == "store empty"
        else:  # the previous call's prompt and output, all but its last token, are this prompt's start
            assert reused.stats.prefix_reused == prompts[t - 1].shape[1] + 24 - 1, (arch, t)
            assert reused.stats.prefix_skip == ""
        assert torch.equal(_gen(model, ids, max_new_tokens=24, do_sample=False, assistant=plain_assistant), ref)
        assert plain_assistant.stats.prefix_reused == 0 and plain_assistant.stats.prefix_skip == "off"
    assert len(reused.prefix_cache) == 1  # each turn's entry replaced the one it extends


def test_the_same_prompt_reuses_all_but_its_last_token_with_streamer_and_stop_strings():
    from test_generate import _char_tokenizer

    model = tiny_model("llama")
    tok = _char_tokenizer()
    ids = torch.randint(3, 52, (1, 16), generator=torch.Generator().manual_seed(5))
    full = _gen(model, ids, max_new_tokens=40, do_sample=False)[0, 16:].tolist()
    i = max(i for i, t in enumerate(full) if t < 52)
    kw = dict(max_new_tokens=40, do_sample=False, stop_strings=[tok.convert_ids_to_tokens([full[i]])[0]], tokenizer=tok)
    plain = Recorder()
    ref = _gen(model, ids, streamer=plain, **kw)
    a = RetroDraft(drafters=["recycling", "lookup"], budget=6)
    for call in range(3):
        ours = Recorder()
        out = _gen(model, ids, streamer=ours, assistant=a, **kw)
        assert torch.equal(out, ref) and ours.calls == plain.calls, call
        assert a.stats.prefix_reused == (0 if call == 0 else ids.shape[1] - 1)


def test_stored_entries_are_never_changed_by_the_calls_that_reuse_them():
    model = tiny_model("qwen2", seed=SEEDS["qwen2"])
    ids = _ids(3, 24)
    a = RetroDraft(drafters=["recycling"], budget=8)
    first = _gen(model, ids, max_new_tokens=30, do_sample=False, assistant=a)
    (entry,) = a.prefix_cache._entries.values()
    snapshot = [(k.clone(), v.clone()) for k, v in entry.layers]
    # a shorter call reusing the entry; its output is a prefix of the stored one, so the entry stays
    again = _gen(model, ids, max_new_tokens=10, do_sample=False, assistant=a)
    assert torch.equal(again, first[:, :34]) and a.stats.prefix_reused == 23
    (kept,) = a.prefix_cache._entries.values()
    assert kept is entry
    for (k, v), (k0, v0) in zip(entry.layers, snapshot):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    twice = [_gen(model, ids, max_new_tokens=30, do_sample=False, assistant=a) for _ in range(2)]
    assert all(torch.equal(t, first) for t in twice)


def test_a_returned_cache_is_copied_into_the_store():
    model = tiny_model("llama")
    ids = _ids(4, 20)
    a = RetroDraft(drafters=["lookup"], budget=4)
    out = _gen(model, ids, max_new_tokens=12, do_sample=False, assistant=a, return_dict_in_generate=True)
    (entry,) = a.prefix_cache._entries.values()
    for layer, (k, _) in zip(out.cache.layers, entry.layers):
        assert k.data_ptr() != layer.keys.data_ptr()
        layer.keys.zero_()  # the caller may do anything with the cache it got back
    ref = _gen(model, ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(_gen(model, ids, max_new_tokens=12, do_sample=False, assistant=a), ref)
    assert a.stats.prefix_reused == 19


def test_eviction_keeps_the_store_within_its_budget():
    model = tiny_model("llama")
    probe = RetroDraft(drafters=["lookup"], budget=4)
    _gen(model, _ids(0, 20), max_new_tokens=10, do_sample=False, assistant=probe)
    one = probe.prefix_cache.nbytes  # about one 30-token entry
    a = RetroDraft(drafters=["lookup"], budget=4, prefix_cache=int(2.5 * one))
    for seed in range(6):
        ids = _ids(seed + 10, 20)
        assert torch.equal(_gen(model, ids, max_new_tokens=10, do_sample=False, assistant=a),
                           _gen(model, ids, max_new_tokens=10, do_sample=False))
        assert a.prefix_cache.nbytes <= a.prefix_cache.max_bytes
        assert len(a.prefix_cache) == min(seed + 1, 2)
    # least recently used goes first: the two latest prompts are still there, the first is not
    _gen(model, _ids(15, 20), max_new_tokens=4, do_sample=False, assistant=a)
    assert a.stats.prefix_reused == 19
    _gen(model, _ids(10, 20), max_new_tokens=4, do_sample=False, assistant=a)
    assert a.stats.prefix_reused == 0 and a.stats.prefix_skip == "no stored prefix"
    tiny = RetroDraft(drafters=["lookup"], budget=4, prefix_cache=one // 4)
    _gen(model, _ids(0, 20), max_new_tokens=10, do_sample=False, assistant=tiny)
    assert len(tiny.prefix_cache) == 0  # an entry over the whole budget is not kept


def test_kv_is_never_reused_across_models_or_changed_weights():
    a = RetroDraft(drafters=["lookup"], budget=4)
    llama, other = tiny_model("llama", seed=0), tiny_model("llama", seed=7)
    ids = _ids(1, 20)
    model_ref = {m: _gen(m, ids, max_new_tokens=8, do_sample=False) for m in (llama, other)}
    _gen(llama, ids, max_new_tokens=8, do_sample=False, assistant=a)
    assert torch.equal(_gen(other, ids, max_new_tokens=8, do_sample=False, assistant=a), model_ref[other])
    assert a.stats.prefix_reused == 0 and a.stats.prefix_skip == "no stored prefix"
    with torch.no_grad():
        next(llama.parameters()).mul_(1.5)  # a weight update in place
    changed = _gen(llama, ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(_gen(llama, ids, max_new_tokens=8, do_sample=False, assistant=a), changed)
    assert a.stats.prefix_reused == 0
    _gen(llama, ids, max_new_tokens=8, do_sample=False, assistant=a)
    assert a.stats.prefix_reused == 19  # the new weights' entry is reused


def test_caches_that_cannot_be_reused_are_skipped_with_a_reason():
    from transformers import StaticCache

    model = tiny_model("llama")
    ids = _ids(2, 20)
    a = RetroDraft(drafters=["lookup"], budget=4)
    _gen(model, ids, max_new_tokens=8, do_sample=False, assistant=a)
    store = a.prefix_cache
    static = StaticCache(config=model.config, max_cache_len=64)
    assert store.restore(model, static, ids[0].numpy(), 19) == (0, "StaticCache is not a DynamicCache")
    assert store.store(model, static, ids[0].numpy()) == "StaticCache is not a DynamicCache"
    filled = DynamicCache(config=model.config)
    model(ids[:, :5], cache=filled, use_cache=True)
    n, why = store.restore(model, filled, ids[0].numpy(), 19)
    assert n == 0 and "already holds positions" in why
    # a call handed a filled cache keeps plain decoding's behaviour and says why nothing was reused
    prefilled = DynamicCache(config=model.config)
    model(ids[:, :5], cache=prefilled, use_cache=True)
    ref_cache = DynamicCache(config=model.config)
    model(ids[:, :5], cache=ref_cache, use_cache=True)
    ref = _gen(model, ids, max_new_tokens=8, do_sample=False, cache=ref_cache)
    out = _gen(model, ids, max_new_tokens=8, do_sample=False, cache=prefilled, assistant=a)
    assert torch.equal(out, ref) and "already holds positions" in a.stats.prefix_skip


def test_a_slid_window_is_never_stored():
    model = tiny_model("mistral", sliding_window=8)
    cache = DynamicCache(config=model.config)
    ids = _ids(3, 12)
    model(ids, cache=cache, use_cache=True)
    why = PrefixCache().store(model, cache, ids[0, :12].numpy())
    assert "sliding window slid" in why


def test_sliding_window_layers_below_their_window_are_reused_exactly():
    model = tiny_model("mistral", seed=SEEDS["mistral"], sliding_window=200)
    prompts = _conversation(model, turns=2)
    a = RetroDraft(drafters=["recycling", "lookup"], budget=6)
    for ids in prompts:
        assert torch.equal(_gen(model, ids, max_new_tokens=24, do_sample=False, assistant=a),
                           _gen(model, ids, max_new_tokens=24, do_sample=False))
    assert a.stats.prefix_reused > 0


def test_threads_sharing_an_assistant_and_a_store_decode_exactly():
    model = tiny_model("llama")
    store = PrefixCache()
    shared = RetroDraft(drafters=["history", "lookup"], budget=6, prefix_cache=store)
    other = RetroDraft(drafters=["recycling"], budget=4, prefix_cache=store)  # a second assistant, same store
    convs = [_conversation(model, turns=3, seed=s) for s in range(3)]
    refs = [[_gen(model, p, max_new_tokens=24, do_sample=False) for p in conv] for conv in convs]
    errors, reused = [], []

    def worker(k):
        try:
            for _ in range(2):
                for p, ref in zip(convs[k % 3], refs[k % 3]):
                    assistant = shared if k % 2 == 0 else other
                    with assistant.lock:  # read the stats of this very call
                        out = _gen(model, p, max_new_tokens=24, do_sample=False, assistant=assistant)
                        reused.append(assistant.stats.prefix_reused)
                    if not torch.equal(out, ref):
                        errors.append(k)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r > 0 for r in reused) >= len(reused) // 2
    assert store.nbytes <= store.max_bytes


def test_the_prefix_cache_is_not_saved_with_the_state(tmp_path):
    from test_generate import _char_tokenizer

    model = tiny_model("llama")
    tok = _char_tokenizer()
    a = RetroDraft(drafters=["recycling"], budget=4)
    ids = _ids(5, 16)
    _gen(model, ids, max_new_tokens=8, do_sample=False, assistant=a)
    assert len(a.prefix_cache) == 1
    a.save(tmp_path / "state", tok)
    assert not any("prefix" in p.name for p in (tmp_path / "state").rglob("*"))
    b = RetroDraft.load(tmp_path / "state", tok)
    assert b.prefix_cache is not None and len(b.prefix_cache) == 0
    a.reset()
    assert len(a.prefix_cache) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "1G", True])
def test_a_bad_budget_is_refused(bad):
    with pytest.raises(ConfigError, match="prefix_cache must be a byte budget"):
        RetroDraft(prefix_cache=bad)


def test_lookup_takes_the_longest_common_prefix():
    model = tiny_model("llama")
    store = PrefixCache()
    caches = {}
    for name, seq in {"short": np.arange(3, 13), "long": np.r_[np.arange(3, 9), np.arange(50, 70)]}.items():
        cache = DynamicCache(config=model.config)
        model(torch.as_tensor(seq).reshape(1, -1), cache=cache, use_cache=True)
        caches[name] = cache
        assert store.store(model, cache, seq) == ""
    query = np.r_[np.arange(3, 9), np.arange(50, 60), [1, 2]]
    target = DynamicCache(config=model.config)
    n, why = store.restore(model, target, query, len(query) - 1)
    assert (n, why) == (16, "")
    assert torch.equal(target.layers[0].keys, caches["long"].layers[0].keys[..., :16, :])
