"""Replay recorded greedy outputs through the vLLM proposers, without the model or vLLM.

    python benchmarks/vllm_replay.py benchmarks/results/vllm-qwen2.5-coder-1.5b-bf16-refactor \\
        benchmarks/results/qwen2.5-coder-1.5b-bf16-json --k 16 \\
        --method ngram --method retrodraft --method 'retrodraft:min_score=0.05,nodes=128' \\
        --out benchmarks/results/vllm-replay-qwen2.5-coder-1.5b

Why: a vLLM run of the 1.5B model takes minutes per method, and at one request at a time what
decides a model-free proposer's speed is how many decode steps it needs, which greedy's known
output decides. Each request is replayed as vLLM's engine runs it at concurrency 1: the first
token comes from prefill; then each step the proposer drafts a chain (at most ``k`` tokens) on
the row's tokens, the longest prefix agreeing with greedy's output is accepted, and the next
output token is the bonus. Requests run in the recorded order on one proposer (one engine).

Methods:

* ``copy-oracle``: not a proposer - each step the longest run of greedy's next tokens found
  earlier in the row (it sees the future): the most that copying from the request could save.
* ``suffix``: arctic-inference's ``SuffixDecodingCache`` as vLLM 0.32's ``suffix`` proposer drives it
  (needs ``arctic_inference``: run with ``.venv-vllm/bin/python``).
* ``ngram``: a re-implementation of vLLM 0.32's ``NgramProposer``
  (``v1/spec_decode/ngram_proposer.py``) with ``prompt_lookup_min=2, prompt_lookup_max=4`` as
  ``vllm_bench.py`` runs it (``ngram:MIN:MAX`` for others): the longest suffix n-gram of the row
  (``MIN <= n <= MAX``) found earlier in it, its earliest occurrence, and the ``k`` tokens after it.
* ``retrodraft[:key=value,...]``: :class:`retrodraft.vllm.proposer.RetroDraftProposer` itself, its
  ``propose`` called with the arguments vLLM passes (one row), with
  :class:`~retrodraft.vllm.options.VllmOptions` fields given as ``key=value`` (numbers parsed
  as JSON, ``drafters=history+lookup``, ``cut=gain``).

Inputs: a ``vllm_bench.py`` results folder (its ``none`` method's concurrency-1 outputs, prompts
rebuilt as the bench built them) or a ``retrodraft bench`` sequence-suite folder (its ``greedy``
records). Per method: decode steps and tokens per decode step (the first token excluded) per
request and overall; the modelled decode cost ``steps + token_cost * drafted`` in one-token steps
(``--token-cost``, default the proposer's ``min_score``: a drafted token lengthens a verify step
by about that fraction) and tokens per unit of it (``tok/cost``), which is what decides the speed
once drafted tokens cost time; and for retrodraft its drafting ms per step and where its chains
fell short: steps whose whole chain was
accepted although shorter than ``k`` (the continuation went on), and tokens the fused tree would
have accepted beyond its chosen chain. A development tool: speed claims come from
``vllm_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay import accept  # noqa: E402

NGRAM_MIN, NGRAM_MAX = 2, 4  # vllm_bench.py's prompt_lookup_min / prompt_lookup_max


def ngram_chain(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> np.ndarray:
    """vLLM 0.32's n-gram proposal for one row (``tokens (N,)``): the longest ``n``-token suffix
    (``min_n <= n <= max_n``) occurring earlier, at its earliest occurrence, and up to ``k`` tokens
    after that occurrence (fewer where the row ends first). Empty when no such n-gram.

    vLLM scans with KMP over the reversed row; an occurrence may overlap the suffix but not be it.
    """
    n_tok = tokens.shape[0]
    if n_tok < min_n or k <= 0:
        return tokens[:0]
    head = tokens[:-1]  # an occurrence must end before the last token (so one token follows it)
    for n in range(min(max_n, n_tok - 1), min_n - 1, -1):
        if head.shape[0] < n:
            continue
        win = np.lib.stride_tricks.sliding_window_view(head, n)
        hits = np.flatnonzero((win == tokens[n_tok - n:]).all(axis=1))
        if hits.shape[0]:
            start = int(hits[0]) + n
            return tokens[start:start + k]
    return tokens[:0]


class NgramMethod:
    """vLLM's ``ngram`` proposer (see :func:`ngram_chain`)."""

    def __init__(self, k: int, min_n: int = NGRAM_MIN, max_n: int = NGRAM_MAX) -> None:
        self.k, self.min_n, self.max_n = k, min_n, max_n

    def propose(self, sampled: list[int], tokens: np.ndarray) -> np.ndarray:
        return ngram_chain(tokens, self.min_n, self.max_n, self.k)

    def close(self) -> dict:
        return {}


