"""Prefix caching across requests: reuse the KV of earlier calls that share the prompt's start.

Agent loops and chats resend the whole conversation every turn, so most of each prompt was
already run through the model by the previous request. :class:`PrefixCache` keeps the final KV
cache of recent calls (prompt and output: the cache holds every token but the last) in a store
bounded by bytes, evicted least recently used first. A new call copies the longest stored prefix
of its prompt into its own, empty ``DynamicCache`` and prefills only the rest.

Exactness: the KV of position ``p`` depends only on tokens ``0..p``, so a stored prefix equals
what a fresh prefill would compute (up to floating-point summation order). At most
``prompt_len - 1`` positions are reused: the last prompt token must still go through the model,
whose logits there choose the first new token.

What is never reused, with the reason reported (``Stats.prefix_skip``):

- another model, or the same model after its weights, dtype or device changed (entries are
  keyed by the model object and a fingerprint of its parameters);
- caches other than a ``DynamicCache`` of full-attention layers and sliding-window layers that
  have not slid (static and quantized caches, windows that dropped positions);
- a cache the caller passed in already holding positions.

Stored entries are never mutated: a call copies the reused positions into its own cache (the
copy ``cache.update`` makes), and every later write to that cache lands in new tensors. The
store is shared safely by threads (one lock), and saved nowhere: it is the model's, not the
drafters', and would be stale in another process.

Lookup scans the entries (each holds a whole conversation's KV, megabytes, so a store holds few)
and takes the longest common prefix; an entry whose tokens are a prefix of a newer one's is
dropped when the newer one is stored, so a conversation keeps one entry, its latest turn.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["PrefixCache", "DEFAULT_PREFIX_CACHE_BYTES", "check_prefix_cache_bytes"]

#: The default byte budget of ``RetroDraft(prefix_cache=...)``: 1 GiB fits a laptop and holds
#: about 37,000 tokens of Qwen2.5-Coder-1.5B's bfloat16 KV (28 KiB a token).
DEFAULT_PREFIX_CACHE_BYTES = 1 << 30


def check_prefix_cache_bytes(value) -> int:
    """``value`` as a byte budget (a whole number >= 0; 0 turns the cache off), or a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ConfigError(f"prefix_cache must be a byte budget (a whole number, 0 turns it off), got {value!r}.")
    return int(value)


@dataclass
class _Entry:
    owner: "weakref.ref[torch.nn.Module]"
    fingerprint: tuple
    tokens: np.ndarray  # (n,) int64: the tokens whose KV ``layers`` hold
    layers: list  # per layer: (keys, values) of shape (1, heads, n, head_dim), or None (uninitialized)
    nbytes: int


