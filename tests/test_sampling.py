"""Sampling is lossless: with retrodraft, continuations follow the model's own distribution.

Method: on a tiny model with an 8-token vocabulary, enumerate every 3-token continuation and
compute its exact probability under the processed distribution (temperature / top-k / top-p),
then draw N samples with retrodraft and run a chi-square goodness-of-fit test (categories with
expected count < 5 pooled). The seeds are fixed, so the outcome is deterministic; the threshold
is p >= 0.001. A negative control shows the test has the power to catch a wrong distribution.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from helpers import RandomDrafter, tiny_model
from retrodraft import RetroDraft
from retrodraft.drafters.stand import Stand

VOCAB, NEW, N = 8, 3, 2000
P_MIN = 1e-3
PROMPT = torch.tensor([[3, 5, 4, 6]])


def _model():
    return tiny_model("llama", vocab=VOCAB, seed=7, initializer_range=0.1)


def _exact(model, **gen_kwargs):
    """{continuation tuple: probability} under the processed sampling distribution."""
    processors = model._get_logits_processor(
        generation_config=model._prepare_generation_config(None, do_sample=True, **gen_kwargs)[0],
        input_ids_seq_length=PROMPT.shape[1],
        encoder_input_ids=PROMPT,
        prefix_allowed_tokens_fn=None,
        logits_processor=None,
        device="cpu",
    )
    probs = {(): 1.0}
    for _ in range(NEW):
        nxt = {}
        for prefix, p in probs.items():
            ids = torch.cat([PROMPT, torch.tensor([prefix], dtype=torch.long).reshape(1, -1)], dim=1)
            logits = model(input_ids=ids).logits[:, -1].float()
            dist = torch.softmax(processors(ids, logits), dim=-1)[0].tolist()
            for t, q in enumerate(dist):
                if q > 0:
                    nxt[prefix + (t,)] = p * q
        probs = nxt
    return probs


def _sample(model, n, assistant=None, **gen_kwargs):
    torch.manual_seed(1234)
    counts = {}
    for _ in range(n):
        kw = dict(max_new_tokens=NEW, do_sample=True, **gen_kwargs)
        out = model.generate(PROMPT, assistant=assistant, **kw) if assistant else model.generate(PROMPT, **kw)
        key = tuple(out[0, PROMPT.shape[1]:].tolist())
        counts[key] = counts.get(key, 0) + 1
    return counts


def _chi2_pvalue(counts, exact, n):
    assert set(counts) <= set(exact), "sampled a continuation the model gives probability 0"
    keys = sorted(exact, key=lambda k: -exact[k])
    obs, exp, pool_o, pool_e = [], [], 0, 0.0
    for k in keys:
        e = exact[k] * n
        if e >= 5:
            obs.append(counts.get(k, 0))
            exp.append(e)
        else:
            pool_o += counts.get(k, 0)
            pool_e += e
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    exp = np.asarray(exp) * (sum(obs) / sum(exp))
    return chisquare(obs, exp).pvalue


SETTINGS = {
    "temperature": dict(temperature=0.7, top_k=0, top_p=1.0),
    "top_k": dict(temperature=1.0, top_k=3, top_p=1.0),
    "top_p": dict(temperature=1.3, top_k=0, top_p=0.8),
}


def _drafters(kind):
    """Seeded drafters by name; ``stand`` samples its drafts (rejection sampling in the verifier)."""
    if kind == "random":
        return [RandomDrafter(VOCAB, seed=5)]
    return [Stand(seed=0) if name == "stand" else name for name in kind.split("+")]


@pytest.mark.parametrize("kind", ["random", "recycling+lookup", "aded", "stand", "stand+recycling", "history+recycling"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_sampled_distribution_is_the_models(name, kind):
    model = _model()
    gen = SETTINGS[name]
    exact = _exact(model, **gen)
    assistant = RetroDraft(drafters=_drafters(kind), budget=6)
    counts = _sample(model, N, assistant=assistant, **gen)
    assert assistant.stats.steps > 0
    # every call after the first reused the prompt's KV from the prefix cache
    assert assistant.stats.prefix_reused == PROMPT.shape[1] - 1
    p = _chi2_pvalue(counts, exact, N)
    assert p >= P_MIN, f"{name}: chi-square p={p:.2e} < {P_MIN}"


def test_drafts_were_actually_accepted_while_sampling():
    model = _model()
    assistant = RetroDraft(drafters=[RandomDrafter(VOCAB, seed=5)], budget=6)
    _sample(model, 50, assistant=assistant, **SETTINGS["temperature"])
    # with 6 random guesses over 8 tokens, some steps must commit more than one token
    # (stats hold the last call; re-run a longer one to look at acceptance)
    model.generate(PROMPT, max_new_tokens=40, do_sample=True, temperature=0.7, assistant=assistant)
    assert max(assistant.stats.committed) >= 2


def test_negative_control_detects_a_wrong_distribution():
    model = _model()
    exact = _exact(model, **SETTINGS["temperature"])
    assistant = RetroDraft(drafters=[RandomDrafter(VOCAB, seed=5)], budget=6)
    wrong = _sample(model, N, assistant=assistant, temperature=1.0, top_k=0, top_p=1.0)
    assert _chi2_pvalue(wrong, exact, N) < P_MIN


def test_stand_samples_its_drafts_and_they_get_accepted():
    model = _model()
    assistant = RetroDraft(drafters=["stand"], budget=6)
    _sample(model, 30, assistant=assistant, **SETTINGS["temperature"])
    stand = assistant.drafters[0]
    tree = stand.propose(PROMPT[0].numpy(), 6)
    assert tree.proposals, "a sampling-mode STAND draft records what it sampled"
    order, support, q = tree.proposals[0]
    assert set(order.tolist()) <= set(support.tolist()) and q.sum() == pytest.approx(1.0, abs=1e-5)
    model.generate(PROMPT, max_new_tokens=40, do_sample=True, temperature=0.7, assistant=assistant)
    assert assistant.stats.mean_accepted > 1.2
