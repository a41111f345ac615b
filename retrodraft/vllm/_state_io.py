"""The proposer's one contact with :mod:`retrodraft.state`: load and save the history memory.

A state saved by ``RetroDraft.save`` may hold several drafters; inside vLLM only the token-only
drafters' entries mean anything, and of those only ``history`` learns (its memory of finished
requests). Kept in one module so a change of the state API touches two calls here.
"""

from __future__ import annotations

from pathlib import Path

from .. import state as _state
from ..drafters.history import History

__all__ = ["check", "load_history", "save_history"]


def check(path: str | Path, tokenizer) -> None:
    """Refuse (one :class:`StateError` line) a state saved for another tokenizer or damaged; a
    missing folder is fine (the proposer starts cold and saves there)."""
    path = Path(path)
    if not path.exists():
        return
    _state.verify(path, tokenizer)


def load_history(path: str | Path, tokenizer, history: History) -> bool:
    """Fill ``history``'s memory from the ``history`` entry saved at ``path``; False when the
    folder does not exist or holds no such entry."""
    path = Path(path)
    if not path.exists():
        return False
    if not any(e["name"] == "history" for e in _state.read_manifest(path)["drafters"]):
        return False
    _state.restore(path, tokenizer, [history], partial=True)
    return True


def save_history(path: str | Path, tokenizer, history: History) -> None:
    """Save ``history``'s memory to ``path`` (atomically; a previous state there is replaced)."""
    _state.save(path, tokenizer, [history])
