"""The decoding methods the suite compares, each one ``generate`` call on the same model.

Names (``--methods``):

- ``greedy``: plain ``model.generate``; every ratio divides by it.
- ``pld``: transformers' prompt lookup decoding (``prompt_lookup_num_tokens=10``,
  ``max_matching_ngram_size=2``, transformers' documented defaults).
- ``assisted``: transformers' assisted generation with a draft model (``--draft-model``).
- ``retrodraft:SPEC``: retrodraft with ``SPEC`` = ``default`` or drafter names joined by ``+``,
  optionally ``@BUDGET`` (``retrodraft:recycling+lookup@16``, fixed trees) or ``@autoBUDGET``
  (cost-model sizing capped at BUDGET nodes, ``retrodraft:history+lookup@auto64``), optionally
  ending in ``/noreuse`` (the prefix cache off: every request prefilled from scratch,
  ``retrodraft:default/noreuse``). A drafter may take numeric
  options in brackets, ``;``-separated (``retrodraft:recycling+retrieval[miss=1]``). A spec with
  ``retrieval`` drafts from the corpus index given by ``--index`` (without one, from the prompt
  only).
- ``suffix``: SuffixDecoding's own implementation (arctic-inference's ``SuffixDecodingCache``) at
  its published defaults, as a drafter under retrodraft's verifier (see :mod:`.peers`); options
  ``suffix[tree=1;depth=64;factor=1.0;offset=0;min_prob=0.1;requests=100000]``, node budget
  ``@N`` (default 16, the plugin's draft length) or ``@auto`` (retrodraft's cost-model sizing).
  Skipped, with the install command, when arctic-inference is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..assistant import RetroDraft
from ..errors import ConfigError

__all__ = ["Method", "make_method"]


@dataclass
class Method:
    """A named way to call ``generate``.

    Attributes:
        name: as given on the command line.
        kwargs: extra ``generate`` arguments.
        assistant: the RetroDraft instance (kept across prompts: a warm start), if any.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    assistant: RetroDraft | None = None

    def generate(self, model, ids: torch.Tensor, **gen_kwargs) -> torch.Tensor:
        kw = {**gen_kwargs, **self.kwargs}
        if self.assistant is not None:
            kw["assistant"] = self.assistant
        return model.generate(ids, **kw)

    def step_stats(self) -> dict | None:
        """Statistics of the last call (retrodraft only)."""
        if self.assistant is None:
            return None
        s = self.assistant.stats
        return {
            "steps": s.steps,
            "accepted": list(s.committed),  # tokens committed per step (the report's MAT)
            "tree_sizes": list(s.tree_sizes),
            "draft_s": s.draft_s,
            "verify_s": s.verify_s,
            "bookkeeping_s": s.bookkeeping_s,
            "prefill_s": s.prefill_s,
            "prefix_reused": s.prefix_reused,
        }

    def reset(self) -> None:
        if self.assistant is not None:
            self.assistant.reset()


def _options(part: str, method: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name[key=value;...]`` (numeric values) -> ``(name, options)``."""
    dname, _, opts = part.partition("[")
    kwargs: dict[str, Any] = {}
    if opts:
        if not opts.endswith("]"):
            raise ConfigError(f"bad drafter options in method {method!r}: {part!r} (expected name[key=value;...])")
        for item in filter(None, opts[:-1].split(";")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"bad drafter option {item!r} in method {method!r}: expected key=value")
            try:
                kwargs[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError:
                raise ConfigError(f"bad drafter option {item!r} in method {method!r}: values must be numbers") from None
    return dname, kwargs


def _drafter(part: str, index, method: str):
    """``name`` or ``name[key=value;...]`` (numeric values) -> a drafter instance."""
    from ..drafters import make_drafter

    dname, kwargs = _options(part, method)
    if dname == "retrieval" and index is not None:
        kwargs["index"] = index
    try:
        return make_drafter(dname, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad drafter option in method {method!r}: {e}") from None


#: ``suffix[...]`` option names -> :class:`~.peers.SuffixParams` fields.
_SUFFIX_OPTIONS = {"depth": "max_tree_depth", "requests": "max_cached_requests", "factor": "max_spec_factor",
                   "offset": "max_spec_offset", "min_prob": "min_token_prob", "tree": "use_tree_spec"}


def _suffix(name: str) -> Method:
    """``suffix[opts]@N``: arctic-inference's SuffixDecoding as the only drafter, N nodes per step."""
    from .peers import SuffixDecodingPeer, SuffixParams

    spec, _, budget = name.partition("@")
    _, opts = _options(spec, name)
    unknown = set(opts) - set(_SUFFIX_OPTIONS)
    if unknown:
        raise ConfigError(f"bad drafter option {sorted(unknown)[0]!r} in method {name!r}; known: "
                          f"{', '.join(_SUFFIX_OPTIONS)}")
    fields = {_SUFFIX_OPTIONS[k]: (bool(v) if k == "tree" else v) for k, v in opts.items()}
    params = SuffixParams(**fields)
    if budget == "auto":
        return Method(name, assistant=RetroDraft(drafters=[SuffixDecodingPeer(params)],
                                                 budget=params.num_speculative_tokens, sizing="auto"))
    try:
        b = int(budget) if budget else params.num_speculative_tokens
    except ValueError:
        raise ConfigError(f"bad budget in method {name!r}: {budget!r} is not an integer or 'auto'") from None
    params = SuffixParams(**{**fields, "num_speculative_tokens": b})
    return Method(name, assistant=RetroDraft(drafters=[SuffixDecodingPeer(params)], budget=b, sizing="fixed"))


def make_method(name: str, draft_model=None, index=None) -> Method:
    """A :class:`Method` from its command-line name (see the module docstring); ``index`` (a
    corpus index folder or list of them) feeds methods that include the ``retrieval`` drafter."""
    if name == "greedy":
        return Method(name)
    if name == "pld":
        return Method(name, {"prompt_lookup_num_tokens": 10, "max_matching_ngram_size": 2})
    if name == "assisted":
        if draft_model is None:
            raise ConfigError("method 'assisted' needs a draft model: pass --draft-model NAME.")
        return Method(name, {"assistant_model": draft_model})
    if name.startswith("retrodraft"):
        spec = name.partition(":")[2] or "default"
        spec, slash, flag = spec.partition("/")
        if slash and flag != "noreuse":
            raise ConfigError(f"bad method {name!r}: the only /option is /noreuse (the prefix cache off)")
        reuse = {"prefix_cache": 0} if slash else {}
        spec, _, budget = spec.partition("@")
        # @N: fixed N-node trees; @autoN: cost-model sizing with N nodes at most.
        sizing = "auto" if budget.startswith("auto") else None
        budget = budget[4:] if sizing else budget
        try:
            b = int(budget) if budget else None
        except ValueError:
            raise ConfigError(f"bad budget in method {name!r}: {budget!r} is not an integer") from None
        drafters = None if spec == "default" else [_drafter(part, index, name) for part in spec.split("+")]
        return Method(name, assistant=RetroDraft(drafters=drafters, budget=b, sizing=sizing, **reuse))
    if name == "suffix" or name.startswith(("suffix@", "suffix[")):
        return _suffix(name)
    raise ConfigError(f"unknown method {name!r}; use greedy, pld, assisted, suffix[@BUDGET] or "
                      f"retrodraft[:DRAFTERS[@BUDGET]].")
