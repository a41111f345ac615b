"""KV-cache compaction: after a tree step keep the prefix plus the accepted path, drop the rest.

A tree pass appends ``len(tree)`` positions to every layer's cache, in node order. Only the
root and the accepted nodes belong to the sequence; the other branches must go before the next
step, or later tokens would attend to rejected guesses.

Supported: ``DynamicCache`` with full-attention layers, and sliding-window layers as long as the
sequence never outgrows the window (then they hold every position, like a full layer).
Anything else is refused up front with :class:`UnsupportedCacheError`, never corrupted.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import RetroDraftError

__all__ = ["UnsupportedCacheError", "check_cache", "compact"]


class UnsupportedCacheError(RetroDraftError, ValueError):
    """The model's KV cache cannot be compacted after a tree step."""


def check_cache(cache, max_positions: int) -> None:
    """Refuse caches whose layers :func:`compact` cannot edit.

    Args:
        cache: the cache ``generate`` prepared.
        max_positions: the most positions the cache will ever hold in this call (prompt,
            output and the largest tree).
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    if not isinstance(cache, DynamicCache):
        raise UnsupportedCacheError(
            f"retrodraft needs a DynamicCache, got {type(cache).__name__}. "
            "Drop cache_implementation / the cache you passed, or pass a DynamicCache()."
        )
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicSlidingWindowLayer:
            if max_positions >= layer.sliding_window:
                raise UnsupportedCacheError(
                    f"layer {i} uses a sliding window of {layer.sliding_window} positions, but this call may "
                    f"need {max_positions}; retrodraft cannot roll back a window that has slid. Lower "
                    "max_new_tokens / the draft budget, or use a model without sliding-window attention."
                )
        elif type(layer) is not DynamicLayer:
            raise UnsupportedCacheError(
                f"layer {i} of the cache is a {type(layer).__name__}; retrodraft can compact only "
                "DynamicLayer (and sliding-window layers below their window)."
            )


def compact(cache, past_len: int, keep: np.ndarray) -> None:
    """Keep positions ``[0, past_len)`` plus ``past_len + keep`` in every layer, in place.

    Args:
        cache: a checked ``DynamicCache`` whose layers hold ``past_len + len(tree)`` positions.
        past_len: positions cached before the tree pass.
        keep: ``(m,)`` ascending node indices to keep (the accepted path, root first).
    """
    m = int(keep.shape[0])
    contiguous = bool(keep[-1] == m - 1)  # keep == [0, 1, ..., m-1]: a plain crop
    idx = None
    for layer in cache.layers:
        if not layer.is_initialized:
            continue
        if contiguous:
            layer.keys = layer.keys[..., : past_len + m, :]
            layer.values = layer.values[..., : past_len + m, :]
        else:
            if idx is None or idx.device != layer.keys.device:
                idx = torch.from_numpy(keep + past_len).to(layer.keys.device)
            # In place: only the m kept rows move; a cat would copy the whole context every step.
            # index_select materialises first, and keep[j] >= j, so no row is read after it is written.
            end = past_len + m
            layer.keys[..., past_len:end, :] = layer.keys.index_select(-2, idx)
            layer.values[..., past_len:end, :] = layer.values.index_select(-2, idx)
            layer.keys = layer.keys[..., :end, :]
            layer.values = layer.values[..., :end, :]
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = past_len + m