class CopyOracleMethod:
    """An upper bound for copying proposers: each step, the longest run of greedy's next tokens
    (at most ``k``) found anywhere earlier in the row (prompt and output so far). It sees the
    future, so it is no proposer; it says how many steps copying from the request itself could
    save at best (not from other requests' memory, and an edit costs it a step as it would any
    copier)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.future = np.zeros(0, np.int64)

    def peek(self, future: np.ndarray) -> None:
        self.future = future[: self.k]

    def propose(self, sampled: list[int], tokens: np.ndarray) -> np.ndarray:
        fut = self.future
        if fut.shape[0] == 0:
            return fut
        starts = np.flatnonzero(tokens[:-1] == fut[0])  # an occurrence followed by a token
        best, at = 0, -1
        for s in starts.tolist():
            n = min(fut.shape[0], tokens.shape[0] - s)
            run = int(np.argmin(np.append(tokens[s:s + n] == fut[:n], False)))
            if run > best:
                best, at = run, s
        return fut[:best].copy() if at >= 0 else fut[:0]

    def close(self) -> dict:
        return {}


class SuffixMethod:
    """vLLM 0.32's ``suffix`` proposer: arctic-inference's ``SuffixDecodingCache`` driven as
    ``v1/spec_decode/suffix_decoding.py`` drives it, with vLLM's default settings (tree depth 24,
    ``max_spec_factor`` 1, ``min_token_prob`` 0.1). Needs ``arctic_inference`` (in .venv-vllm:
    ``bash benchmarks/install_arctic.sh .venv-vllm/bin/python``). Requests are numbered as they
    start; each ends when the next one starts (one request at a time)."""

    DEPTH, FACTOR, MIN_PROB = 24, 1.0, 0.1

    def __init__(self, k: int) -> None:
        try:
            from arctic_inference.suffix_decoding import SuffixDecodingCache
        except ImportError:
            raise SystemExit("the suffix method needs arctic_inference: run this with .venv-vllm/bin/python") from None
        self.k = k
        self.cache = SuffixDecodingCache(max_tree_depth=self.DEPTH, max_cached_requests=10000)
        self.n = 0
        self.live: str | None = None

    def begin(self, prompt: np.ndarray) -> None:
        if self.live is not None:
            self.cache.stop_request(self.live)
        self.n += 1
        self.live = f"r{self.n}"
        self.cache.start_request(self.live, prompt.astype(np.int32))

    def propose(self, sampled: list[int], tokens: np.ndarray) -> np.ndarray:
        self.cache.add_active_response(self.live, list(sampled))
        pattern = tokens[max(0, tokens.shape[0] - self.DEPTH):].astype(np.int32)
        draft = self.cache.speculate(self.live, pattern, max_spec_tokens=self.k, max_spec_factor=self.FACTOR,
                                     min_token_prob=self.MIN_PROB)
        return np.asarray(draft.token_ids, np.int64)

    def close(self) -> dict:
        if self.live is not None:
            self.cache.stop_request(self.live)
            self.live = None
        return {}


class RetroDraftMethod:
    """The real proposer, called as vLLM calls it (one row), its trees recorded for diagnosis."""

    def __init__(self, k: int, vocab: int, options: dict, model: str | None = None) -> None:
        from retrodraft.vllm import proposer as mod
        from retrodraft.vllm.options import VllmOptions

        config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=k),
                                 model_config=SimpleNamespace(get_vocab_size=lambda: vocab, tokenizer=model, model=model))
        cls = type("Replayed", (mod.RetroDraftProposer,), {"options": VllmOptions.from_dict(options)})
        self.proposer = cls(config)
        self.trees: list = []
        self._mod, self._best = mod, mod.best_chain

        def recording(tree, calibrated, cost, max_len):
            nodes = self._best(tree, calibrated, cost, max_len)
            self.trees.append(tree)
            return nodes

        mod.best_chain = recording

    def propose(self, sampled: list[int], tokens: np.ndarray) -> np.ndarray:
        self.trees.clear()
        row = tokens.astype(np.int32)[None, :]
        out = self.proposer.propose([list(sampled)], np.array([tokens.shape[0]], np.int32), row)
        return np.asarray(out[0], np.int64)

    def tree(self):
        return self.trees[-1] if self.trees else None

    def close(self) -> dict:
        self._mod.best_chain = self._best
        self.proposer.close()
        return {k: v for k, v in self.proposer.stats().items() if k != "finished"}


def replay_request(method, prompt: np.ndarray, out: np.ndarray, k: int) -> dict:
    """Decode steps ``method`` needs for greedy's ``out`` after ``prompt``, as vLLM runs them."""
    tokens = np.concatenate([prompt, out[:1]]).astype(np.int64)
    sampled, i = [int(out[0])], 1
    if hasattr(method, "begin"):
        method.begin(prompt)
    steps = drafted = short_full = tree_extra = 0
    while i < out.shape[0]:
        if hasattr(method, "peek"):
            method.peek(out[i:])
        chain = method.propose(sampled, tokens)[:k]
        a = 0
        while a < chain.shape[0] and i + a < out.shape[0] and chain[a] == out[i + a]:
            a += 1
        tree = method.tree() if hasattr(method, "tree") else None
        if tree is not None:
            tree_extra += max(len(accept(tree, out[i:i + k])) - 1 - a, 0)
        if a == chain.shape[0] and a < k and i + a + 1 < out.shape[0]:
            short_full += 1
        committed = out[i:i + a + 1]
        tokens = np.concatenate([tokens, committed])
        sampled = committed.tolist()
        i += committed.shape[0]
        steps += 1
        drafted += chain.shape[0]
    return {"tokens": int(out.shape[0]), "steps": steps, "drafted": drafted, "short_full": short_full,
            "tree_extra": tree_extra}


