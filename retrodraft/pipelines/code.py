"""Code completion drafting from an indexed code base.

    build_code_index("qwen2.5-coder-1.5b", "indexes/stdlib")          # the stdlib on disk
    assistant = code_assistant("indexes/stdlib")
    model.generate(stub_ids, assistant=assistant, max_new_tokens=128)

Completions reuse idioms of the code base (``for i in range(len(``, ``raise ValueError(``,
docstring phrasing); the ``retrieval`` drafter proposes them from the index while ``lookup``
covers names from the stub itself and ``recycling`` the model's own habits.

A repository's own functions are the other thing completions copy from: code that calls
``parse_header(`` tends to repeat its signature, argument names and docstring phrasing. A
:class:`SymbolTable` holds every definition of a code base; one Aho-Corasick pass over the prompt
(pyahocorasick: all names at once, linear in the prompt) finds which of them the prompt mentions,
and :func:`symbol_context` tokenizes their source as the request's documents, which the retrieval
drafter drafts from::

    symbols = SymbolTable.from_sources(["my_repo/"])
    assistant = code_assistant("indexes/stdlib")
    found, documents = symbol_context(symbols, prompt_text, tokenizer)
    with assistant.options(documents=documents):
        model.generate(stub_ids, assistant=assistant, max_new_tokens=128)
"""

from __future__ import annotations

import ast
import fnmatch
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..assistant import RetroDraft
from ..errors import ConfigError

__all__ = ["stdlib_path", "build_code_index", "code_assistant", "Symbol", "SymbolTable", "symbol_context"]

_EXCLUDE = ("*/test/*", "*/tests/*", "*/site-packages/*")


def stdlib_path() -> Path:
    """The Python standard library of this interpreter (~1,800 ``.py`` files)."""
    return Path(sysconfig.get_paths()["stdlib"])


def build_code_index(tokenizer: str, out: str | Path, sources: Sequence[str] | None = None,
                     include: Sequence[str] = ("*.py",),
                     exclude: Sequence[str] = _EXCLUDE,
                     force: bool = False, progress: bool = True, **kwargs) -> dict:
    """Index ``sources`` (default: the standard library) for the tokenizer of model ``tokenizer``."""
    from .. import models
    from ..index import build_index

    tok = models.load_tokenizer(tokenizer)
    return build_index(list(sources or [str(stdlib_path())]), tok, out, include=include, exclude=exclude,
                       force=force, progress=progress, tokenizer_name=tokenizer, **kwargs)


def code_assistant(index: str | Path | Sequence[str | Path] | None = None, budget: int | None = None,
                   sizing: str | None = None) -> RetroDraft:
    """RetroDraft drafting from the model's habits, the stub and the indexed code base (and the
    request's documents, see :func:`symbol_context`); ``budget`` / ``sizing`` as for
    :class:`~retrodraft.RetroDraft`."""
    return RetroDraft(drafters=["recycling", "lookup", "retrieval"], index=index, budget=budget, sizing=sizing)


@dataclass(frozen=True)
class Symbol:
    """One definition: ``name`` (as called), ``kind`` (def / class), where, and its source."""

    name: str
    kind: str
    path: str
    line: int
    source: str


def _is_ident(c: str) -> bool:
    return c.isalnum() or c == "_"


class SymbolTable:
    """Every function, method and class defined in a code base, findable by name in any text.

    Args:
        symbols: the definitions; names shorter than ``min_len`` are not looked up (``f``, ``x``
            would match everywhere and say nothing).
    """

    def __init__(self, symbols: Sequence[Symbol], min_len: int = 4) -> None:
        import ahocorasick

        self.symbols = list(symbols)
        self.by_name: dict[str, list[int]] = {}
        for i, s in enumerate(self.symbols):
            if len(s.name) >= min_len:
                self.by_name.setdefault(s.name, []).append(i)
        self._automaton = ahocorasick.Automaton()
        for name in self.by_name:
            self._automaton.add_word(name, name)
        if self.by_name:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.symbols)

    @classmethod
    def from_sources(cls, sources: Sequence[str | Path], include: Sequence[str] = ("*.py",),
                     exclude: Sequence[str] = _EXCLUDE, max_chars: int = 4000, min_len: int = 4) -> "SymbolTable":
        """Parse ``sources`` (files or folders) and collect their definitions (each capped at
        ``max_chars`` of source). Files that do not parse are skipped."""
        symbols: list[Symbol] = []
        files: list[Path] = []
        for src in sources:
            p = Path(src)
            if not p.exists():
                raise ConfigError(f"source {src} does not exist")
            files += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            name = str(f)
            if not any(fnmatch.fnmatch(f.name, pat) for pat in include) or any(
                    fnmatch.fnmatch(name, pat) for pat in exclude):
                continue
            try:
                text = f.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    src = ast.get_source_segment(text, node) or ""
                    kind = "class" if isinstance(node, ast.ClassDef) else "def"
                    symbols.append(Symbol(node.name, kind, name, node.lineno, src[:max_chars]))
        return cls(symbols, min_len=min_len)

    def mentioned(self, text: str, limit: int = 8) -> list[Symbol]:
        """Definitions of the names ``text`` mentions as whole identifiers, in order of first
        mention, at most ``limit``."""
        if not self.by_name:
            return []
        seen: dict[str, None] = {}
        for end, name in self._automaton.iter(text):
            start = end - len(name) + 1
            if (start > 0 and _is_ident(text[start - 1])) or (end + 1 < len(text) and _is_ident(text[end + 1])):
                continue
            seen.setdefault(name, None)
        out: list[Symbol] = []
        for name in seen:
            for i in self.by_name[name]:
                if len(out) == limit:
                    return out
                out.append(self.symbols[i])
        return out


def symbol_context(symbols: SymbolTable, text: str, tokenizer, limit: int = 8) -> tuple[list[Symbol], list[list[int]]]:
    """The definitions ``text`` mentions (at most ``limit``) and their sources' token ids, to pass
    as the request's documents: ``assistant.options(documents=...)``."""
    found = symbols.mentioned(text, limit=limit)
    return found, [list(tokenizer(s.source, add_special_tokens=False)["input_ids"]) for s in found]
