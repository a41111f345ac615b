"""Corpus sources for ``retrodraft index build``: files, folders, globs and JSONL fields.

Yields one text per document. A file that is not UTF-8 text (binary, another encoding) is
skipped and counted, never fatal; a source that names nothing, or yields no text at all, is an
error that says which one.
"""

from __future__ import annotations

import fnmatch
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import SourceError

__all__ = ["SourceStats", "iter_files", "iter_documents"]

_GLOB_CHARS = set("*?[")


@dataclass
class SourceStats:
    """What reading the sources found (reported at the end of a build)."""

    files: int = 0
    documents: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    bytes: int = 0

    def skip(self, path: Path, why: str) -> None:
        self.skipped += 1
        if len(self.skipped_examples) < 5:
            self.skipped_examples.append(f"{path} ({why})")


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    s = str(path)
    return any(fnmatch.fnmatch(s, p) or fnmatch.fnmatch(path.name, p) for p in patterns)


def iter_files(sources: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """Every file the sources name, sorted per source, filtered by include/exclude globs."""
    if not sources:
        raise SourceError("no corpus source given: name files, folders or globs to index.")
    out: list[Path] = []
    for src in sources:
        if _GLOB_CHARS & set(src):
            found = [Path(p) for p in sorted(glob.glob(src, recursive=True)) if Path(p).is_file()]
            if not found:
                raise SourceError(f"the pattern {src!r} matches no file.")
        else:
            p = Path(src)
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.is_file())
                if not found:
                    raise SourceError(f"the folder {src} is empty.")
            elif p.is_file():
                found = [p]
            else:
                raise SourceError(f"corpus source {src} does not exist.")
        out += found
    kept = [f for f in out if (not include or _matches(f, include)) and not _matches(f, exclude)]
    if not kept:
        raise SourceError(f"no file left after --include {list(include)} / --exclude {list(exclude)}.")
    return list(dict.fromkeys(kept))


def iter_documents(files: Sequence[Path], stats: SourceStats, jsonl_field: str | None = None) -> Iterator[str]:
    """Texts of ``files``: one per file, or one per line's ``jsonl_field`` for ``.jsonl`` files."""
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            stats.skip(f, e.strerror or "unreadable")
            continue
        if b"\x00" in raw[:8192]:
            stats.skip(f, "binary")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats.skip(f, "not UTF-8")
            continue
        stats.files += 1
        stats.bytes += len(raw)
        if jsonl_field and f.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line).get(jsonl_field)
                except (json.JSONDecodeError, AttributeError):
                    stats.skip(Path(f"{f}:{n}"), "bad JSON line")
                    continue
                if isinstance(value, str) and value:
                    stats.documents += 1
                    yield value
        elif text:
            stats.documents += 1
            yield text