def load_requests(folder: Path) -> tuple[str, str, list[tuple[np.ndarray, np.ndarray]]]:
    """``(model name, suite, [(prompt ids, greedy output ids)])`` from a results folder."""
    res = json.loads((folder / "results.json").read_text())
    cfg = res["config"]
    if "methods" in res:  # vllm_bench.py
        from vllm_bench import _prompts

        from retrodraft import models

        tok = models.load_tokenizer(cfg["model"])
        prompts = _prompts(SimpleNamespace(suite=cfg["suite"], per_category=cfg["per_category"],
                                           requests=cfg["requests"]), tok)
        outs = res["methods"]["none"]["runs"]["1"]["outputs"]
        return cfg["model"], cfg["suite"], [(np.asarray(p, np.int64), np.asarray(o, np.int64))
                                            for p, o in zip(prompts, outs)]
    from _recorded import load_run

    _, requests = load_run(folder)
    suite = ",".join(sorted({r["category"] for r in res["records"]}))
    return cfg["model"], suite, [(p, o) for _, p, o in requests]


def _value(text: str):
    """A ``key=value`` option's value: JSON where it parses (numbers), else the text (``cut=gain``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def make_method(spec: str, k: int, model: str):
    name, _, rest = spec.partition(":")
    if name == "ngram":
        lo, hi = (int(x) for x in rest.split(":")) if rest else (NGRAM_MIN, NGRAM_MAX)
        return NgramMethod(k, lo, hi)
    if name == "copy-oracle":
        return CopyOracleMethod(k)
    if name == "suffix":
        return SuffixMethod(k)
    if name == "retrodraft":
        options = {}
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            options[key] = value.split("+") if key == "drafters" else _value(value)
        vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
        return RetroDraftMethod(k, vocab, options, model)
    raise SystemExit(f"unknown method {spec!r}: ngram[:MIN:MAX], suffix, copy-oracle or retrodraft[:key=value,...]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="results folders (vllm_bench.py or retrodraft bench)")
    ap.add_argument("--k", type=int, default=16, help="num_speculative_tokens")
    ap.add_argument("--method", action="append", default=None, help="ngram[:MIN:MAX], retrodraft[:key=value,...]")
    ap.add_argument("--token-cost", type=float, default=None,
                    help="a drafted token's verify time in one-token steps, for the cost column "
                         "(default: the proposer's min_score)")
    ap.add_argument("--out", type=Path, default=None,
                    help="a folder for results.json (every figure and the command) and report.md (the table)")
    a = ap.parse_args(argv)
    from retrodraft import models

    methods = a.method or ["ngram", "retrodraft"]
    if a.token_cost is None:
        from retrodraft.vllm.options import VllmOptions

        a.token_cost = VllmOptions().min_score
    report, lines = [], []
    for folder in a.runs:
        model, suite, requests = load_requests(folder)
        path = str(models.cached_path(model) or model)
        lines.append(f"\n{folder.name} ({suite}, {len(requests)} requests, k={a.k}): tokens per decode step per "
                     f"request, then all; tok/cost = those tokens per (steps + token_cost x drafted); short = whole chain accepted but < k; tree+ = tokens the tree would have added")
        print(lines[-1])
        for spec in methods:
            method = make_method(spec, a.k, path)
            per = [replay_request(method, p, o, a.k) for p, o in requests]
            stats = method.close()
            steps = sum(r["steps"] for r in per)
            after_first = sum(r["tokens"] - 1 for r in per)
            drafted = sum(r["drafted"] for r in per)
            cost = steps + a.token_cost * drafted
            row = {"run": str(folder), "method": spec, "k": a.k, "steps": steps, "tokens_per_step": after_first / steps,
                   "drafted": drafted, "cost": cost, "tokens_per_cost": after_first / cost, "short_full": sum(r["short_full"] for r in per),
                   "tree_extra": sum(r["tree_extra"] for r in per), "requests": per,
                   "draft_ms_per_step": stats.get("draft_seconds", 0) * 1000 / steps if stats else None}
            report.append(row)
            cells = " ".join(f"{(r['tokens'] - 1) / max(r['steps'], 1):5.2f}" for r in per)
            extra = (f"  short {row['short_full']:4d}  tree+ {row['tree_extra']:4d}  draft ms/step "
                     f"{row['draft_ms_per_step']:5.2f}") if stats else ""
            lines.append(f"  {spec:<44} {cells} | {row['tokens_per_step']:5.2f}  steps {steps:5d}  drafted {drafted:6d}  "
                         f"tok/cost {row['tokens_per_cost']:5.2f}{extra}")
            print(lines[-1])
    if a.out:
        import shlex

        command = "python " + " ".join(shlex.quote(x) for x in ["benchmarks/vllm_replay.py"] + (argv or sys.argv[1:]))
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps({"command": command, "rows": report}, indent=1))
        (a.out / "report.md").write_text(f"`{command}`\n\n```" + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
