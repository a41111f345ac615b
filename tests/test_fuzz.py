"""Fuzzed exactness: greedy output with an assistant is plain ``generate``'s, over random cases.

Each case draws, from its own seed: a tiny random model (architecture, layers, heads, vocabulary;
each built once and reused), a drafter mix, fixed or auto sizing, a fresh or warm assistant, a
prompt (random, repetitive, copied from an earlier output, or an earlier call's whole sequence
continued, as a resent conversation is, so the assistant's prefix cache reuses its KV), stop criteria (``max_new_tokens``,
EOS, ``stop_strings``, a custom ``StoppingCriteria``), sometimes logits processors, and sometimes
a streamer. The output, what the streamer received and the statistics are compared with plain
decoding in float32.

``RETRODRAFT_FUZZ_CASES`` sets the number of cases (``make fuzz`` runs thousands),
``RETRODRAFT_FUZZ_SEED`` the base seed; a mismatch names the case seed that reproduces it.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

import retrodraft  # noqa: F401  (installs the generate(assistant=...) hook)
from helpers import OracleDrafter, RandomDrafter, Recorder, tiny_model
from retrodraft import RetroDraft
from retrodraft.cost import CostModel
from retrodraft.drafters import DRAFTERS
from retrodraft.index import CorpusIndex, build_index

CASES = int(os.environ.get("RETRODRAFT_FUZZ_CASES", "300"))
BASE_SEED = int(os.environ.get("RETRODRAFT_FUZZ_SEED", "0"))

# (arch, layers, heads, kv heads, hidden, vocab): every model built once, on first use.
CONFIGS = [
    ("llama", 2, 4, 2, 64, 96),
    ("llama", 1, 2, 1, 32, 64),
    ("llama", 3, 8, 8, 64, 160),
    ("qwen2", 2, 4, 2, 64, 96),
    ("qwen2", 1, 4, 4, 32, 128),
    ("qwen2", 3, 2, 1, 64, 72),
    ("mistral", 2, 4, 2, 64, 96),
    ("mistral", 1, 8, 2, 64, 112),
]
NAMED = [n for n in ("recycling", "lookup", "stand", "aded", "retrieval", "history") if n in DRAFTERS]


class StopOnRepeat(StoppingCriteria):
    """Stops once the last ``n`` tokens are all equal (a custom criterion checked every token)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, input_ids, scores, **kwargs):
        tail = input_ids[:, -self.n:]
        return (tail == tail[:, -1:]).all(dim=1) & torch.tensor(input_ids.shape[1] >= self.n)


def _char_tokenizer(vocab: int):
    """One character per id (ASCII letters, then Latin Extended), so stop strings can end on any token."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = string.ascii_letters
    chars = {(letters[i] if i < len(letters) else chr(0x100 + i)): i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(vocab=chars, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


class _VocabTokenizer:
    """What build_index needs of a tokenizer when given token ids: a vocabulary to fingerprint."""

    def __init__(self, vocab: int):
        self.vocab, self.name_or_path, self.all_special_tokens = vocab, f"fuzz-{vocab}", []

    def get_vocab(self):
        return {f"t{i}": i for i in range(self.vocab)}

    def __len__(self):
        return self.vocab


@dataclass
class World:
    """Models, tokenizers, indexes and warm assistants shared by all cases."""

    folder: object
    models: dict = field(default_factory=dict)
    tokenizers: dict = field(default_factory=dict)
    indexes: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)  # config -> earlier outputs, for copied prompts
    warm: dict = field(default_factory=dict)  # config -> an assistant used before
    reused: int = 0  # cases whose prefill reused an earlier call's KV
    warm_outputs: dict = field(default_factory=dict)  # config -> whole sequences the warm assistant decoded

    def model(self, c: int):
        if c not in self.models:
            arch, layers, heads, kv, hidden, vocab = CONFIGS[c]
            self.models[c] = tiny_model(arch, vocab=vocab, seed=100 + c, num_hidden_layers=layers,
                                        num_attention_heads=heads, num_key_value_heads=kv, hidden_size=hidden,
                                        intermediate_size=2 * hidden, eos_token_id=vocab - 1)
            self.outputs[c] = []
        return self.models[c]

    def tokenizer(self, c: int):
        if c not in self.tokenizers:
            self.tokenizers[c] = _char_tokenizer(CONFIGS[c][5])
        return self.tokenizers[c]

    def index(self, c: int) -> CorpusIndex:
        """A corpus of this model's own greedy outputs (so retrieval finds continuations)."""
        if c not in self.indexes:
            model, vocab = self.model(c), CONFIGS[c][5]
            gen = torch.Generator().manual_seed(c)
            docs = []
            for _ in range(6):
                ids = torch.randint(0, vocab, (1, 8), generator=gen)
                docs.append(model.generate(ids, max_new_tokens=48, do_sample=False)[0].tolist())
            with ThreadPoolExecutor(1) as pool:
                build_index([], _VocabTokenizer(vocab), self.folder / f"idx{c}", token_docs=docs, executor=pool,
                            progress=False)
            self.indexes[c] = CorpusIndex(self.folder / f"idx{c}")
        return self.indexes[c]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("fuzz"))


