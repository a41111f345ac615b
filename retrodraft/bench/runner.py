"""Run every method on every prompt, interleaved, and store every raw figure.

Protocol: one warm-up call per method (excluded); then for each prompt, each method in turn
(the order rotated prompt by prompt, so drift and cache effects hit all methods alike). Drafter
state persists across prompts as in the papers unless ``cold`` resets it before each prompt.
Every method owns its state (its own assistant and drafters, peers included), so interleaving
never lets one method learn from another's outputs.

Sequence suites (``Prompt.sequence``): every method's state is reset when a sequence starts, then
kept from request to request, so each request's record (``sequence``, ``index``) traces how a
method learns along the sequence - the learning curve of the report.

Closed-loop prompts (the ``agent-loop`` suite, ``Prompt.meta["own_replies"]``) are completed just
before they run with greedy's decoded output of the earlier requests they name: every method finishes
a request before the next one starts, so greedy's replies exist by then, and every method sees the
same prompt. Such a suite needs ``greedy`` among the methods.

Results are written after every prompt, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cost import cpu_name
from ..errors import ConfigError
from ..paths import write_json_atomic
from .data import Prompt, with_own_replies
from .methods import Method

__all__ = ["RunConfig", "run", "environment", "encode_prompt"]


@dataclass
class RunConfig:
    """What to run. ``methods`` must include ``greedy`` (the baseline)."""

    model: str
    dtype: str
    methods: list[str]
    max_new_tokens: int = 256
    threads: int | None = None
    cold: bool = False
    temperature: float = 0.0
    seed: int = 0
    draft_model: str | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)


def encode_prompt(tok, prompt: Prompt, history: list[tuple[str, str]], turn: str) -> torch.Tensor:
    """``(1, len)`` input ids of one turn of ``prompt``: the plain text, or the chat template over
    the prompt's own messages, or over ``history`` (earlier ``(question, answer)`` turns) and ``turn``."""
    if not prompt.chat:
        return tok(turn, return_tensors="pt").input_ids
    if prompt.messages is not None:
        enc = tok.apply_chat_template(prompt.messages, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        return enc["input_ids"]
    msgs = []
    for q, a in history:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": turn})
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Peak memory one call adds on top of what the process held when it started, in MB.

    ``ru_maxrss`` only ever grows over the whole process, so it cannot tell methods apart; on
    CPU a background thread samples the resident set every ``interval`` seconds instead (reading
    ``/proc/self/statm`` costs microseconds), on CUDA the allocator's own peak is used.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak_mb = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._base = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb = max(0, peak - self._base) / 2**20


def run_prompt(model, tok, prompt: Prompt, method: Method, gen_kwargs: dict) -> dict:
    """All turns of one prompt with one method: tokens, seconds, added peak memory and drafting
    statistics."""
    history: list[tuple[str, str]] = []
    turns = []
    for turn in prompt.turns:
        ids = encode_prompt(tok, prompt, history, turn)
        with PeakMemory(model.device) as mem:
            t0 = time.perf_counter()
            out = method.generate(model, ids, **gen_kwargs)
            wall = time.perf_counter() - t0
        new = out[0, ids.shape[1] :].tolist()
        turns.append({"prompt_tokens": int(ids.shape[1]), "new_tokens": len(new), "wall_s": wall,
                      "peak_mem_mb": mem.peak_mb, "tokens": new, "stats": method.step_stats()})
        history.append((turn, tok.decode(new, skip_special_tokens=True)))
    record = {"prompt_id": prompt.id, "category": prompt.category, "method": method.name, "turns": turns}
    if prompt.sequence is not None:
        record.update(sequence=prompt.sequence, index=prompt.index)
    return record


def environment(config: RunConfig, model) -> dict:
    """Everything needed to know where a figure came from."""
    cpu = cpu_name()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except OSError:
        commit, dirty = "", False
    import transformers

    from .. import models

    model_hash = None
    try:
        model_hash = models.spec(config.model).sha256
    except Exception:  # a local folder: no registry hash
        model_hash = None
    return {
        "command": config.command,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(model.device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": config.model,
        "model_sha256": model_hash,
        "dtype": config.dtype,
        "git_commit": commit,
        "git_dirty": dirty,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(config: RunConfig, prompts: list[Prompt], model, tok, methods: list[Method], out_dir: Path,
        progress: bool = True) -> dict:
    """Measure ``methods`` on ``prompts``; write and return the raw results.

    Raises:
        ConfigError: a closed-loop prompt (``agent-loop``) without ``greedy`` among ``methods``.
    """
    from tqdm.auto import tqdm

    closed = [p.id for p in prompts if p.meta.get("own_replies")]
    if closed and "greedy" not in [m.name for m in methods]:
        raise ConfigError(f"{closed[0]} is built from greedy's own replies to earlier requests (the agent-loop "
                          "suite): add greedy to the methods.")

    out_dir.mkdir(parents=True, exist_ok=True)
    gen_kwargs: dict = {"max_new_tokens": config.max_new_tokens}
    if config.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=config.temperature)
    else:
        gen_kwargs.update(do_sample=False)
    if tok.pad_token_id is None:
        gen_kwargs["pad_token_id"] = tok.eos_token_id

    results = {"config": config.__dict__, "environment": environment(config, model), "records": []}

    warm = Prompt(id="warmup", category="warmup", turns=["def add(a, b):\n"], chat=False)
    for m in methods:
        run_prompt(model, tok, warm, m, {**gen_kwargs, "max_new_tokens": 8})

    bar = tqdm(total=len(prompts) * len(methods), disable=not progress, unit="run", desc="bench")
    replies: dict[str, str] = {}  # prompt id -> greedy's decoded output (last turn)
    for i, prompt in enumerate(prompts):
        prompt = with_own_replies(prompt, replies)
        order = methods[i % len(methods):] + methods[: i % len(methods)]
        starts_sequence = prompt.sequence is not None and (i == 0 or prompts[i - 1].sequence != prompt.sequence)
        for m in order:
            if config.cold or starts_sequence:
                m.reset()
            if config.temperature > 0:
                torch.manual_seed(config.seed + i)
            bar.set_postfix_str(f"{prompt.category} {m.name}")
            record = run_prompt(model, tok, prompt, m, gen_kwargs)
            results["records"].append(record)
            if m.name == "greedy":
                replies[prompt.id] = tok.decode(record["turns"][-1]["tokens"], skip_special_tokens=True)
            bar.update(1)
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _write(results, out_dir / "results.json")
    bar.close()
    results["environment"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write(results, out_dir / "results.json")
    return results


def _write(results: dict, path: Path) -> None:
    write_json_atomic(path, results)
