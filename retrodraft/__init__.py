"""retrodraft: lossless, model-free tree speculative decoding for Hugging Face causal LMs.

    import retrodraft
    from retrodraft import RetroDraft
    out = model.generate(input_ids, max_new_tokens=256, assistant=RetroDraft())

Corpus indexes live in :mod:`retrodraft.index`, ready-made code-completion and RAG pipelines
in :mod:`retrodraft.pipelines`.

Importing the package routes ``generate`` calls whose ``assistant`` is a :class:`RetroDraft`
to retrodraft's loop; every other call is left to transformers untouched. Without the hook,
:func:`retrodraft.generate` does the same.
"""

from .assistant import RetroDraft, Stats
from .drafters import Drafter, Outcome, Request, make_drafter
from .errors import ConfigError, RetroDraftError, UnsupportedCallError, UnsupportedModelError
from .generate import _install_hook, generate
from .shape import TreeShape
from .tree import DraftTree

__version__ = "0.1.0"
__all__ = [
    "RetroDraft",
    "Stats",
    "generate",
    "Drafter",
    "Request",
    "Outcome",
    "DraftTree",
    "make_drafter",
    "TreeShape",
    "RetroDraftError",
    "ConfigError",
    "UnsupportedModelError",
    "UnsupportedCallError",
]

_install_hook()
