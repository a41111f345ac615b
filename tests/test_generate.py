"""Greedy exactness and exact stopping of the speculative loop on tiny random-weight models.

The one test worth having: drafting never changes greedy output, for every drafter and every
architecture we claim.
"""

import pytest
import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

import retrodraft
from helpers import ARCHS, SEEDS, OracleDrafter, RandomDrafter, Recorder, tiny_model
from retrodraft import RetroDraft

VOCAB = 96


def _prompt(seed=1, n=12):
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _drafters(reference, prompt_len, kind):
    if kind == "random":
        return [RandomDrafter(VOCAB, seed=3)]
    if kind == "oracle":
        return [OracleDrafter(reference, prompt_len, VOCAB, miss_every=3)]
    return [kind]  # a registered drafter name


DRAFTER_KINDS = ["random", "oracle", "recycling", "lookup", "stand", "aded", "history"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", DRAFTER_KINDS)
@pytest.mark.parametrize("budget", [1, 7, 24])
def test_greedy_output_is_identical(arch, kind, budget):
    model = tiny_model(arch, seed=SEEDS[arch])
    for seed in (1, 2):
        ids = _prompt(seed)
        ref = model.generate(ids, max_new_tokens=48, do_sample=False)
        assistant = RetroDraft(drafters=_drafters(ref[0, ids.shape[1] :].tolist(), ids.shape[1], kind), budget=budget)
        out = model.generate(ids, max_new_tokens=48, do_sample=False, assistant=assistant)
        assert torch.equal(out, ref), (arch, kind, budget, seed)
        assert assistant.stats.steps > 0
        assert sum(assistant.stats.committed) + 1 == out.shape[1] - ids.shape[1]


def test_oracle_drafts_are_accepted_in_long_blocks():
    model = tiny_model("llama")
    ids = _prompt()
    ref = model.generate(ids, max_new_tokens=40, do_sample=False)
    a = RetroDraft(drafters=[OracleDrafter(ref[0, 12:].tolist(), 12, VOCAB)], budget=16)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, assistant=a)
    assert torch.equal(out, ref)
    assert a.stats.mean_accepted > 4


def test_module_level_generate_needs_no_hook():
    model = tiny_model("qwen2")
    ids = _prompt()
    ref = model.generate(ids, max_new_tokens=20, do_sample=False)
    out = retrodraft.generate(model, ids, max_new_tokens=20, do_sample=False,
                              assistant=RetroDraft([RandomDrafter(VOCAB)], budget=5))
    assert torch.equal(out, ref)


def test_other_generate_calls_are_untouched():
    model = tiny_model("llama")
    ids = _prompt()
    plain = model.generate(ids, max_new_tokens=10, do_sample=False)
    pld = model.generate(ids, max_new_tokens=10, do_sample=False, prompt_lookup_num_tokens=3)
    assert torch.equal(plain, pld)


@pytest.mark.parametrize("kind", ["random", "oracle"])
def test_greedy_with_logits_processors(kind):
    model = tiny_model("llama")
    ids = _prompt(4)
    kwargs = dict(max_new_tokens=40, do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=3,
                  logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.1)]))
    ref = model.generate(ids, **kwargs)
    a = RetroDraft(drafters=_drafters(ref[0, 12:].tolist(), 12, kind), budget=9)
    out = model.generate(ids, assistant=a, **kwargs)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("max_new", [1, 2, 5, 17])
def test_max_new_tokens_cuts_exactly(max_new):
    model = tiny_model("llama")
    ids = _prompt()
    ref = model.generate(ids, max_new_tokens=max_new, do_sample=False)
    full = model.generate(ids, max_new_tokens=64, do_sample=False)
    a = RetroDraft(drafters=[OracleDrafter(full[0, 12:].tolist(), 12, VOCAB)], budget=20)
    out = model.generate(ids, max_new_tokens=max_new, do_sample=False, assistant=a)
    assert torch.equal(out, ref)
    assert out.shape[1] == 12 + max_new


def test_eos_inside_an_accepted_block_cuts_exactly():
    model = tiny_model("llama")
    ids = _prompt(3)
    full = model.generate(ids, max_new_tokens=40, do_sample=False)[0, 12:].tolist()
    # choose as EOS a token first produced mid-way, so it lands inside an oracle block
    eos = next(t for i, t in enumerate(full) if i >= 9 and t not in full[:i])
    ref = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos)
    a = RetroDraft(drafters=[OracleDrafter(full, 12, VOCAB)], budget=20)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos, assistant=a)
    assert torch.equal(out, ref)
    assert out[0, -1].item() == eos and out.shape[1] < 12 + 40


def _char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(ord("A") + i) if i < 26 else chr(ord("a") + i - 26) if i < 52 else f"<{i}>": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<95>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_stop_strings_cut_exactly():
    model = tiny_model("llama")
    tok = _char_tokenizer()
    ids = torch.randint(3, 52, (1, 12), generator=torch.Generator().manual_seed(5))
    full = model.generate(ids, max_new_tokens=40, do_sample=False)[0, 12:].tolist()
    letters = [t for t in full if t < 52]
    assert len(letters) >= 2, "test prompt should produce letters"
    i = max(i for i, t in enumerate(full) if t < 52)
    stop = tok.convert_ids_to_tokens([full[i]])[0]
    ref = model.generate(ids, max_new_tokens=40, do_sample=False, stop_strings=[stop], tokenizer=tok)
    a = RetroDraft(drafters=[OracleDrafter(full, 12, VOCAB)], budget=20)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, stop_strings=[stop], tokenizer=tok, assistant=a)
    assert torch.equal(out, ref)
    assert out.shape[1] < 12 + 40


