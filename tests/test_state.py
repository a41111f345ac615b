"""Saved assistant state: round trip, refusals, and exactness after a load."""

import json
import shutil

import numpy as np
import pytest
import torch

import retrodraft  # noqa: F401  (installs the generate hook)
from helpers import tiny_model
from retrodraft import RetroDraft
from retrodraft import state as st
from retrodraft.cli import main
from retrodraft.cost import CostModel
from retrodraft.drafters.base import Request
from retrodraft.drafters.stand import Stand
from retrodraft.errors import StateError
from tiny_tokenizer import tiny_tokenizer

DRAFTERS = ["recycling", "lookup", "stand", "aded", "retrieval", "history"]
# A synthetic cost curve: sizing="auto" without measuring the tiny model.
COST = CostModel(np.array([1, 2, 4, 8, 16, 32, 64]), np.array([1.0, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0]) * 1e-3, "tiny",
                 "cpu")
PROMPTS = [[3, 7, 8, 9, 10, 7, 8, 9, 10, 7, 8], [4, 20, 21, 22, 23, 20, 21, 22], [5, 30, 31, 30, 31, 30, 31, 32, 33]]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _generate(model, assistant, prompt, n=24):
    ids = torch.tensor([prompt])
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          assistant=assistant)


def _warm(model, **kwargs):
    a = RetroDraft(drafters=list(DRAFTERS), cost=COST, **kwargs)
    for p in PROMPTS:
        with a.options(documents=[[11, 12, 13, 14], [40, 41, 42]]):
            _generate(model, a, p)
    return a


@pytest.fixture(scope="module")
def saved(model, tok, tmp_path_factory):
    """A warm assistant and the state it saved (read-only: copy it before altering)."""
    a = _warm(model)
    path = a.save(tmp_path_factory.mktemp("state") / "s", tok)
    return a, path


def _copy(saved, tmp_path):
    return shutil.copytree(saved[1], tmp_path / "s")


def test_round_trip_restores_every_array_and_drafts_the_same_trees(saved, tok):
    warm, path = saved
    loaded = RetroDraft.load(path, tok, cost=COST)
    assert [d.name for d in loaded.drafters] == DRAFTERS
    for a, b in zip(warm.drafters, loaded.drafters):
        sa, sb = a.state(), b.state()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])), (a.name, k)
    assert loaded.sizer is not None
    assert np.array_equal(loaded.sizer.state()["hits"], warm.sizer.state()["hits"])
    assert np.array_equal(loaded.sizer.state()["seen"], warm.sizer.state()["seen"])
    # something was learnt, so the comparison above could fail
    assert (warm.drafters[0].succ >= 0).any() and warm.drafters[2].table.used > 0
    assert loaded.drafters[-1].memory.n_requests == warm.drafters[-1].memory.n_requests == len(PROMPTS)
    for ctx in ([3, 7, 8, 9], [20, 21, 22, 23, 20], [11, 12], [50, 51, 30, 31]):
        ctx = np.array(ctx, np.int64)
        for a in (warm, loaded):  # the next request (retrieval's datastore holds its prompt)
            a.begin(Request(ctx[:-1], 96))
        for a, b in zip(warm.drafters, loaded.drafters):
            ta, tb = a.propose(ctx, 12), b.propose(ctx, 12)
            assert np.array_equal(ta.tokens, tb.tokens) and np.array_equal(ta.parents, tb.parents), a.name
            assert np.array_equal(ta.scores, tb.scores), a.name
        fa, fb = warm.draft(ctx, 12), loaded.draft(ctx, 12)
        assert np.array_equal(fa.tokens, fb.tokens) and np.array_equal(fa.parents, fb.parents)


def test_a_loaded_assistant_continues_exactly_like_the_warm_one(model, tok, tmp_path):
    warm = _warm(model)
    path = warm.save(tmp_path / "s", tok)
    loaded = RetroDraft.load(path, tok, cost=COST)
    prompt = [3, 7, 8, 9, 10, 7, 8, 60, 61]
    plain = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
    out_warm = _generate(model, warm, prompt, 32)
    out_loaded = _generate(model, loaded, prompt, 32)
    assert torch.equal(out_loaded, plain) and torch.equal(out_warm, plain)  # greedy exactness unchanged
    assert loaded.stats.committed == warm.stats.committed  # same drafts, same acceptance, step by step
    assert loaded.stats.tree_sizes == warm.stats.tree_sizes