def _prompt(rng, world: World, c: int) -> tuple[torch.Tensor, bool]:
    """A case's prompt, and whether it continues an earlier call's whole sequence."""
    vocab = CONFIGS[c][5]
    n = int(rng.integers(1, 41))
    kind = rng.choice(["random", "motif", "copied", "continued"], p=[0.3, 0.2, 0.25, 0.25])
    if kind == "continued" and world.warm_outputs.get(c):
        past = world.warm_outputs[c][int(rng.integers(len(world.warm_outputs[c])))]
        ids = np.concatenate([past, rng.integers(0, vocab, size=int(rng.integers(1, 9)))])
        return torch.as_tensor(ids, dtype=torch.long).reshape(1, -1), True
    elif kind == "motif":
        motif = rng.integers(0, vocab, size=int(rng.integers(2, 7)))
        ids = np.resize(motif, n)
    elif kind == "copied" and world.outputs[c]:
        past = world.outputs[c][int(rng.integers(len(world.outputs[c])))]
        start = int(rng.integers(0, max(1, len(past) - 4)))
        ids = np.asarray(past[start:start + n])
    else:
        ids = rng.integers(0, vocab, size=n)
    return torch.as_tensor(ids, dtype=torch.long).reshape(1, -1), False


def _stopping(rng, world: World, c: int, ids, model) -> tuple[dict, str]:
    """generate() kwargs for the stop criteria and processors of a case, and a label."""
    # A prompt may hold the pad id: without a mask transformers would take it for padding.
    kw: dict = {"max_new_tokens": int(rng.integers(1, 65)), "do_sample": False,
                "attention_mask": torch.ones_like(ids)}
    label = [f"max_new={kw['max_new_tokens']}"]
    want_eos, want_stop = rng.random() < 0.35, rng.random() < 0.35
    full = []
    if want_eos or want_stop:  # a stop that fires mid-way: taken from what the output will hold
        full = model.generate(ids, max_new_tokens=kw["max_new_tokens"], do_sample=False,
                              attention_mask=kw["attention_mask"])[0, ids.shape[1]:].tolist()
    if want_eos:
        kw["eos_token_id"] = int(full[int(rng.integers(len(full)))])
        label.append(f"eos={kw['eos_token_id']}")
    if want_stop:
        tok = world.tokenizer(c)
        i = int(rng.integers(len(full)))
        stop = tok.decode(full[i:i + int(rng.integers(1, 4))])
        kw["stop_strings"], kw["tokenizer"] = [stop], tok
        label.append(f"stop={stop!r}")
    if rng.random() < 0.25:
        n = int(rng.integers(2, 4))
        kw["stopping_criteria"] = StoppingCriteriaList([StopOnRepeat(n)])
        label.append(f"repeat{n}")
    if rng.random() < 0.2:
        kw["repetition_penalty"] = 1.3
        kw["no_repeat_ngram_size"] = 3
        label.append("penalties")
    return kw, " ".join(label)


