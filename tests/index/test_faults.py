"""Faults: a killed or interrupted build leaves no worker and no index; hostile index files are refused.

Hostile files are edited so that every cheaper check passes (sizes and checksums made to match),
leaving only the check under test to catch them; each is refused by ``retrodraft index info``
with one line and exit status 2.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CharTokenizer

from retrodraft.cli import main
from retrodraft.errors import IndexFormatError
from retrodraft.index import CorpusIndex, build_index

# ---------------------------------------------------------------------------- killed builds
_RUNNER = """
import multiprocessing, signal, sys, time
sys.path.insert(0, {tests!r})
from conftest import CharTokenizer
from retrodraft import cli, models

class Slow(CharTokenizer):
    def __call__(self, texts, add_special_tokens=False):
        time.sleep(0.1)
        return super().__call__(texts)

if __name__ == "__main__":
    # A job started in the background by a non-interactive shell (as some CI runners do) inherits
    # SIGINT ignored; a terminal's Ctrl-C reaches a foreground program with the default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    multiprocessing.set_start_method(sys.argv.pop(1))
    models.load_tokenizer = lambda name: Slow()
    sys.exit(cli.main(sys.argv[1:]))
"""


def _descendants(pid: int) -> list[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its new parent may not reap it at once)


@pytest.fixture(params=["fork"])
def slow_build(tmp_path, request):
    """Start ``retrodraft index build --workers 2`` (slow tokenizer, many shards) in its own session,
    its pool started by ``request.param``; yields (process, worker pids, out, stderr file) as soon
    as the workers exist (with a fork server, the server and the resource tracker are among them)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("process checks read /proc")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}.txt").write_text(f"document {i} " * 100)
    runner = tmp_path / "runner.py"
    runner.write_text(_RUNNER.format(tests=str(Path(__file__).parent)))
    out, err = tmp_path / "idx", tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, str(runner), request.param, "index", "build", str(src), "--tokenizer", "char",
                                 "--out", str(out), "--workers", "2", "--shard-tokens", "1000", "-q"],
                                stderr=f, stdout=subprocess.DEVNULL, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        want = 2 if request.param == "fork" else 3
        while len(workers) < want and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            workers = _descendants(proc.pid)
        assert len(workers) >= want, "the build should have started its workers"
        yield proc, workers, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers:  # never leave our own processes behind, whatever the test found
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(map(_alive, pids)):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("slow_build", ["fork", "forkserver"], indirect=True)
def test_ctrl_c_stops_the_build_workers_included_with_one_line_and_130(slow_build):
    proc, workers, out, err = slow_build
    # What a terminal's Ctrl-C does: the whole foreground group, at once (workers may be starting).
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert err.read_text() == "retrodraft: interrupted\n"
    assert _wait_gone(workers) == []
    assert not out.exists() and not list(out.parent.glob(".idx.partial-*"))


@pytest.mark.parametrize("slow_build", ["fork", "forkserver"], indirect=True)
def test_sigkill_of_the_build_takes_its_workers_down(slow_build, tmp_path):
    proc, workers, out, err = slow_build
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _wait_gone(workers) == [], "workers outlived their killed parent"
    assert not out.exists()
    partials = list(tmp_path.glob(".idx.partial-*"))
    for p in partials:
        with pytest.raises(IndexFormatError, match="not a complete"):
            CorpusIndex(p)
    # the next build of the same index clears what the killed one left
    (tmp_path / "small.txt").write_text("def f(x):\n    return x\n")
    build_index([str(tmp_path / "small.txt")], CharTokenizer(), out, workers=1, progress=False)
    assert not list(tmp_path.glob(".idx.partial-*")) and CorpusIndex(out).n_tokens > 0


# ---------------------------------------------------------------------------- hostile files
@pytest.fixture
def index(tmp_path):
    (tmp_path / "a.py").write_text("def add(a, b):\n    return a + b\n" * 20)
    build_index([str(tmp_path / "a.py")], CharTokenizer(), tmp_path / "idx", workers=1, progress=False)
    return tmp_path / "idx"


def _header(folder: Path) -> dict:
    return json.loads((folder / "header.json").read_text())


def _write_header(folder: Path, h: dict) -> None:
    (folder / "header.json").write_text(json.dumps(h))


def _sa_meta(h: dict) -> dict:
    return h["shards"][0]["files"]["sa"]


