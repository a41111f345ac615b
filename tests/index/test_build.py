"""Building, opening and refusing corpus indexes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import CharTokenizer

from retrodraft.errors import ConfigError, IndexFormatError, IndexMismatchError, SourceError
from retrodraft.index import CorpusIndex, build_index


@pytest.fixture
def corpus(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("def add(a, b):\n    return a + b\n")
    (src / "pkg" / "b.py").write_text("def sub(a, b):\n    return a - b\n")
    (src / "notes.txt").write_text("return a + b is addition\n")
    (src / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (src / "latin.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
    return src


def test_build_then_query_finds_the_continuation(corpus, tmp_path, tok):
    h = build_index([str(corpus)], tok, tmp_path / "idx", include=["*.py"], workers=1, progress=False)
    assert h["stats"]["files"] == 2 and h["stats"]["skipped_files"] == 1  # latin-1 file skipped
    idx = CorpusIndex(tmp_path / "idx", verify=True)
    ctx = np.array(tok(["    return a "])["input_ids"][0])
    r = idx.query(ctx, depth=3)
    assert r.match_len == len(ctx) and r.occurrences == 2
    first = {tok.decode([int(r.tokens[j])]) for j in range(1, len(r.tokens)) if r.parents[j] == 0}
    assert first == {"+", "-"}


def test_shards_are_queried_together(corpus, tmp_path, tok):
    one = build_index([str(corpus)], tok, tmp_path / "one", workers=1, progress=False, exclude=["*.bin"])
    many = build_index([str(corpus)], tok, tmp_path / "many", shard_tokens=1000, workers=2, progress=False,
                       exclude=["*.bin"])
    assert len(one["shards"]) == 1 and one["stats"]["tokens"] == many["stats"]["tokens"]
    big = tmp_path / "big.txt"
    big.write_text("x" * 2500 + "\nreturn a + b\n")
    sharded = build_index([str(big), str(corpus)], tok, tmp_path / "sh", shard_tokens=1000, workers=2,
                          progress=False, exclude=["*.bin"])
    assert len(sharded["shards"]) >= 2
    r = CorpusIndex(tmp_path / "sh").query(np.array(tok(["return a "])["input_ids"][0]), depth=1)
    assert r.occurrences == 4  # a.py, pkg/b.py, notes.txt and big.txt, across shards
    assert dict(zip(r.tokens[1:].tolist(), r.counts[1:].tolist())) == {ord("+"): 3.0, ord("-"): 1.0}


@pytest.mark.parametrize("sources,msg", [(["nope/"], "does not exist"), (["*.nomatch"], "matches no file"),
                                          ([], "no corpus source")])
def test_bad_sources_are_clear_errors(tmp_path, tok, sources, msg):
    with pytest.raises(SourceError, match=msg):
        build_index(sources, tok, tmp_path / "x", progress=False)


def test_sources_without_text_are_an_error(tmp_path, tok):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "b.bin").write_bytes(b"\x00\x00")
    with pytest.raises(SourceError, match="no text to index"):
        build_index([str(tmp_path / "e")], tok, tmp_path / "x", progress=False, workers=1)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))


def test_existing_index_needs_force(corpus, tmp_path, tok):
    build_index([str(corpus)], tok, tmp_path / "i", workers=1, progress=False)
    with pytest.raises(ConfigError, match="--force"):
        build_index([str(corpus)], tok, tmp_path / "i", workers=1, progress=False)
    build_index([str(corpus / "a.py")], tok, tmp_path / "i", workers=1, progress=False, force=True)
    assert CorpusIndex(tmp_path / "i").header["stats"]["files"] == 1


def test_another_tokenizer_is_refused_naming_both(corpus, tmp_path, tok):
    build_index([str(corpus)], tok, tmp_path / "i", workers=1, progress=False)
    idx = CorpusIndex(tmp_path / "i")
    idx.check_tokenizer(CharTokenizer())
    with pytest.raises(IndexMismatchError) as e:
        idx.check_tokenizer(CharTokenizer(offset=1))
    assert idx.fingerprint in str(e.value) and "fingerprint" in str(e.value)


def _damage(folder, how):
    h = json.loads((folder / "header.json").read_text())
    f = folder / h["shards"][0]["files"]["sa"]["name"]
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:-8])
    elif how == "corrupted":
        b = bytearray(f.read_bytes())
        b[-1] ^= 0xFF
        f.write_bytes(bytes(b))
    elif how == "future":
        h["version"] = 99
        (folder / "header.json").write_text(json.dumps(h))
    elif how == "header":
        (folder / "header.json").write_text("{not json")
    elif how == "missing":
        f.unlink()


@pytest.mark.parametrize("how,msg", [("truncated", "truncated"), ("future", "newer retrodraft"),
                                     ("header", "corrupted"), ("missing", "missing")])
def test_damaged_indexes_are_refused_on_open(corpus, tmp_path, tok, how, msg):
    build_index([str(corpus)], tok, tmp_path / "i", workers=1, progress=False)
    _damage(tmp_path / "i", how)
    with pytest.raises(IndexFormatError, match=msg):
        CorpusIndex(tmp_path / "i")


def test_a_flipped_byte_fails_verify(corpus, tmp_path, tok):
    build_index([str(corpus)], tok, tmp_path / "i", workers=1, progress=False)
    _damage(tmp_path / "i", "corrupted")
    idx = CorpusIndex(tmp_path / "i")  # same size: only the checksum can tell
    with pytest.raises(IndexFormatError, match="checksum"):
        idx.verify()


def test_an_interrupted_build_leaves_no_complete_looking_index(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}.txt").write_text(f"document {i} " * 50)
    out = tmp_path / "idx"
    script = f"""
import sys, time
sys.path.insert(0, {str(os.path.dirname(__file__))!r})
from conftest import CharTokenizer
from retrodraft.index import build_index
class Slow(CharTokenizer):
    def __call__(self, texts, add_special_tokens=False):
        time.sleep(0.2)
        return super().__call__(texts)
build_index([{str(src)!r}], Slow(), {str(out)!r}, shard_tokens=1000, workers=1, progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not list(tmp_path.glob(".idx.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".idx.partial-*")), "the build should have started"
    assert not out.exists()
    for partial in tmp_path.glob(".idx.partial-*"):
        with pytest.raises(IndexFormatError, match="not a complete"):
            CorpusIndex(partial)


def test_a_dask_cluster_builds_the_same_index_as_the_local_pool(corpus, tmp_path, tok):
    distributed = pytest.importorskip("distributed")
    (corpus / "big.txt").write_text("lorem ipsum dolor " * 200)
    local = build_index([str(corpus)], tok, tmp_path / "local", shard_tokens=1000, workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        remote = build_index([str(corpus)], tok, tmp_path / "dask", shard_tokens=1000, progress=False,
                             executor=client.get_executor())
    assert [s["files"] for s in remote["shards"]] == [s["files"] for s in local["shards"]]
    assert len(local["shards"]) >= 2 and remote["stats"]["tokens"] == local["stats"]["tokens"]
