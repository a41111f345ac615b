"""Drafters: training-free guessers of what the model will say next, one file each.

Names are stable public API: ``"recycling"`` (Token Recycling), ``"lookup"`` (prompt lookup
that branches over several matches), ``"stand"`` (n-grams storing distributions) and ``"aded"``
(an adaptive tri-gram table searched with PUCT), ``"retrieval"`` (continuations from corpus
indexes and a per-request datastore) and ``"history"`` (a memory of past requests, with copying
that survives small edits).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import Drafter, Outcome, Request

__all__ = ["Drafter", "Request", "Outcome", "DRAFTERS", "make_drafter"]

#: name -> "module:Class", imported on first use.
DRAFTERS: dict[str, str] = {
    "recycling": "retrodraft.drafters.recycling:TokenRecycling",
    "lookup": "retrodraft.drafters.lookup:PromptLookup",
    "stand": "retrodraft.drafters.stand:Stand",
    "aded": "retrodraft.drafters.aded:Aded",
    "retrieval": "retrodraft.drafters.retrieval:Retrieval",
    "history": "retrodraft.drafters.history:History",
}


def make_drafter(name: str, **kwargs) -> Drafter:
    """A new drafter by its public name, e.g. ``make_drafter("recycling", k=8)``."""
    if not isinstance(name, str) or name not in DRAFTERS:
        raise ConfigError(f"unknown drafter {name!r}; known drafters: {', '.join(sorted(DRAFTERS))}.")
    module, cls = DRAFTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