def test_stop_strings_without_tokenizer_is_refused():
    model = tiny_model("llama")
    with pytest.raises(retrodraft.UnsupportedModelError, match="tokenizer"):
        model.generate(_prompt(), max_new_tokens=4, stop_strings=["x"], assistant=RetroDraft())


def test_streamer_sees_exactly_what_plain_generation_streams():
    model = tiny_model("llama")
    ids = _prompt()
    full = model.generate(ids, max_new_tokens=30, do_sample=False)[0, 12:].tolist()
    plain, ours = Recorder(), Recorder()
    model.generate(ids, max_new_tokens=30, do_sample=False, streamer=plain)
    a = RetroDraft(drafters=[OracleDrafter(full, 12, VOCAB)], budget=12)
    model.generate(ids, max_new_tokens=30, do_sample=False, streamer=ours, assistant=a)
    assert ours.calls == plain.calls
    assert a.stats.mean_accepted > 2


def test_return_dict_with_scores_and_logits():
    model = tiny_model("llama")
    ids = _prompt()
    kw = dict(max_new_tokens=20, do_sample=False, return_dict_in_generate=True, output_scores=True, output_logits=True,
              repetition_penalty=1.2)
    ref = model.generate(ids, **kw)
    full = ref.sequences[0, 12:].tolist()
    out = model.generate(ids, assistant=RetroDraft([OracleDrafter(full, 12, VOCAB)], budget=8), **kw)
    assert torch.equal(out.sequences, ref.sequences)
    assert len(out.scores) == len(ref.scores) == 20
    for a, b in zip(out.scores, ref.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(out.logits, ref.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert out.cache.get_seq_length() == ref.cache.get_seq_length()


def test_state_persists_across_calls_and_reset_clears_it():
    model = tiny_model("llama")
    ids = _prompt()
    a = RetroDraft(drafters=["recycling"], budget=8)
    model.generate(ids, max_new_tokens=30, do_sample=False, assistant=a)
    cold = a.stats.mean_accepted
    model.generate(ids, max_new_tokens=30, do_sample=False, assistant=a)
    warm = a.stats.mean_accepted
    assert warm > cold  # the same text again: recycled candidates now predict it
    a.reset()
    model.generate(ids, max_new_tokens=30, do_sample=False, assistant=a)
    assert a.stats.mean_accepted == pytest.approx(cold)


# ---------------------------------------------------------------- refusals, each with its message
def test_flash_attention_is_refused_with_the_fix():
    model = tiny_model("llama")
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(retrodraft.UnsupportedModelError, match=r"flash_attention_2.*attn_implementation='sdpa'"):
        model.generate(_prompt(), max_new_tokens=4, assistant=RetroDraft())


def test_batches_are_refused():
    model = tiny_model("llama")
    with pytest.raises(retrodraft.UnsupportedModelError, match="batch size 1"):
        model.generate(torch.cat([_prompt(1), _prompt(2)]), max_new_tokens=4, assistant=RetroDraft())


def test_beam_search_is_refused():
    model = tiny_model("llama")
    with pytest.raises(retrodraft.UnsupportedModelError, match="num_beams"):
        model.generate(_prompt(), max_new_tokens=4, num_beams=2, assistant=RetroDraft())


def test_padded_prompts_are_refused():
    model = tiny_model("llama")
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[0, 0] = 0
    with pytest.raises(retrodraft.UnsupportedModelError, match="unpadded"):
        model.generate(_prompt(), attention_mask=mask, max_new_tokens=4, assistant=RetroDraft())


def test_a_sliding_window_that_would_slide_is_refused():
    from retrodraft.cache import UnsupportedCacheError

    model = tiny_model("mistral", sliding_window=24)
    with pytest.raises(UnsupportedCacheError, match="sliding window of 24"):
        model.generate(_prompt(), max_new_tokens=30, assistant=RetroDraft(budget=4))


def test_assisted_generation_arguments_are_refused():
    model = tiny_model("llama")
    with pytest.raises(retrodraft.UnsupportedModelError, match="prompt_lookup_num_tokens"):
        model.generate(_prompt(), max_new_tokens=4, prompt_lookup_num_tokens=3, assistant=RetroDraft())


def test_the_cache_is_compacted_once_per_step(monkeypatch):
    import importlib

    gen = importlib.import_module("retrodraft.generate")  # the module, not the function of that name
    calls = []
    real = gen.compact
    monkeypatch.setattr(gen, "compact", lambda *a: calls.append(a) or real(*a))
    model = tiny_model("llama")
    ids = _prompt(3)
    full = model.generate(ids, max_new_tokens=40, do_sample=False)[0, 12:].tolist()
    eos = next(t for i, t in enumerate(full) if i >= 9 and t not in full[:i])  # stops inside a block
    a = RetroDraft(drafters=[OracleDrafter(full, 12, VOCAB)], budget=20)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos, assistant=a, return_dict_in_generate=True)
    assert len(calls) == a.stats.steps
    assert out.cache.get_seq_length() == out.sequences.shape[1] - 1  # everything but the last token


def test_call_errors_have_their_own_type():
    model = tiny_model("llama")
    with pytest.raises(retrodraft.UnsupportedCallError, match="num_beams"):
        model.generate(_prompt(), max_new_tokens=4, num_beams=2, assistant=RetroDraft())
    with pytest.raises(retrodraft.UnsupportedCallError, match="tokenizer"):
        model.generate(_prompt(), max_new_tokens=4, stop_strings=["x"], assistant=RetroDraft())
