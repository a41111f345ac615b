"""Code completion drafting from an indexed code base.

    build_code_index("qwen2.5-coder-1.5b", "indexes/stdlib")          # the stdlib on disk
    assistant = code_assistant("indexes/stdlib")
    model.generate(stub_ids, assistant=assistant, max_new_tokens=128)

Completions reuse idioms of the code base (``for i in range(len(``, ``raise ValueError(``,
docstring phrasing); the ``retrieval`` drafter proposes them from the index while ``lookup``
covers names from the stub itself and ``recycling`` the model's own habits.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Sequence

from ..assistant import RetroDraft

__all__ = ["stdlib_path", "build_code_index", "code_assistant"]


def stdlib_path() -> Path:
    """The Python standard library of this interpreter (~1,800 ``.py`` files)."""
    return Path(sysconfig.get_paths()["stdlib"])


def build_code_index(tokenizer: str, out: str | Path, sources: Sequence[str] | None = None,
                     include: Sequence[str] = ("*.py",),
                     exclude: Sequence[str] = ("*/test/*", "*/tests/*", "*/site-packages/*"),
                     force: bool = False, progress: bool = True, **kwargs) -> dict:
    """Index ``sources`` (default: the standard library) for the tokenizer of model ``tokenizer``."""
    from .. import models
    from ..index import build_index

    tok = models.load_tokenizer(tokenizer)
    return build_index(list(sources or [str(stdlib_path())]), tok, out, include=include, exclude=exclude,
                       force=force, progress=progress, tokenizer_name=tokenizer, **kwargs)


def code_assistant(index: str | Path | Sequence[str | Path], budget: int | str = "auto") -> RetroDraft:
    """RetroDraft drafting from the model's habits, the stub and the indexed code base."""
    return RetroDraft(drafters=["recycling", "lookup", "retrieval"], index=index, budget=budget)
