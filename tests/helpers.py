"""Shared test fixtures: tiny random-weight models and drafters that exercise the engine."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer

from retrodraft.drafters.base import Drafter
from retrodraft.tree import DraftTree

ARCHS = ("llama", "qwen2", "mistral")
SEEDS = {"llama": 0, "qwen2": 1, "mistral": 2}


def tiny_model(arch: str = "llama", vocab: int = 96, seed: int = 0, dtype=torch.float32, attn="sdpa", **over):
    """A 2-layer random-weight causal LM of the given architecture (fast, deterministic)."""
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=0,
        eos_token_id=95,
        pad_token_id=2,
        tie_word_embeddings=False,
        # Wide initial weights keep a random model from collapsing into one repeated token.
        initializer_range=0.3,
    )
    if arch == "mistral":
        kw["sliding_window"] = 4096
    kw.update(over)
    config = AutoConfig.for_model(arch, **kw)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    model.generation_config.pad_token_id = 2
    # No EOS by default: random weights would stop at it by chance; tests that want one pass it.
    model.generation_config.eos_token_id = None
    return model.eval()


class RandomDrafter(Drafter):
    """Guesses random trees: exercises rejection, branching and non-contiguous compaction."""

    name = "random"

    def __init__(self, vocab: int, seed: int = 0, width: int = 3):
        self.vocab, self.rng, self.width = vocab, np.random.default_rng(seed), width

    def propose(self, context, budget):
        tokens, parents = [int(context[-1])], [-1]
        while len(tokens) - 1 < budget:
            parents.append(int(self.rng.integers(0, len(tokens))))
            tokens.append(int(self.rng.integers(0, self.vocab)))
        return DraftTree.from_arrays(tokens, parents)


class OracleDrafter(Drafter):
    """Knows the reference continuation: puts it on a *late* branch behind decoys.

    Makes long acceptances with the accepted path at non-contiguous node indices, the hard case
    for cache compaction.
    """

    name = "oracle"

    def __init__(self, reference: list[int], prompt_len: int, vocab: int, seed: int = 0, miss_every: int = 0):
        self.reference, self.prompt_len, self.vocab = reference, prompt_len, vocab
        self.rng = np.random.default_rng(seed)
        self.miss_every = miss_every
        self.calls = 0

    def propose(self, context, budget):
        self.calls += 1
        done = len(context) - self.prompt_len
        truth = self.reference[done : done + max(1, budget // 2)]
        if self.miss_every and self.calls % self.miss_every == 0 and truth:
            truth = truth[:-1] + [(truth[-1] + 1) % self.vocab]
        decoy = [int(x) for x in self.rng.integers(0, self.vocab, size=max(1, budget - len(truth)))]
        tree = DraftTree.from_paths(int(context[-1]), [decoy, truth])
        return tree.prune(budget)


def outcome(context, tree, accepted, logits=None, committed=None, k: int = 8):
    """The :class:`~retrodraft.drafters.base.Outcome` the loop would build for one step.

    ``logits`` ``(len(tree), vocab)`` give the model's top-``k`` at every node (none when
    omitted); ``committed`` defaults to the accepted drafts after the root.
    """
    from retrodraft.drafters.base import Outcome
    from retrodraft.verify import top_candidates

    accepted = np.asarray(accepted, dtype=np.int64)
    if logits is None:
        top = (np.full((len(tree), 0), -1, np.int32), np.zeros((len(tree), 0), np.float32))
    else:
        top = top_candidates(logits, k)
    if committed is None:
        committed = tree.tokens[accepted[1:]]
    return Outcome(np.asarray(context, dtype=np.int64), tree, accepted, np.asarray(committed, dtype=np.int64), *top)


class Recorder(BaseStreamer):
    """A streamer that records every ``put`` (as lists) and ``"end"``, to compare two runs' streams."""

    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(value.tolist())

    def end(self):
        self.calls.append("end")


def has_path(tree: DraftTree, path) -> bool:
    """True when ``tree`` holds the token path ``path`` below its root."""
    kids, node = tree.children(), 0
    for t in path:
        if int(t) not in kids[node]:
            return False
        node = kids[node][int(t)]
    return True