def test_state_files_are_plain_arrays_and_json(saved):
    path = saved[1]
    manifest = json.loads((path / st.MANIFEST).read_text())
    assert manifest["format"] == st.FORMAT and manifest["version"] == st.VERSION
    files = sorted(p.name for p in path.iterdir())
    assert st.MANIFEST in files and all(f.endswith(".npy") for f in files if f != st.MANIFEST)
    for f in files:
        if f.endswith(".npy"):
            np.load(path / f, allow_pickle=False)  # raises on a pickled array


def test_object_arrays_are_never_saved(tok, tmp_path):
    a = RetroDraft(drafters=["lookup"])
    a.drafters[0].state = lambda: {"x": np.array([{"a": 1}], dtype=object)}
    with pytest.raises(StateError, match="Python objects"):
        a.save(tmp_path / "s", tok)
    assert not (tmp_path / "s").exists() and not list(tmp_path.iterdir())  # no temporary left behind


def _one_line(e):
    assert "\n" not in str(e.value)


def test_another_tokenizer_is_refused(saved):
    other = tiny_tokenizer(word="v")
    with pytest.raises(StateError, match="was saved for another tokenizer") as e:
        RetroDraft.load(saved[1], other)
    _one_line(e)


def test_a_truncated_array_is_refused(saved, tok, tmp_path):
    path = _copy(saved, tmp_path)
    f = path / "0-recycling-succ.npy"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(StateError, match=r"succ.npy is truncated or altered \(") as e:
        RetroDraft.load(path, tok)
    _one_line(e)


@pytest.mark.parametrize("target", ["0-recycling-succ.npy", "2-stand-tok.npy", "sizer-hits.npy"])
def test_a_flipped_byte_in_an_array_is_refused(saved, tok, tmp_path, target):
    path = _copy(saved, tmp_path)
    f = path / target
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.raises(StateError, match=r"\.npy is corrupted \(sha256") as e:
        RetroDraft.load(path, tok, cost=COST)
    _one_line(e)


def test_an_edited_manifest_is_refused(saved, tok, tmp_path):
    path = _copy(saved, tmp_path)
    m = json.loads((path / st.MANIFEST).read_text())
    m["drafters"][0]["arrays"]["succ"]["shape"][0] += 1  # still valid JSON, still plausible
    (path / st.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StateError, match="checksum"):
        RetroDraft.load(path, tok)
    (path / st.MANIFEST).write_text("{not json")
    with pytest.raises(StateError, match="unreadable or corrupted"):
        RetroDraft.load(path, tok)


def test_a_state_from_a_future_version_is_refused(saved, tok, tmp_path):
    path = _copy(saved, tmp_path)
    m = json.loads((path / st.MANIFEST).read_text())
    m["version"] = st.VERSION + 1
    m["sha256"] = st._manifest_digest(m)
    (path / st.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StateError, match="newer retrodraft") as e:
        RetroDraft.load(path, tok)
    _one_line(e)


def test_missing_state_or_files_are_refused(saved, tok, tmp_path):
    with pytest.raises(StateError, match="no saved state"):
        RetroDraft.load(tmp_path / "nothing", tok)
    path = _copy(saved, tmp_path)
    (path / "3-aded-keys.npy").unlink()
    with pytest.raises(StateError, match="aded-keys.npy is missing"):
        RetroDraft.load(path, tok, cost=COST)
    (path / st.MANIFEST).unlink()
    with pytest.raises(StateError, match="interrupted save"):
        RetroDraft.load(path, tok)