def _assistant(rng, world: World, c: int, reference: list[int], prompt_len: int,
               continued: bool) -> tuple[RetroDraft, str]:
    vocab = CONFIGS[c][5]
    if c in world.warm and rng.random() < (0.9 if continued else 0.4):
        a = world.warm[c]
        return a, f"warm {[d.name for d in a.drafters]} {a.sizing}"
    names = [n for n in NAMED if rng.random() < 0.4] or [NAMED[int(rng.integers(len(NAMED)))]]
    drafters: list = list(names)
    if rng.random() < 0.15:
        drafters.append(RandomDrafter(vocab, seed=int(rng.integers(1 << 30))))
    oracle = rng.random() < 0.15
    if oracle:
        drafters.append(OracleDrafter(reference, prompt_len, vocab, seed=1, miss_every=int(rng.integers(0, 4))))
    kw: dict = {"index": world.index(c)} if "retrieval" in names else {}
    if rng.random() < 0.2:  # a store that holds a few entries at most: eviction on every call
        kw["prefix_cache"] = int(rng.choice([0, 4_000, 40_000]))
    if rng.random() < 0.5:
        budget = int(rng.choice([0, 1, 2, 3, 5, 8, 13, 24, 32]))
        a = RetroDraft(drafters=drafters, sizing="fixed", budget=budget, **kw)
        label = f"fixed@{budget}"
    else:
        slope = float(rng.choice([0.0, 0.02, 0.1, 0.5]))
        cost = CostModel(np.array([1, 8, 32, 64]), 1.0 + slope * np.array([0, 7, 31, 63]))
        cap = int(rng.choice([4, 16, 32]))
        a = RetroDraft(drafters=drafters, sizing="auto", budget=cap, cost=cost, **kw)
        label = f"auto(cap {cap}, slope {slope})"
    if "prefix_cache" in kw:
        label += f" prefix_cache={kw['prefix_cache']}"
    if not oracle:
        world.warm[c] = a
        world.warm_outputs[c] = []  # the sequences an earlier warm assistant stored are not in this one's cache
    return a, f"{[d if isinstance(d, str) else d.name for d in drafters]} {label}"


def _run_case(world: World, seed: int) -> str | None:
    """None when the case matches plain decoding, else what differed."""
    rng = np.random.default_rng([BASE_SEED, seed])
    c = int(rng.integers(len(CONFIGS)))
    model = world.model(c)
    ids, continued = _prompt(rng, world, c)
    kw, stops = _stopping(rng, world, c, ids, model)
    streamed = rng.random() < 0.3
    plain_stream, ours_stream = Recorder(), Recorder()
    ref = model.generate(ids, **kw, **({"streamer": plain_stream} if streamed else {}))
    reference = ref[0, ids.shape[1]:].tolist()
    assistant, drafted = _assistant(rng, world, c, reference, ids.shape[1], continued)
    what = f"case {seed}: {CONFIGS[c]} prompt {ids.shape[1]} tokens{' (continued)' if continued else ''}, {stops}, {drafted}, streamer={streamed}"
    try:
        out = model.generate(ids, assistant=assistant, **kw, **({"streamer": ours_stream} if streamed else {}))
    except Exception as e:  # an exception is a failure of the case, reported with the others
        return f"{what}: raised {type(e).__name__}: {e}"
    world.outputs[c] = (world.outputs[c] + [ref[0].tolist()])[-20:]
    world.reused += assistant.stats.prefix_reused > 0
    if assistant is world.warm.get(c):
        world.warm_outputs[c] = (world.warm_outputs.get(c, []) + [ref[0].tolist()])[-8:]
    store = assistant.prefix_cache
    if store is not None and store.nbytes > store.max_bytes:
        return f"{what}: the prefix cache holds {store.nbytes} bytes, over its budget of {store.max_bytes}"
    if not torch.equal(out, ref):
        return f"{what}: output differs from plain decoding"
    if streamed and ours_stream.calls != plain_stream.calls:
        return f"{what}: the streamer received other tokens"
    st = assistant.stats
    new = out.shape[1] - ids.shape[1]
    if st.new_tokens != new or sum(st.committed) + 1 != new or len(st.committed) != st.steps:
        return f"{what}: stats {st.new_tokens} new, {st.steps} steps, committed {st.committed} for {new} tokens"
    return None


def test_fuzzed_greedy_exactness(world):
    failures = [f for f in (_run_case(world, s) for s in range(CASES)) if f is not None]
    summary = (f"fuzz: {CASES} cases, {len(failures)} mismatches, {world.reused} reused a cached prefix "
               f"(base seed {BASE_SEED})")
    print(f"\n{summary}", file=sys.stderr)
    assert not failures, summary + "\n" + "\n".join(failures[:10])
    assert world.reused >= CASES // 20, summary  # the prefix cache is exercised, not only present
