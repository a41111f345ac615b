"""Build a corpus index: tokenize, cut into shards, suffix-sort each shard in parallel.

The suffix array comes from libdivsufsort (``pydivsufsort``). Its byte-string sort is far faster
than its integer one, so each token is written as 3 big-endian bytes (separator = 0xFFFFFF, the
largest): byte order of aligned suffixes is then token order, and the token-level suffix array
is the byte-level one restricted to positions divisible by 3.

Shards are independent jobs on any ``concurrent.futures.Executor``: a local process pool by
default, or a cluster's (``dask.distributed.Client(...).get_executor()``), so building scales
past one machine without code of our own. Each job writes its two files and returns their
checksums; the header is written last and the folder renamed into place only when all are done.

The local pool's workers never outlive the build: they ignore Ctrl-C from their first instruction
(the parent handles it and kills them), and die with the parent even when it is killed outright
(on Linux the kernel kills them, ``PR_SET_PDEATHSIG``; elsewhere they watch it). Partial folders
that a killed build left behind are removed by the next build of the same index.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, SourceError
from .format import FORMAT, SEPARATOR, VERSION, sha256_file, tokenizer_fingerprint, write_header
from .sources import SourceStats, iter_documents, iter_files
from .store import suffix_array  # re-exported: its home was here

__all__ = ["build_index", "suffix_array", "build_shard"]


def build_shard(folder: str, name: str, tokens: np.ndarray) -> dict:
    """Suffix-sort one shard and write its files into ``folder``; return its header entry."""
    folder_p = Path(folder)
    tokens = np.asarray(tokens, np.int32)
    sa = suffix_array(tokens)
    files = {}
    for kind, arr in (("tokens", tokens), ("sa", sa)):
        f = folder_p / f"{name}.{kind}.npy"
        np.save(f, arr)
        files[kind] = {"name": f.name, "bytes": f.stat().st_size, "sha256": sha256_file(f)}
    return {"name": name, "tokens": int(tokens.size), "files": files}


@contextmanager
def _sigint_held():
    """Hold Ctrl-C back (it is delivered on exit) while workers may be forked: a worker then starts
    with it blocked, and ignores it (dropping a pending one) before it could raise there."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _init_worker(parent: int) -> None:
    """Pool worker setup: leave Ctrl-C to the parent, and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux") and os.getppid() == parent:  # forked by the build itself
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)
    elif os.name == "posix":  # started by a fork server, or not Linux: watch the build process instead
        threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()


def _exit_without(parent: int, every: float = 1.0) -> None:
    """Exit this process once ``parent`` is gone (checked every ``every`` seconds)."""
    while True:
        time.sleep(every)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass  # exists, not ours to signal


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill a local pool's workers now (a shard being sorted is not waited for)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        p.kill()
    for p in procs:
        p.join(5)


def _remove_stale_partials(out: Path) -> None:
    """Delete partial folders of ``out`` whose build process is gone (killed builds)."""
    for tmp in out.parent.glob(f".{out.name}.partial-*"):
        pid = tmp.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # alive, someone else's


def build_index(sources: Sequence[str], tokenizer, out: str | Path, include: Sequence[str] = (),
                exclude: Sequence[str] = (), jsonl_field: str | None = None, shard_tokens: int = 50_000_000,
                workers: int | None = None, executor: Executor | None = None, force: bool = False,
                progress: bool = True, tokenizer_name: str | None = None,
                token_docs: Iterable[Sequence[int]] | None = None) -> dict:
    """Build an index of ``sources`` tokenized with ``tokenizer`` into the folder ``out``.

    Args:
        sources: files, folders (recursive) and globs; see :func:`~retrodraft.index.sources.iter_files`.
        include / exclude: glob patterns on file paths or names.
        jsonl_field: for ``.jsonl`` files, index this field of every line (else the whole file).
        shard_tokens: tokens per shard (each shard is one parallel job).
        workers: local processes (default: CPU count); ignored when ``executor`` is given.
        executor: where shard jobs run, e.g. a Dask client's executor.
        force: replace an existing index at ``out``.
        token_docs: already tokenized documents to index instead of ``sources`` (``tokenizer``
            still names the vocabulary they come from).

    Returns:
        The header written (also in ``out/header.json``).
    """
    out = Path(out)
    if shard_tokens < 1000:
        raise ConfigError(f"shard_tokens must be at least 1000, got {shard_tokens}.")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; pass --force to replace it.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}.")
    files = iter_files(sources, include, exclude) if token_docs is None else []
    stats = SourceStats()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _remove_stale_partials(out)
    own_pool = executor is None
    pool = executor or ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=_init_worker,
                                           initargs=(os.getpid(),))
    t0 = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="file", desc="index", disable=not progress)
        futures, buf, n_buf, n_tok = [], [], 0, 0

        def flush() -> None:
            nonlocal buf, n_buf
            if buf:
                stream = np.concatenate(buf).astype(np.int32)
                with _sigint_held():  # the first submit forks the workers
                    futures.append(pool.submit(build_shard, str(tmp), f"shard-{len(futures):05d}", stream))
                buf, n_buf = [], 0

        batch: list[str] = []
        sep = np.array([SEPARATOR], np.int32)

        def encode(texts: list[str]) -> None:
            nonlocal n_buf, n_tok
            for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
                if not ids:
                    continue
                buf.append(np.asarray(ids, np.int32))
                buf.append(sep)
                n_buf += len(ids) + 1
                n_tok += len(ids)
                if n_buf >= shard_tokens:
                    flush()
            bar.set_postfix_str(f"{n_tok / max(time.perf_counter() - t0, 1e-9) / 1e3:,.0f}k tok/s, {n_tok:,} tokens")

        seen_files = 0
        if token_docs is not None:
            for ids in token_docs:
                buf.append(np.asarray(ids, np.int32))
                buf.append(sep)
                n_buf += len(ids) + 1
                n_tok += len(ids)
                stats.documents += 1
                if n_buf >= shard_tokens:
                    flush()
        for text in iter_documents(files, stats, jsonl_field):
            batch.append(text)
            if len(batch) >= 64:
                encode(batch)
                batch = []
            done = stats.files + stats.skipped
            bar.update(done - seen_files)
            seen_files = done
        if batch:
            encode(batch)
        bar.update(stats.files + stats.skipped - seen_files)
        flush()
        bar.close()
        if n_tok == 0:
            raise SourceError(f"the sources yielded no text to index ({stats.skipped} files skipped: "
                              f"{'; '.join(stats.skipped_examples) or 'none'}).")
        shards = [f.result() for f in futures]
        seconds = time.perf_counter() - t0
        header = {
            "format": FORMAT,
            "version": VERSION,
            "tokenizer": {"name": tokenizer_name or getattr(tokenizer, "name_or_path", None),
                          "fingerprint": tokenizer_fingerprint(tokenizer), "vocab_size": len(tokenizer)},
            "stats": {"files": stats.files, "documents": stats.documents, "tokens": n_tok, "bytes": stats.bytes,
                      "skipped_files": stats.skipped, "skipped_examples": stats.skipped_examples,
                      "build_seconds": round(seconds, 2), "tokens_per_second": round(n_tok / seconds),
                      "sources": list(sources), "include": list(include), "exclude": list(exclude),
                      "jsonl_field": jsonl_field},
            "shards": shards,
        }
        write_header(tmp, header)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
        return header
    except BaseException:
        if own_pool:
            _kill_workers(pool)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if own_pool:
            pool.shutdown(cancel_futures=True)