class PrefixCache:
    """A bounded store of KV caches keyed by token prefix, shared by the calls of one assistant.

    Args:
        max_bytes: the most bytes of KV tensors kept (storage sizes); least recently used
            entries go first. An entry larger than this is not kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        self.max_bytes = check_prefix_cache_bytes(max_bytes)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PrefixCache(max_bytes={self.max_bytes}, entries={len(self)}, nbytes={self.nbytes})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held now (at most :attr:`max_bytes`)."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    # ------------------------------------------------------------------ use
    def restore(self, model: torch.nn.Module, cache, ids: np.ndarray, limit: int) -> tuple[int, str]:
        """Copy the longest stored prefix of ``ids[:limit]`` into the empty ``cache``.

        Args:
            model: the model this call runs (entries of other models never match).
            cache: the call's cache, as ``generate`` prepared it.
            ids: ``(prompt_len,)`` prompt ids.
            limit: the most positions to reuse (``prompt_len - 1``).

        Returns:
            ``(positions reused, "")``, or ``(0, why nothing was reused)``.
        """
        why = reusable(cache)
        if why:
            return 0, why
        if cache.get_seq_length() > 0:
            return 0, "the call passed a cache that already holds positions"
        if limit <= 0:
            return 0, "prompt of one token"
        owner, fingerprint = model_identity(model)
        with self._lock:
            best, n = None, 0
            for key, e in list(self._entries.items()):
                if e.owner() is None:
                    del self._entries[key]
                    continue
                if e.owner() is not owner or e.fingerprint != fingerprint:
                    continue
                m = min(len(e.tokens), limit)
                diff = np.flatnonzero(e.tokens[:m] != ids[:m])
                common = int(diff[0]) if diff.size else m
                if common > n:
                    best, n = key, common
            if best is None:
                return 0, "no stored prefix" if self._entries else "store empty"
            entry = self._entries[best]
            self._entries.move_to_end(best)
        if cache.layers and len(cache.layers) != len(entry.layers):
            return 0, "stored entry has another layer count"
        for i, kv in enumerate(entry.layers):
            if kv is not None:
                cache.update(kv[0][..., :n, :], kv[1][..., :n, :], i)  # cat into an empty layer: a copy
        return n, ""

    def store(self, model: torch.nn.Module, cache, tokens: np.ndarray, copy: bool = False) -> str:
        """Keep ``cache`` (holding the KV of ``tokens``) for later calls; "" or why not.

        Args:
            tokens: ``(n,)`` the ids whose KV the cache holds, in order.
            copy: clone the tensors (when the caller keeps the cache and may change it);
                otherwise the entry shares them, which is safe because a finished call's cache
                is never written again by retrodraft.
        """
        if self.max_bytes == 0:
            return "off"
        why = reusable(cache)
        if why:
            return why
        n = int(len(tokens))
        layers, nbytes = [], 0
        for layer in cache.layers:
            if not layer.is_initialized or layer.keys is None or layer.keys.numel() == 0:
                layers.append(None)
                continue
            if layer.keys.shape[-2] != n or layer.keys.shape[0] != 1:
                return "cache holds positions other than the call's tokens (a sliding window slid)"
            k, v = (layer.keys.clone(), layer.values.clone()) if copy else (layer.keys, layer.values)
            layers.append((k, v))
            nbytes += k.untyped_storage().nbytes() + v.untyped_storage().nbytes()
        if n == 0 or all(kv is None for kv in layers):
            return "empty cache"
        if nbytes > self.max_bytes:
            return "entry larger than the byte budget"
        owner, fingerprint = model_identity(model)
        tokens = np.array(tokens, dtype=np.int64, copy=True)
        with self._lock:
            for key, e in list(self._entries.items()):
                if e.owner() is None:
                    del self._entries[key]
                elif e.owner() is owner and e.fingerprint == fingerprint:
                    if len(e.tokens) <= n and np.array_equal(e.tokens, tokens[: len(e.tokens)]):
                        del self._entries[key]  # the new entry covers it
                    elif len(e.tokens) > n and np.array_equal(e.tokens[:n], tokens):
                        self._entries.move_to_end(key)  # it already covers the new one
                        return ""
            self._entries[self._next] = _Entry(weakref.ref(owner), fingerprint, tokens, layers, nbytes)
            self._next += 1
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                total -= old.nbytes
        return ""


def reusable(cache) -> str:
    """"" when positions can be copied into and out of ``cache`` exactly, else why not."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    if not isinstance(cache, DynamicCache):
        return f"{type(cache).__name__} is not a DynamicCache"
    if getattr(cache, "offloading", False):
        return "offloaded cache"
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            return f"cache layer {type(layer).__name__}"
    return ""


def model_identity(model: torch.nn.Module) -> tuple[torch.nn.Module, tuple]:
    """The model object and a fingerprint of its parameters (where each lives, its in-place
    version counter, dtype and device): a fine-tuning step, ``load_state_dict`` or ``.to()``
    changes it, so KV computed with other weights is never reused."""
    params = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())
    impl = getattr(model.config, "_attn_implementation", None)
    return model, (impl, hash(params), len(params))
