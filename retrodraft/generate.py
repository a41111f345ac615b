"""The decoding loop: prefill, then propose -> verify -> accept -> compact -> observe.

It runs as transformers' ``custom_generate`` callable, after ``generate`` has prepared the
generation config, the logits processors, the stopping criteria and the cache, so every
argument of ``generate`` keeps its meaning. Tokens are committed one at a time, with the
stopping criteria checked after each, so output stops exactly where plain decoding stops.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria
from transformers.generation.utils import GenerateDecoderOnlyOutput, GenerationMixin

from .assistant import RetroDraft
from .cache import check_cache, compact
from .errors import UnsupportedModelError
from .verify import accept, tree_forward, tree_inputs

__all__ = ["generate", "decode"]

_ORIGINAL_GENERATE = GenerationMixin.generate
_SUPPORTED_ATTENTION = ("sdpa", "eager")


def generate(model, inputs: torch.Tensor | None = None, *, assistant: RetroDraft | None = None, **kwargs: Any):
    """``model.generate(inputs, **kwargs)`` with retrodraft drafting, no monkey-patching needed.

    Takes every argument ``model.generate`` takes and returns what it returns (a tensor of shape
    ``(1, seq_len)``, or a ``GenerateDecoderOnlyOutput`` with ``return_dict_in_generate=True``).

    Args:
        model: a transformers causal LM (sdpa or eager attention).
        inputs: ``(1, prompt_len)`` prompt ids.
        assistant: the :class:`RetroDraft` to draft with; a default one when omitted. Its
            ``stats`` describe this call afterwards.
    """
    assistant = assistant if assistant is not None else RetroDraft()
    if not isinstance(assistant, RetroDraft):
        raise UnsupportedModelError(f"assistant must be a retrodraft.RetroDraft, got {type(assistant).__name__}")
    _check_model(model)
    # transformers drops the streamer and tokenizer before calling a custom_generate callable,
    # and needs the tokenizer to build stop-string criteria: handle both here.
    streamer = kwargs.pop("streamer", None)
    tokenizer = kwargs.pop("tokenizer", None)
    kwargs = _take_stop_strings(model, tokenizer, kwargs)
    for unsupported in ("assistant_model", "prompt_lookup_num_tokens", "custom_generate"):
        if kwargs.get(unsupported) is not None:
            raise UnsupportedModelError(f"`{unsupported}` cannot be combined with a retrodraft assistant.")

    def _retrodraft_decode(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        return decode(
            model, input_ids, logits_processor, stopping_criteria, generation_config, assistant, streamer, **model_kwargs
        )

    return _ORIGINAL_GENERATE(model, inputs, custom_generate=_retrodraft_decode, **kwargs)


def _check_model(model) -> None:
    if not isinstance(model, GenerationMixin) or getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"retrodraft supports decoder-only causal LMs; {type(model).__name__} is not one."
        )
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in _SUPPORTED_ATTENTION:
        raise UnsupportedModelError(
            f"attention implementation {impl!r} cannot take a tree-attention (4D) mask. Load the model with "
            "attn_implementation='sdpa' (or 'eager'), or switch it with model.set_attn_implementation('sdpa')."
        )


def _take_stop_strings(model, tokenizer, kwargs: dict) -> dict:
    """Move ``stop_strings`` out of the config into an explicit ``StopStringCriteria``."""
    config = kwargs.get("generation_config")
    stop = kwargs.pop("stop_strings", None)
    if stop is None and config is not None:
        stop = config.stop_strings
    if stop is None and config is None:
        stop = getattr(model.generation_config, "stop_strings", None)
    if stop is None:
        return kwargs
    if tokenizer is None:
        raise UnsupportedModelError(
            "stop_strings needs the model's tokenizer: pass tokenizer=... to generate, as transformers requires."
        )
    if config is not None:
        config = GenerationConfig.from_dict(config.to_dict())
        config.stop_strings = None
        kwargs["generation_config"] = config
    criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
    criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop))
    kwargs["stopping_criteria"] = criteria
    if config is None and getattr(model.generation_config, "stop_strings", None) is not None:
        # A model-level default would otherwise be rebuilt without a tokenizer.
        config = GenerationConfig.from_dict(model.generation_config.to_dict())
        config.stop_strings = None
        kwargs["generation_config"] = config
    return kwargs


def _check_call(input_ids: torch.Tensor, generation_config: GenerationConfig, model_kwargs: dict) -> None:
    if generation_config.num_beams != 1:
        raise UnsupportedModelError("beam search cannot be combined with a retrodraft assistant (num_beams must be 1).")
    if (generation_config.num_return_sequences or 1) != 1:
        raise UnsupportedModelError(
            "retrodraft returns one sequence per call (num_return_sequences must be 1); call generate repeatedly."
        )
    if input_ids.shape[0] != 1:
        raise UnsupportedModelError(
            f"retrodraft decodes one sequence at a time (batch size 1), got batch size {input_ids.shape[0]}."
        )
    if generation_config.output_attentions or generation_config.output_hidden_states:
        raise UnsupportedModelError(
            "output_attentions / output_hidden_states are not available with a retrodraft assistant."
        )
    mask = model_kwargs.get("attention_mask")
    if mask is not None and not bool((mask == 1).all()):
        raise UnsupportedModelError("retrodraft needs an unpadded prompt (an attention_mask of all ones).")
    if model_kwargs.get("inputs_embeds") is not None:
        raise UnsupportedModelError("retrodraft needs input_ids, not inputs_embeds.")


@torch.no_grad()
def decode(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    assistant: RetroDraft,
    streamer=None,
    **model_kwargs,
):
    """The speculative loop, with the arguments ``generate`` prepared (see ``GenerationMixin._sample``).

    Args:
        input_ids: ``(1, prompt_len)`` prompt ids.
        logits_processor / stopping_criteria / generation_config: as prepared by ``generate``.
        assistant: drafts and collects statistics.
        streamer: receives the prompt, then each new token as ``(1,)`` tensors, then ``end()``.
        model_kwargs: the prepared model inputs (the ``cache`` among them).
    """
    t_start = time.perf_counter()
    _check_call(input_ids, generation_config, model_kwargs)
    do_sample = bool(generation_config.do_sample)
    keep_scores = bool(generation_config.return_dict_in_generate and generation_config.output_scores)
    keep_logits = bool(generation_config.return_dict_in_generate and generation_config.output_logits)
    device = input_ids.device
    prompt_len = input_ids.shape[1]
    max_length = stopping_criteria.max_length if stopping_criteria.max_length is not None else generation_config.max_length
    budget = assistant.budget_for(model)
    temperature = float(generation_config.temperature or 1.0) if do_sample else None
    stats = assistant.begin(input_ids[0].cpu().numpy(), model.config.get_text_config().vocab_size, model,
                            temperature=temperature)

    if streamer is not None:
        streamer.put(input_ids.cpu())

    # Prefill exactly as plain decoding does, so the first token is the one it would choose.
    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    cache = model_kwargs.get("cache")
    if cache is None:
        cache = outputs.get("cache")
    check_cache(cache, max_length + budget + 1)

    ids = torch.empty((1, max_length + 1), dtype=torch.long, device=device)
    ids[:, :prompt_len] = input_ids
    ctx = np.empty(max_length + 1, dtype=np.int64)
    ctx[:prompt_len] = input_ids[0].cpu().numpy()
    length = prompt_len
    scores: list[torch.Tensor] = []
    raw_logits: list[torch.Tensor] = []

    first_logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=device)
    del outputs
    first_scores = logits_processor(ids[:, :length], first_logits.clone())
    if do_sample:
        tok = int(torch.multinomial(torch.nn.functional.softmax(first_scores, dim=-1), num_samples=1)[0, 0])
    else:
        tok = int(torch.argmax(first_scores, dim=-1)[0])
    if keep_scores:
        scores.append(first_scores)
    if keep_logits:
        raw_logits.append(first_logits)

    def commit(token: int) -> bool:
        """Append one token; True when generation must stop after it."""
        nonlocal length
        ids[0, length] = token
        ctx[length] = token
        length += 1
        if streamer is not None:
            streamer.put(torch.tensor([token]))
        return bool(stopping_criteria(ids[:, :length], None)[0])

    done = commit(tok)
    stats.prefill_s = time.perf_counter() - t_start

    while not done:
        t0 = time.perf_counter()
        past_len = length - 1  # everything but the root is cached
        # Never draft deeper than the tokens still allowed: they would be cut anyway.
        depth_left = max_length - length
        tree = assistant.draft(ctx[:length], budget, max_depth=depth_left)
        t1 = time.perf_counter()
        inputs = tree_inputs(model, tree, past_len)
        t_in = time.perf_counter()
        logits = tree_forward(model, tree, cache, past_len, inputs)
        t2 = time.perf_counter()
        verdict = accept(
            tree, logits, ids[:, :length], logits_processor, do_sample, keep_scores=keep_scores, keep_logits=keep_logits
        )
        compact(cache, past_len, verdict.accepted)
        emitted = 0
        for j, token in enumerate(verdict.tokens):
            emitted += 1
            if keep_scores:
                scores.append(verdict.scores[j])
            if keep_logits:
                raw_logits.append(verdict.raw_logits[j])
            if commit(token):
                done = True
                break
        if done and emitted < len(verdict.tokens):
            # Stopped inside the block: drop cached positions past the last committed token.
            compact(cache, past_len, np.arange(emitted, dtype=np.int64))
        t3 = time.perf_counter()
        assistant.observe(tree, verdict.accepted, logits)
        t4 = time.perf_counter()
        stats.record_step(len(tree), emitted, draft_s=(t1 - t0) + (t4 - t3), verify_s=t2 - t_in,
                          bookkeeping_s=(t3 - t2) + (t_in - t1))

    if streamer is not None:
        streamer.end()
    stats.new_tokens = length - prompt_len
    stats.wall_s = time.perf_counter() - t_start

    sequences = ids[:, :length].clone()
    if generation_config.return_dict_in_generate:
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(scores) if keep_scores else None,
            logits=tuple(raw_logits) if keep_logits else None,
            cache=cache if generation_config.use_cache else None,
        )
    return sequences


def _install_hook() -> None:
    """Route ``model.generate(..., assistant=RetroDraft())`` to :func:`generate`.

    Only calls whose ``assistant`` is a :class:`RetroDraft` are rerouted; every other call goes
    to transformers' own ``generate`` untouched.
    """
    if getattr(GenerationMixin.generate, "_retrodraft_hook", False):
        return

    original = GenerationMixin.generate

    def generate_with_retrodraft(self, *args, **kwargs):
        if isinstance(kwargs.get("assistant"), RetroDraft):
            return generate(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    generate_with_retrodraft.__doc__ = original.__doc__
    generate_with_retrodraft.__signature__ = inspect.signature(original)
    generate_with_retrodraft._retrodraft_hook = True
    GenerationMixin.generate = generate_with_retrodraft
