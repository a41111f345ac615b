"""Tree attention, positions and cache compaction against brute-force sequential decoding."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from helpers import ARCHS, tiny_model
from retrodraft.cache import UnsupportedCacheError, check_cache, compact
from retrodraft.tree import DraftTree
from retrodraft.verify import tree_forward


def _random_tree(rng, root, n, vocab):
    parents = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    tokens = [root] + [int(rng.integers(3, vocab)) for _ in range(n - 1)]
    return DraftTree.from_arrays(tokens, parents)


def _prefill(model, prefix):
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix]), cache=cache, use_cache=True)
    return cache


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_logits_equal_sequential_logits(arch, attn):
    model = tiny_model(arch, attn=attn)
    rng = np.random.default_rng(0)
    prefix = [int(x) for x in rng.integers(3, 96, size=9)]
    tree = _random_tree(rng, root=17, n=12, vocab=96)
    cache = _prefill(model, prefix)
    logits = tree_forward(model, tree, cache, past_len=len(prefix))
    assert cache.get_seq_length() == len(prefix) + len(tree)
    for i in range(len(tree)):
        seq = prefix + tree.tokens[tree.path_to(i)].tolist()
        ref = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        torch.testing.assert_close(logits[i], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_compaction_leaves_the_cache_of_the_accepted_path(arch):
    model = tiny_model(arch)
    rng = np.random.default_rng(1)
    prefix = [int(x) for x in rng.integers(3, 96, size=7)]
    tree = _random_tree(rng, root=11, n=15, vocab=96)
    leaf = int(np.argmax(tree.depths))  # deepest node: a path with gaps in node order
    path = tree.path_to(leaf)
    cache = _prefill(model, prefix)
    tree_forward(model, tree, cache, past_len=len(prefix))
    compact(cache, len(prefix), path)

    ref = _prefill(model, prefix + tree.tokens[path].tolist())
    assert cache.get_seq_length() == ref.get_seq_length()
    for got, want in zip(cache.layers, ref.layers):
        torch.testing.assert_close(got.keys, want.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.values, want.values, atol=1e-5, rtol=1e-5)

    # and the next step computed from the compacted cache matches a fresh forward
    nxt = model(input_ids=torch.tensor([[5]]), cache=cache, use_cache=True).logits[0, -1]
    full = model(input_ids=torch.tensor([prefix + tree.tokens[path].tolist() + [5]])).logits[0, -1]
    torch.testing.assert_close(nxt, full, atol=1e-4, rtol=1e-4)


def test_contiguous_keep_is_a_crop():
    model = tiny_model("llama")
    cache = _prefill(model, [5, 6, 7, 8, 9, 10])
    compact(cache, 3, np.array([0, 1]))
    assert cache.get_seq_length() == 5


def test_refuses_a_static_cache():
    from transformers import StaticCache

    model = tiny_model("llama")
    with pytest.raises(UnsupportedCacheError, match="needs a DynamicCache"):
        check_cache(StaticCache(config=model.config, max_cache_len=64), 10)


def test_refuses_a_sliding_window_that_would_slide():
    model = tiny_model("mistral", sliding_window=32)
    cache = _prefill(model, [5, 6, 7])
    with pytest.raises(UnsupportedCacheError, match="sliding window of 32"):
        check_cache(cache, 40)
    check_cache(cache, 20)  # below the window: fine