def _rehash(folder: Path, h: dict, kind: str = "sa") -> None:
    """Make the header's size and checksum match the file as it is now (a forged header)."""
    meta = h["shards"][0]["files"][kind]
    data = (folder / meta["name"]).read_bytes()
    meta["bytes"], meta["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_header(folder, h)


def _set(path: list, value):
    def edit(folder: Path) -> None:
        h = _header(folder)
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        _write_header(folder, h)
    return edit


def _outside_symlink(folder: Path) -> None:
    h = _header(folder)
    f = folder / _sa_meta(h)["name"]
    outside = folder.parent / "elsewhere.npy"
    outside.write_bytes(f.read_bytes())  # same bytes: only the location gives it away
    f.unlink()
    f.symlink_to(outside)


def _header_symlink(folder: Path) -> None:
    outside = folder.parent / "header-elsewhere.json"
    (folder / "header.json").rename(outside)
    (folder / "header.json").symlink_to(outside)


def _truncated_with_matching_checksum(folder: Path) -> None:
    h = _header(folder)
    f = folder / _sa_meta(h)["name"]
    f.write_bytes(f.read_bytes()[:-40])
    _rehash(folder, h)


def _consistent_but_shorter(folder: Path) -> None:
    """The sa file rewritten as a valid shorter array, size and checksum forged to match."""
    h = _header(folder)
    f = folder / _sa_meta(h)["name"]
    np.save(f, np.load(f)[:-10])
    _rehash(folder, h)


def _float_tokens(folder: Path) -> None:
    h = _header(folder)
    f = folder / h["shards"][0]["files"]["tokens"]["name"]
    np.save(f, np.load(f).astype(np.float32))
    _rehash(folder, h, "tokens")


def _pickled_array(folder: Path) -> None:
    h = _header(folder)
    f = folder / _sa_meta(h)["name"]
    np.save(f, np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    _rehash(folder, h)


def _npy_header_overflow(folder: Path) -> None:
    h = _header(folder)
    f = folder / _sa_meta(h)["name"]
    raw = bytearray(f.read_bytes())
    raw[8:10] = (0xFFFF).to_bytes(2, "little")  # npy header length far past the file's end
    f.write_bytes(bytes(raw))
    _rehash(folder, h)


HOSTILE = {
    "negative token count": (_set(["shards", 0, "tokens"], -5), "token count out of range"),
    "huge token count": (_set(["shards", 0, "tokens"], 10**30), "token count out of range"),
    "token count as text": (_set(["shards", 0, "tokens"], "123"), "token count out of range"),
    "negative file size": (_set(["shards", 0, "files", "sa", "bytes"], -1), "size out of range"),
    "file size as float": (_set(["shards", 0, "files", "sa", "bytes"], 1e3), "size out of range"),
    "dot-dot name": (_set(["shards", 0, "files", "sa", "name"], "../../etc/passwd"), "unsafe file name"),
    "absolute name": (_set(["shards", 0, "files", "tokens", "name"], "/etc/passwd"), "unsafe file name"),
    "name with a folder": (_set(["shards", 0, "files", "sa", "name"], "sub/x.npy"), "unsafe file name"),
    "bad checksum field": (_set(["shards", 0, "files", "sa", "sha256"], "zz"), "malformed sa checksum"),
    "shards not a list": (_set(["shards"], {"a": 1}), "valid 'shards'"),
    "shard not an object": (_set(["shards", 0], 7), "no name"),
    "no fingerprint": (_set(["tokenizer"], {}), "fingerprint"),
    "symlink out of the folder": (_outside_symlink, "leads out of the index folder"),
    "header symlinked out": (_header_symlink, "leads out of the index folder"),
    "truncated, checksum matching": (_truncated_with_matching_checksum, "not a readable array"),
    "shorter array, checksum matching": (_consistent_but_shorter, "wrong length"),
    "float tokens": (_float_tokens, "float32"),
    "pickled objects": (_pickled_array, "not a readable array"),
    "npy header overflow": (_npy_header_overflow, "not a readable array"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_index_files_are_refused_with_one_line(index, case, capsys):
    damage, msg = HOSTILE[case]
    damage(index)
    with pytest.raises(IndexFormatError, match=msg):
        CorpusIndex(index)
    assert main(["index", "info", str(index)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("retrodraft: error: ") and msg.split()[0] in err


def test_out_of_range_suffix_array_cannot_make_lookups_read_outside(index):
    """Forged so that it opens (sizes, dtype, checksum all match): lookups stay in bounds, verify refuses."""
    h = _header(index)
    f = index / _sa_meta(h)["name"]
    sa = np.load(f)
    rng = np.random.default_rng(0)
    sa[::3] = rng.integers(-(2**31), 2**31 - 1, size=len(sa[::3]))
    np.save(f, sa)
    _rehash(index, h)
    idx = CorpusIndex(index)
    for _ in range(50):
        r = idx.query(rng.integers(0, 128, size=8), depth=6)
        assert len(r.tokens) == len(r.parents)
    with pytest.raises(IndexFormatError, match="points outside"):
        idx.verify()


def test_token_ids_beyond_the_vocabulary_fail_verify(index):
    h = _header(index)
    f = index / h["shards"][0]["files"]["tokens"]["name"]
    tokens = np.load(f)
    tokens[3] = 10**6
    np.save(f, tokens)
    _rehash(index, h, "tokens")
    with pytest.raises(IndexFormatError, match="outside the tokenizer"):
        CorpusIndex(index, verify=True)


def test_an_intact_index_passes_every_check(index):
    assert len(CorpusIndex(index, verify=True).verify()) == 2
