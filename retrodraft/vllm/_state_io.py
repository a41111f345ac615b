"""The proposer's one contact with :mod:`retrodraft.state`: load and save the history memory.

A state saved by ``RetroDraft.save`` may hold several drafters; inside vLLM only the token-only
drafters' entries mean anything, and of those only ``history`` learns (its memory of finished
requests). Kept in one module so a change of the state API touches two calls here.
"""

from __future__ import annotations

from pathlib import Path

from .. import state as _state
from ..assistant import RetroDraft
from ..drafters.history import History
from ..errors import StateError

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
    manifest = _state.read_manifest(path)
    _state._check_tokenizer(path, manifest, _state.fingerprint(tokenizer))
    entries = [e for e in manifest["drafters"] if e["name"] == "history"]
    if not entries:
        return False
    try:
        history.load_state(_state._read_entry(path, entries[0]))
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"{path}: the saved history is invalid ({e}).") from None
    return True


def save_history(path: str | Path, tokenizer, history: History) -> None:
    """Save ``history``'s memory to ``path`` (atomically; a previous state there is replaced)."""
    _state.save(RetroDraft(drafters=[history]), path, tokenizer)
