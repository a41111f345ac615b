"""User-facing errors. Each message says what was wrong and how to fix it.

Every error retrodraft raises on bad input derives from :class:`RetroDraftError`, so callers
(and the CLI, which turns them into one line on stderr) can catch them all at once.
"""

from __future__ import annotations

__all__ = [
    "RetroDraftError",
    "UnsupportedModelError",
    "UnsupportedCallError",
    "ConfigError",
    "ModelNotFoundError",
    "FetchError",
    "ChecksumError",
    "IndexFormatError",
    "IndexMismatchError",
    "SourceError",
    "StateError",
]


class RetroDraftError(Exception):
    """Base class of every error retrodraft raises on purpose."""


class UnsupportedModelError(RetroDraftError, ValueError):
    """The model or its attention kernel cannot be drafted for."""


class UnsupportedCallError(UnsupportedModelError):
    """A ``generate`` call asks for something a retrodraft assistant cannot do (beam search, a
    batch, padding, stop strings without a tokenizer, ...). Subclasses :class:`UnsupportedModelError`
    so code that caught that keeps working."""


class ConfigError(RetroDraftError, ValueError):
    """An argument is out of range or unknown (a budget, a drafter name, a preset)."""


class ModelNotFoundError(RetroDraftError, LookupError):
    """A model name is neither in the registry nor a local folder, or it is not fetched yet."""


class FetchError(RetroDraftError):
    """Downloading or converting an embedded model failed (network, pip, disk, missing extras)."""


class ChecksumError(FetchError):
    """The joined GGUF file does not have the sha256 pinned in the registry."""


class IndexFormatError(RetroDraftError):
    """A corpus index is missing, incomplete, truncated, corrupted or from a newer format."""


class IndexMismatchError(RetroDraftError):
    """A corpus index was built with another tokenizer than the model's."""


class SourceError(RetroDraftError):
    """A corpus source for ``retrodraft index build`` is missing, empty or unreadable."""


class StateError(RetroDraftError):
    """A saved assistant state is missing, truncated, corrupted, from a newer format, or was saved
    for another tokenizer or drafter configuration."""
