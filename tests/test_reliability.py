"""Shared use and interruption.

Shared use: one assistant (with one corpus index and its cross-request memory) serves 8 threads
at once; every output must be single-threaded greedy's, and afterwards the memory must hold
exactly the requests made, each whole (no two interleaved). A call holds the assistant's lock
for its whole length, so calls sharing an assistant take turns; assistants of their own sharing
one model, index and memory run truly in parallel.

Interruption: an exception or KeyboardInterrupt raised from a streamer, a stopping criterion or
a logits processor mid-generation leaves the assistant usable: the next call is exact and its
statistics describe only that call.

``RETRODRAFT_RELIABILITY_REQUESTS`` sets the requests per thread (``make fuzz``: 50).
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

import retrodraft  # noqa: F401  (installs the generate(assistant=...) hook)
from helpers import tiny_model
from retrodraft import RetroDraft
from retrodraft.cost import CostModel
from retrodraft.drafters import make_drafter
from retrodraft.drafters.base import Drafter
from retrodraft.index import CorpusIndex, build_index
from retrodraft.tree import DraftTree

THREADS = 8
REQUESTS = int(os.environ.get("RETRODRAFT_RELIABILITY_REQUESTS", "4"))
VOCAB = 96
MAX_NEW = 24
FLAT = CostModel(np.array([1, 64]), np.array([1.0, 1.2]))  # auto sizing without measuring the tiny model


class _Tok:
    vocab, name_or_path, all_special_tokens = VOCAB, "tiny", []

    def get_vocab(self):
        return {f"t{i}": i for i in range(VOCAB)}

    def __len__(self):
        return VOCAB


class Witness(Drafter):
    """Drafts nothing; counts calls of another request seen between a request's begin and its steps."""

    name = "witness"

    def __init__(self):
        self.owner, self.overlaps, self.requests = None, 0, 0

    def begin(self, request):
        self.owner, self.requests = threading.get_ident(), self.requests + 1

    def propose(self, context, budget):
        self.overlaps += threading.get_ident() != self.owner
        return DraftTree.root_only(int(context[-1]))

    def observe(self, outcome):
        self.overlaps += threading.get_ident() != self.owner


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model, a corpus index of its own outputs, prompts and their plain greedy outputs."""
    model = tiny_model("llama")
    gen = torch.Generator().manual_seed(7)
    prompts = []
    for i in range(24):
        motif = torch.randint(3, VOCAB, (int(3 + i % 5),), generator=gen)
        tail = torch.randint(3, VOCAB, (int(4 + i % 7),), generator=gen)
        prompts.append(torch.cat([motif, tail, motif]).reshape(1, -1))
    refs = [model.generate(p, max_new_tokens=MAX_NEW, do_sample=False)[0].tolist() for p in prompts]
    folder = tmp_path_factory.mktemp("reliability") / "idx"
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        build_index([], _Tok(), folder, token_docs=refs[::2], executor=pool, progress=False)
    return model, CorpusIndex(folder), prompts, refs


def _drafters(index, memory=None) -> list:
    return [make_drafter("recycling"), make_drafter("lookup"), make_drafter("stand"),
            make_drafter("retrieval", index=index), make_drafter("history", memory=memory)]


def _history(assistant: RetroDraft):
    return next(d for d in assistant.drafters if d.name == "history")


def _check_stats(assistant: RetroDraft, new_tokens: int) -> None:
    st = assistant.stats
    assert st.new_tokens == new_tokens
    assert st.steps == len(st.committed) == len(st.tree_sizes)
    assert sum(st.committed) + 1 == new_tokens  # the prefill's token is not a step's


def _hammer(model, prompts, refs, assistant_for) -> tuple[list, list]:
    """``THREADS`` threads x ``REQUESTS`` requests, started together; returns (mismatches, errors)."""
    mismatches, errors = [], []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(REQUESTS):
                k = (t * 5 + i * 3) % len(prompts)
                out = model.generate(prompts[k], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant_for(t))
                if out[0].tolist() != refs[k]:
                    mismatches.append((t, i, k))
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    return mismatches, errors


def _requests_made(prompts, refs) -> Counter:
    """The sequence every (thread, request) made: prompt + greedy output."""
    return Counter(tuple(refs[(t * 5 + i * 3) % len(prompts)]) for t in range(THREADS) for i in range(REQUESTS))


def test_one_assistant_shared_by_threads_is_exact_and_consistent(world):
    model, index, prompts, refs = world
    witness = Witness()
    assistant = RetroDraft(drafters=_drafters(index) + [witness], sizing="auto", budget=16, cost=FLAT)
    mismatches, errors = _hammer(model, prompts, refs, lambda t: assistant)
    print(f"\nshared assistant: {THREADS} threads x {REQUESTS} requests, {len(mismatches)} mismatches, "
          f"{len(errors)} errors", file=sys.stderr)
    assert errors == [] and mismatches == []
    assert witness.requests == THREADS * REQUESTS and witness.overlaps == 0, "calls sharing an assistant overlapped"
    # The memory holds every request whole: none lost, none interleaved with another.
    history = _history(assistant)
    history.end()
    assert Counter(tuple(s.tolist()) for s in history.memory.sequences()) == _requests_made(prompts, refs)
    assert history.memory.nbytes <= history.memory.max_bytes
    # And the assistant goes on: exact, with statistics of this call only.
    out = model.generate(prompts[1], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant)
    assert out[0].tolist() == refs[1]
    _check_stats(assistant, len(refs[1]) - prompts[1].shape[1])


def test_assistants_sharing_model_index_and_memory_run_in_parallel(world):
    from retrodraft.memory import SuffixMemory

    model, index, prompts, refs = world
    memory = SuffixMemory(max_bytes=16 << 20)
    assistants = [RetroDraft(drafters=_drafters(index, memory), sizing="fixed", budget=8) for _ in range(THREADS)]
    mismatches, errors = _hammer(model, prompts, refs, lambda t: assistants[t])
    print(f"\nparallel assistants: {THREADS} threads x {REQUESTS} requests, {len(mismatches)} mismatches, "
          f"{len(errors)} errors", file=sys.stderr)
    assert errors == [] and mismatches == []
    for a in assistants:
        _history(a).end()
    assert Counter(tuple(s.tolist()) for s in memory.sequences()) == _requests_made(prompts, refs)


# ---------------------------------------------------------------- interruption
class Boom(Exception):
    pass


class RaisingStreamer(BaseStreamer):
    def __init__(self, at: int, exc: type[BaseException]):
        self.at, self.exc, self.calls = at, exc, 0

    def put(self, value):
        self.calls += 1
        if self.calls == self.at:
            raise self.exc("from the streamer")

    def end(self):
        pass


class RaisingCriterion(StoppingCriteria):
    def __init__(self, at: int, exc: type[BaseException]):
        self.at, self.exc, self.calls = at, exc, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise self.exc("from a stopping criterion")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


class RaisingProcessor(LogitsProcessor):
    def __init__(self, at: int, exc: type[BaseException]):
        self.at, self.exc, self.calls = at, exc, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == self.at:
            raise self.exc("from a logits processor")
        return scores


def _raising_kwargs(source: str, at: int, exc) -> dict:
    if source == "streamer":
        return {"streamer": RaisingStreamer(at, exc)}
    if source == "stopping criterion":
        return {"stopping_criteria": StoppingCriteriaList([RaisingCriterion(at, exc)])}
    return {"logits_processor": LogitsProcessorList([RaisingProcessor(at, exc)])}


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("source", ["streamer", "stopping criterion", "logits processor"])
@pytest.mark.parametrize("at", [1, 6])
def test_an_interrupted_call_leaves_the_assistant_usable(world, source, exc, at):
    model, index, prompts, refs = world
    assistant = RetroDraft(drafters=_drafters(index), sizing="auto", budget=16, cost=FLAT)
    model.generate(prompts[2], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant)  # warm
    with pytest.raises(exc):
        model.generate(prompts[3], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant,
                       **_raising_kwargs(source, at, exc))
    # The lock was released: another thread can use the assistant.
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("out", model.generate(
        prompts[4], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant)))
    th.start()
    th.join(timeout=120)
    assert not th.is_alive(), "the interrupted call kept the assistant's lock"
    assert result["out"][0].tolist() == refs[4]
    _check_stats(assistant, len(refs[4]) - prompts[4].shape[1])
    # The interrupted prompt itself, again: exact.
    out = model.generate(prompts[3], max_new_tokens=MAX_NEW, do_sample=False, assistant=assistant)
    assert out[0].tolist() == refs[3]
    _check_stats(assistant, len(refs[3]) - prompts[3].shape[1])
    # What the memory kept of the interrupted request is a run of it, never a mix: a prefix, or
    # (when the prompt was sent again) the rest after the part already stored.
    history = _history(assistant)
    history.end()
    for seq in history.memory.sequences():
        s = seq.tolist()
        assert any(_runs_in(s, r) for r in refs), "the memory holds a sequence no request made"


def _runs_in(s: list[int], r: list[int]) -> bool:
    """True when ``s`` occurs contiguously in ``r``."""
    return any(r[i: i + len(s)] == s for i in range(len(r) - len(s) + 1))
