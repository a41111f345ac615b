"""``retrodraft demo``: plain greedy decoding against RetroDraft on a few short prompts.

For each prompt it prints both continuations, whether they are token-for-token identical (they
must be: drafting is lossless), tokens/s of each, the speedup and the mean number of tokens
accepted per verification step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

__all__ = ["PROMPTS", "run_demo"]

# (label, text, use the chat template). Code and lists repeat themselves, which is what a
# model-free drafter feeds on; the chat question shows the ordinary case.
PROMPTS: list[tuple[str, str, bool]] = [
    ("function stub",
     'def is_prime(n: int) -> bool:\n    """Return True if n is a prime number."""\n', False),
    ("list",
     "Planets of the solar system, in order from the Sun:\n1. Mercury\n2. Venus\n3.", False),
    ("table of constants",
     'HTTP_STATUS = {\n    200: "OK",\n    201: "Created",\n    204: "No Content",\n    400:',
     False),
    ("chat question", "Explain in three sentences what binary search does.", True),
]


@dataclass
class _Run:
    ids: object  # torch.Tensor (n_new,): the generated tokens only
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.ids.numel() / self.seconds


def run_demo(
    model: str = "smollm2-135m", max_new_tokens: int = 96, out: TextIO | None = None
) -> None:
    """Run the demo and print its report.

    Args:
        model: registry name (must be fetched) or a local transformers folder; loaded in float32.
        max_new_tokens: tokens to generate per prompt.
        out: where to print; default stdout.

    Raises:
        ModelNotFoundError: the model is not fetched (the message says how to fetch it).
        RetroDraftError: the RetroDraft engine is not importable.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from retrodraft import models
    from retrodraft.errors import RetroDraftError

    try:
        import retrodraft  # noqa: F401  (installs the generate(assistant=RetroDraft()) hook)
        from retrodraft import RetroDraft
    except ImportError as e:
        raise RetroDraftError(f"the RetroDraft engine is not available in this build ({e})")

    out = out or sys.stdout
    hf_logging.set_verbosity_error()  # no "attention mask not set" chatter in the report
    hf_logging.disable_progress_bar()
    lm, tokenizer = models.load(model, dtype=torch.float32)

    def encode(text: str, chat: bool) -> torch.Tensor:
        if chat:
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True,
                return_tensors="pt", return_dict=True,
            )["input_ids"]
        return tokenizer(text, return_tensors="pt").input_ids

    def generate(ids: torch.Tensor, assistant=None) -> _Run:
        kwargs = {} if assistant is None else {"assistant": assistant}
        t0 = time.perf_counter()
        with torch.inference_mode():
            seq = lm.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
        return _Run(seq[0, ids.shape[1]:], time.perf_counter() - t0)

    print(f"model: {model}, float32, greedy, {max_new_tokens} new tokens per prompt, "
          f"{torch.get_num_threads()} threads", file=out)
    warm = encode(PROMPTS[0][1], PROMPTS[0][2])  # pays one-off costs (numba, kernels) untimed
    generate(warm)
    generate(warm, RetroDraft())

    total_plain = total_draft = 0.0
    n_plain = n_draft = n_same = 0
    for label, text, chat in PROMPTS:
        ids = encode(text, chat)
        plain = generate(ids)
        assistant = RetroDraft()
        draft = generate(ids, assistant)
        same = torch.equal(plain.ids, draft.ids)
        n_same += same
        total_plain += plain.seconds
        total_draft += draft.seconds
        n_plain += plain.ids.numel()
        n_draft += draft.ids.numel()
        print(f"\n=== {label} ({ids.shape[1]} prompt tokens) ===", file=out)
        print(f"--- prompt\n{text}", file=out)
        print(f"--- plain generate\n{tokenizer.decode(plain.ids, skip_special_tokens=True)}",
              file=out)
        print(f"--- with RetroDraft\n{tokenizer.decode(draft.ids, skip_special_tokens=True)}",
              file=out)
        print(f"--- identical: {'yes' if same else 'NO'}", file=out)
        print(f"plain {plain.tokens_per_s:6.1f} tok/s | RetroDraft {draft.tokens_per_s:6.1f} "
              f"tok/s | speedup {draft.tokens_per_s / plain.tokens_per_s:.2f}x | "
              f"{assistant.stats.mean_accepted:.2f} tokens accepted per step "
              f"({assistant.stats.steps} steps)", file=out)

    print(f"\n=== overall: {n_same}/{len(PROMPTS)} identical, "
          f"plain {n_plain / total_plain:.1f} tok/s, RetroDraft "
          f"{n_draft / total_draft:.1f} tok/s, speedup "
          f"{(n_draft / total_draft) / (n_plain / total_plain):.2f}x ===",
          file=out)
