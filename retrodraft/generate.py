"""The decoding loop: prefill, then per step draft -> verify -> accept -> commit -> learn.

- draft: every drafter proposes a tree, the assistant fuses and sizes them;
- verify: one forward pass over the whole tree;
- accept: walk the tree with the model's own choices (:func:`~retrodraft.verify.accept`);
- commit: append the chosen tokens one at a time, checking the stopping criteria after each, so
  output stops exactly where plain decoding stops; then compact the cache once;
- learn: hand the step's :class:`~retrodraft.drafters.base.Outcome` to the drafters.

It runs as transformers' ``custom_generate`` callable, after ``generate`` has prepared the
generation config, the logits processors, the stopping criteria and the cache, so every
argument of ``generate`` keeps its meaning.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria
from transformers.generation.utils import GenerateDecoderOnlyOutput, GenerationMixin

from .assistant import RetroDraft
from .cache import check_cache, compact
from .drafters.base import Outcome, Request
from .errors import UnsupportedCallError, UnsupportedModelError
from .tree import DraftTree
from .verify import Verdict, accept, top_candidates, tree_forward, tree_inputs

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
        raise UnsupportedCallError(f"assistant must be a retrodraft.RetroDraft, got {type(assistant).__name__}")
    _check_model(model)
    # transformers drops the streamer and tokenizer before calling a custom_generate callable,
    # and needs the tokenizer to build stop-string criteria: handle both here.
    streamer = kwargs.pop("streamer", None)
    tokenizer = kwargs.pop("tokenizer", None)
    kwargs = _take_stop_strings(model, tokenizer, kwargs)
    for unsupported in ("assistant_model", "prompt_lookup_num_tokens", "custom_generate"):
        if kwargs.get(unsupported) is not None:
            raise UnsupportedCallError(f"`{unsupported}` cannot be combined with a retrodraft assistant.")

    def _retrodraft_decode(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        return decode(
            model, input_ids, logits_processor, stopping_criteria, generation_config, assistant, streamer, **model_kwargs
        )

    with assistant.lock:  # one call at a time per assistant (its drafters and stats are shared state)
        try:
            return _ORIGINAL_GENERATE(model, inputs, custom_generate=_retrodraft_decode, **kwargs)
        finally:
            assistant.end()  # the drafters close the request, also when generation raised


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
        raise UnsupportedCallError(
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
        raise UnsupportedCallError("beam search cannot be combined with a retrodraft assistant (num_beams must be 1).")
    if (generation_config.num_return_sequences or 1) != 1:
        raise UnsupportedCallError(
            "retrodraft returns one sequence per call (num_return_sequences must be 1); call generate repeatedly."
        )
    if input_ids.shape[0] != 1:
        raise UnsupportedCallError(
            f"retrodraft decodes one sequence at a time (batch size 1), got batch size {input_ids.shape[0]}."
        )
    if generation_config.output_attentions or generation_config.output_hidden_states:
        raise UnsupportedCallError(
            "output_attentions / output_hidden_states are not available with a retrodraft assistant."
        )
    mask = model_kwargs.get("attention_mask")
    if mask is not None and not bool((mask == 1).all()):
        raise UnsupportedCallError("retrodraft needs an unpadded prompt (an attention_mask of all ones).")
    if model_kwargs.get("inputs_embeds") is not None:
        raise UnsupportedCallError("retrodraft needs input_ids, not inputs_embeds.")


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
        assistant: drafts, learns and collects statistics.
        streamer: receives the prompt, then each new token as ``(1,)`` tensors, then ``end()``.
        model_kwargs: the prepared model inputs (the ``cache`` among them).
    """
    t_start = time.perf_counter()
    _check_call(input_ids, generation_config, model_kwargs)
    run = _Run(model, input_ids, logits_processor, stopping_criteria, generation_config, assistant, streamer)
    run.prefill(model_kwargs)
    run.stats.prefill_s = time.perf_counter() - t_start
    while not run.done:
        tree = run.draft()
        logits = run.verify(tree)
        verdict = run.accept(tree, logits)
        committed = run.commit(verdict)
        run.learn(tree, verdict, committed, logits)
    run.remember()
    run.stats.wall_s = time.perf_counter() - t_start
    return run.finish()