def test_other_drafters_or_table_sizes_are_refused(saved, tok):
    with pytest.raises(StateError, match="holds the state of drafters"):
        RetroDraft(drafters=["recycling", "lookup"]).load_state(saved[1], tok)
    small = [*DRAFTERS[:2], Stand(max_bytes=1 << 16), *DRAFTERS[3:]]
    a = RetroDraft(drafters=small)
    with pytest.raises(StateError, match="max_bytes"):
        a.load_state(saved[1], tok)
    assert (a.drafters[0].succ < 0).all()  # a refusal leaves the assistant cold, never half loaded


def test_a_partial_restore_loads_only_the_drafters_named(saved, tok):
    from retrodraft.drafters.history import History
    from retrodraft.drafters.lookup import PromptLookup

    full = RetroDraft.load(saved[1], tok, cost=COST)  # the reference: every saved entry loaded
    history, lookup = History(), PromptLookup()
    sizer = st.restore(saved[1], tok, [history], partial=True)  # a token-only reader of a full state
    ref = full.drafters[DRAFTERS.index("history")].state()
    got = history.state()
    assert got.keys() == ref.keys() and all(np.array_equal(np.asarray(got[k]), np.asarray(ref[k])) for k in ref)
    assert history.memory.n_requests == len(PROMPTS)
    assert sizer is not None and np.array_equal(sizer["hits"], full.sizer.state()["hits"])
    with pytest.raises(StateError, match="holds the state of drafters"):
        st.restore(saved[1], tok, [history, lookup])  # without partial: the saved drafters exactly


def test_state_saves_drafters_without_an_assistant(saved, tok, tmp_path):
    warm = saved[0]
    path = st.save(tmp_path / "s", tok, warm.drafters[:2])
    manifest = st.verify(path, tok)
    assert [e["name"] for e in manifest["drafters"]] == DRAFTERS[:2] and manifest["sizer"] is None
    fresh = RetroDraft(drafters=DRAFTERS[:2])
    assert st.restore(path, tok, fresh.drafters) is None
    assert np.array_equal(fresh.drafters[0].succ, warm.drafters[0].succ)


def test_saving_replaces_a_state_but_never_another_folder(model, tok, tmp_path):
    a = RetroDraft(drafters=["recycling"])
    _generate(model, a, PROMPTS[0])
    path = a.save(tmp_path / "s", tok)
    first = (path / st.MANIFEST).read_text()
    _generate(model, a, PROMPTS[1])
    a.save(path, tok)
    assert (path / st.MANIFEST).read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary or old copy left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(StateError, match="not a retrodraft state"):
        a.save(other, tok)
    assert (other / "notes.txt").read_text() == "keep me"


def test_state_info_cli(saved, tmp_path, capsys):
    assert main(["state", "info", str(saved[1])]) == 0
    out = capsys.readouterr().out
    assert "checksums ok" in out and "recycling: succ 96x8" in out
    path = _copy(saved, tmp_path)
    f = path / "0-recycling-prob.npy"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    assert main(["state", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupted" in err


def test_a_saved_sizer_keeps_every_context_of_its_cost_curve(model, tok, tmp_path):
    sizes, contexts = np.array([1, 8, 64]), np.array([256.0, 4096.0])
    grid = np.array([[1.0, 1.1, 2.0], [3.0, 9.0, 40.0]]) * 1e-3
    curve = CostModel(sizes, grid[0], "tiny", "cpu", contexts=contexts, grid=grid)
    a = RetroDraft(drafters=["lookup"], cost=curve)
    _generate(model, a, PROMPTS[0])
    loaded = RetroDraft.load(a.save(tmp_path / "s", tok), tok)  # no cost given: the saved curve
    got = loaded.sizer.cost
    assert np.array_equal(got.contexts, contexts) and np.array_equal(got.grid, grid)
    assert got.seconds_for(8, 4096) == curve.seconds_for(8, 4096) > curve.seconds_for(8, 256)
    # a state saved before the contexts were kept loads with its first context only
    old = {k: v for k, v in a.sizer.state().items() if k not in ("cost_contexts", "cost_grid")}
    assert np.array_equal(loaded._sizer_from(old).cost.grid, grid[:1])
    with pytest.raises(StateError, match="cost curve is invalid"):
        loaded._sizer_from({**old, "cost_grid": grid})