class _Run:
    """One call's state: the output so far, the cache, and the five steps of the loop.

    ``ids`` (on the model's device) and ``ctx`` (numpy, for the drafters) hold the prompt and
    every committed token; the cache holds all of them but the last, the next tree's root.
    """

    def __init__(self, model, input_ids: torch.Tensor, logits_processor: LogitsProcessorList,
                 stopping_criteria: StoppingCriteriaList, generation_config: GenerationConfig, assistant: RetroDraft,
                 streamer) -> None:
        self.model, self.assistant, self.streamer = model, assistant, streamer
        self.logits_processor, self.stopping_criteria, self.config = logits_processor, stopping_criteria, generation_config
        self.do_sample = bool(generation_config.do_sample)
        self.keep_scores = bool(generation_config.return_dict_in_generate and generation_config.output_scores)
        self.keep_logits = bool(generation_config.return_dict_in_generate and generation_config.output_logits)
        self.max_length = (stopping_criteria.max_length if stopping_criteria.max_length is not None
                           else generation_config.max_length)
        self.budget = assistant.budget_for(model)
        self.input_ids = input_ids
        self.prompt_len = input_ids.shape[1]
        self.ids = torch.empty((1, self.max_length + 1), dtype=torch.long, device=input_ids.device)
        self.ids[:, : self.prompt_len] = input_ids
        self.ctx = np.empty(self.max_length + 1, dtype=np.int64)
        self.ctx[: self.prompt_len] = input_ids[0].cpu().numpy()
        self.length = self.prompt_len
        self.scores: list[torch.Tensor] = []
        self.raw_logits: list[torch.Tensor] = []
        self.done = False
        self.cache = None
        temperature = float(generation_config.temperature or 1.0) if self.do_sample else None
        request = Request(self.ctx[: self.prompt_len].copy(), model.config.get_text_config().vocab_size, temperature)
        self.stats = assistant.begin(request, model)
        if streamer is not None:
            streamer.put(input_ids.cpu())

    # ------------------------------------------------------------------ the steps
    def prefill(self, model_kwargs: dict) -> None:
        """Run the prompt exactly as plain decoding does, so the first token is the one it would choose.

        With a prefix cache, the longest stored prefix of the prompt (at most ``prompt_len - 1``
        positions: the last token's logits choose the first new token) is copied into the empty
        cache first; transformers' prefill then runs only the rest, as it does for any
        ``generate`` call handed a filled cache."""
        cache = model_kwargs.get("cache")
        store = self.assistant.prefix_cache
        if store is None:
            self.stats.prefix_skip = "off"
        elif cache is None:
            self.stats.prefix_skip = "no cache (use_cache=False)"
        else:
            self.stats.prefix_reused, self.stats.prefix_skip = store.restore(
                self.model, cache, self.ctx[: self.prompt_len], self.prompt_len - 1)
        outputs = self.model._prefill(self.input_ids, self.config, model_kwargs)
        self.cache = outputs.get("cache") if cache is None else cache
        check_cache(self.cache, self.max_length + self.budget + 1)
        raw = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=self.ids.device)
        del outputs
        scores = self.logits_processor(self.ids[:, : self.length], raw.clone())
        if self.do_sample:
            token = int(torch.multinomial(torch.nn.functional.softmax(scores, dim=-1), num_samples=1)[0, 0])
        else:
            token = int(torch.argmax(scores, dim=-1)[0])
        self.done = self._append(token, scores, raw)

    def draft(self) -> DraftTree:
        """The fused, sized tree rooted at the last committed token."""
        with self._timed("draft_s"):
            self.past_len = self.length - 1  # everything but the root is cached
            self.context = self.ctx[: self.length]
            # Never draft deeper than the tokens still allowed: they would be cut anyway.
            return self.assistant.draft(self.context, self.budget, max_depth=self.max_length - self.length)

    def verify(self, tree: DraftTree) -> torch.Tensor:
        """``(len(tree), vocab)`` raw logits of one forward pass over the whole tree."""
        with self._timed("bookkeeping_s"):
            inputs = tree_inputs(self.model, tree, self.past_len)
        with self._timed("verify_s"):
            return tree_forward(self.model, tree, self.cache, self.past_len, inputs)

    def accept(self, tree: DraftTree, logits: torch.Tensor) -> Verdict:
        """The accepted path and the tokens the model chose along it (see :func:`~retrodraft.verify.accept`)."""
        with self._timed("bookkeeping_s"):
            return accept(tree, logits, self.ids[:, : self.length], self.logits_processor, self.do_sample,
                          keep_scores=self.keep_scores, keep_logits=self.keep_logits)

    def commit(self, verdict: Verdict) -> np.ndarray:
        """Append the verdict's tokens one at a time until a stopping criterion fires, then keep
        exactly the committed positions in the cache (one compaction). Returns the committed ids."""
        with self._timed("bookkeeping_s"):
            n = 0
            for j, token in enumerate(verdict.tokens):
                n += 1
                self.done = self._append(token, verdict.scores[j] if self.keep_scores else None,
                                         verdict.raw_logits[j] if self.keep_logits else None)
                if self.done:
                    break
            # The cache keeps the root and the accepted drafts whose successor was committed; the
            # last committed token is the next root.
            compact(self.cache, self.past_len, verdict.accepted[:n])
            return np.asarray(verdict.tokens[:n], dtype=np.int64)

    def learn(self, tree: DraftTree, verdict: Verdict, committed: np.ndarray, logits: torch.Tensor) -> None:
        """Hand the step's :class:`Outcome` (with the model's top-k at every node, computed once)
        to the assistant, and count the step."""
        with self._timed("draft_s"):
            top_tokens, top_probs = top_candidates(logits, self.assistant.top_k)
            outcome = Outcome(self.context, tree, verdict.accepted, committed, top_tokens, top_probs)
            self.assistant.observe(outcome)
        self.stats.record_step(len(tree), len(committed))

    def remember(self) -> None:
        """Keep this call's final cache (prompt and output, all but the last token) in the
        assistant's prefix cache; a copy when the call returns the cache to the caller."""
        store = self.assistant.prefix_cache
        if store is None or self.cache is None:
            return
        held = self.cache.get_seq_length()
        returned = bool(self.config.return_dict_in_generate and self.config.use_cache)
        store.store(self.model, self.cache, self.ctx[:held], copy=returned)

    def finish(self):
        """What ``generate`` returns: the sequences, or a ``GenerateDecoderOnlyOutput``."""
        if self.streamer is not None:
            self.streamer.end()
        self.stats.new_tokens = self.length - self.prompt_len
        sequences = self.ids[:, : self.length].clone()
        if not self.config.return_dict_in_generate:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(self.scores) if self.keep_scores else None,
            logits=tuple(self.raw_logits) if self.keep_logits else None,
            cache=self.cache if self.config.use_cache else None,
        )

    # ------------------------------------------------------------------ helpers
    def _append(self, token: int, scores: torch.Tensor | None, raw: torch.Tensor | None) -> bool:
        """Commit one token; True when generation must stop after it."""
        if self.keep_scores:
            self.scores.append(scores)
        if self.keep_logits:
            self.raw_logits.append(raw)
        self.ids[0, self.length] = token
        self.ctx[self.length] = token
        self.length += 1
        if self.streamer is not None:
            self.streamer.put(torch.tensor([token]))
        return bool(self.stopping_criteria(self.ids[:, : self.length], None)[0])

    @contextmanager
    def _timed(self, field: str):
        """Add the seconds spent in the block to ``stats.<field>``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.stats, field, getattr(self.stats, field) + time.perf_counter() - t0)


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
