import json

import numpy as np
import pytest
import torch

from helpers import OracleDrafter, RandomDrafter, tiny_model
from retrodraft import ConfigError, RetroDraft
from retrodraft.cost import CostModel, cost_dir, model_key

VOCAB = 96


def test_interpolates_between_measured_sizes():
    cm = CostModel(np.array([1, 3, 9]), np.array([1.0, 2.0, 5.0]))
    assert cm.seconds_for(2) == pytest.approx(1.5)
    assert cm.relative(np.array([1, 6])) == pytest.approx([1.0, 3.5])
    assert cm.max_tokens == 9


@pytest.mark.parametrize("sizes, seconds", [([2, 4], [1, 2]), ([1, 1], [1, 2]), ([1, 2], [1, 0]), ([1], [1])])
def test_malformed_curves_are_refused(sizes, seconds):
    with pytest.raises(ConfigError):
        CostModel(np.array(sizes), np.array(seconds))


def test_measure_and_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_COST_CACHE", str(tmp_path))
    model = tiny_model("llama")
    cm = CostModel.for_model(model, sizes=(1, 4, 8), past_len=16, repeats=1)
    assert cm.sizes.tolist() == [1, 4, 8] and np.all(cm.seconds > 0)
    path = cost_dir() / f"{model_key(model)}.json"
    assert json.loads(path.read_text())["sizes"] == [1, 4, 8]
    # A cached curve is reused, not re-measured; refresh measures again.
    again = CostModel.for_model(model)
    assert again.seconds.tolist() == cm.seconds.tolist()
    fresh = CostModel.for_model(model, refresh=True, sizes=(1, 2), past_len=16, repeats=1)
    assert fresh.sizes.tolist() == [1, 2]


def test_a_copy_of_a_model_under_another_name_reuses_its_curve(tmp_path, monkeypatch):
    # An exported or renamed folder of the same architecture costs what the original costs: it
    # must not pay a new measurement (minutes for a real model) on its first request.
    monkeypatch.setenv("RETRODRAFT_COST_CACHE", str(tmp_path))
    model = tiny_model("llama")
    model.config._name_or_path = "/models/original"
    cm = CostModel.for_model(model, sizes=(1, 4), past_len=16, repeats=1)
    model.config._name_or_path = "/exports/served-copy"
    copy = CostModel.for_model(model, sizes=(1, 2, 8), past_len=16, repeats=1)
    assert copy.sizes.tolist() == [1, 4] and copy.seconds.tolist() == cm.seconds.tolist()
    assert copy.key == model_key(model) and "served-copy" in copy.key
    assert len(list(tmp_path.glob("*.json"))) == 1
    other_dtype = tiny_model("llama").to(torch.float64)
    other_dtype.config._name_or_path = "/models/original"
    assert CostModel.for_model(other_dtype, sizes=(1, 2), past_len=16, repeats=1).sizes.tolist() == [1, 2]


def test_a_corrupt_cache_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_COST_CACHE", str(tmp_path))
    model = tiny_model("llama")
    path = cost_dir() / f"{model_key(model)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    cm = CostModel.for_model(model, sizes=(1, 2), past_len=8, repeats=1)
    assert cm.sizes.tolist() == [1, 2] and json.loads(path.read_text())["format"] == 2


def test_keys_separate_dtypes_and_architectures():
    assert model_key(tiny_model("llama")) != model_key(tiny_model("llama", dtype=torch.bfloat16))
    assert model_key(tiny_model("llama")) != model_key(tiny_model("qwen2"))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_auto_budget_is_exact_and_sizes_each_step(arch):
    model = tiny_model(arch)
    torch.manual_seed(0)
    ids = torch.randint(3, VOCAB, (1, 12))
    ref = model.generate(ids, max_new_tokens=40, do_sample=False)
    flat = CostModel(np.array([1, 64]), np.array([1.0, 1.0]))
    a = RetroDraft(drafters=[OracleDrafter(ref[0, 12:].tolist(), 12, VOCAB)], sizing="auto", cost=flat)
    assert torch.equal(model.generate(ids, max_new_tokens=40, do_sample=False, assistant=a), ref)
    assert a.stats.mean_accepted > 4  # free nodes and a perfect drafter: long blocks
    steep = CostModel(np.array([1, 64]), np.array([1.0, 64.0]))
    b = RetroDraft(drafters=[RandomDrafter(VOCAB)], sizing="auto", cost=steep)
    assert torch.equal(model.generate(ids, max_new_tokens=40, do_sample=False, assistant=b), ref)
    assert set(b.stats.tree_sizes) == {1}  # random guesses never pay at that cost


def test_cost_json_path_is_accepted(tmp_path):
    path = tmp_path / "c.json"
    CostModel(np.array([1, 2]), np.array([0.1, 0.2]), key="k").save(path)
    assert RetroDraft(cost=path).cost.seconds.tolist() == [0.1, 0.2]



# ---------------------------------------------------------------- context lengths
def _surface():
    """Flat at 256 cached positions, every extra token dearer at 4,096."""
    sizes, contexts = np.array([1, 8, 64]), np.array([256, 4096])
    grid = np.array([[1.0, 1.0, 2.0], [3.0, 6.0, 30.0]])
    return CostModel(sizes, grid[0], contexts=contexts, grid=grid)


def test_interpolates_between_contexts_and_extends_beyond_the_last():
    cm = _surface()
    assert cm.seconds_for(8, 256) == pytest.approx(1.0) and cm.seconds_for(8) == pytest.approx(1.0)
    assert cm.seconds_for(8, 100) == pytest.approx(1.0)  # flat below the first context
    assert cm.seconds_for(8, 2176) == pytest.approx(3.5)  # halfway
    assert cm.seconds_for(1, 7936) == pytest.approx(5.0)  # along the last two contexts' slope
    assert cm.relative(8, 4096) == pytest.approx(2.0)


@pytest.mark.parametrize("contexts, grid", [([4096, 256], [[1, 1, 2], [3, 6, 30]]), ([256, 4096], [[1, 1, 2], [3, 0, 30]]),
                                            ([256, 4096], [[1, 1, 2]]), ([256, 4096], [[2, 1, 2], [3, 6, 30]])])
def test_malformed_surfaces_are_refused(contexts, grid):
    with pytest.raises(ConfigError):
        CostModel(np.array([1, 8, 64]), np.array([1.0, 1.0, 2.0]), contexts=np.array(contexts), grid=np.array(grid))


def test_measures_several_contexts_and_round_trips(tmp_path):
    model = tiny_model("llama", max_position_embeddings=2200)
    cm = CostModel.measure(model, sizes=(1, 4, 8, 16), contexts=(32, 256, 1100, 4096), repeats=1)
    assert cm.contexts.tolist() == [32, 256, 1100]  # 4,096 does not fit the model's positions
    assert cm.grid.shape == (3, 4) and np.all(cm.grid > 0)
    assert np.array_equal(cm.grid[0], cm.seconds)
    path = tmp_path / "c.json"
    cm.save(path)
    back = CostModel.load(path)
    assert back.contexts.tolist() == [32, 256, 1100] and np.array_equal(back.grid, cm.grid)
    assert back.seconds_for(5, 700) == pytest.approx(cm.seconds_for(5, 700))


def test_a_format_1_curve_still_loads_and_the_cache_measures_contexts_once(tmp_path, monkeypatch):
    old = {"format": 1, "key": "k", "device": "d", "sizes": [1, 2, 4], "seconds": [0.1, 0.11, 0.15]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    cm = CostModel.load(tmp_path / "old.json")
    assert cm.contexts.tolist() == [256] and cm.seconds_for(2, 9000) == pytest.approx(0.11)
    assert RetroDraft(cost=tmp_path / "old.json").cost.seconds.tolist() == [0.1, 0.11, 0.15]
    monkeypatch.setenv("RETRODRAFT_COST_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama")
    path = cost_dir() / f"{model_key(model)}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(old))
    kw = dict(sizes=(1, 2, 4), contexts=(16, 64), repeats=1)
    upgraded = CostModel.for_model(model, **kw)  # an old single-length curve is measured again
    assert upgraded.contexts.tolist() == [16, 64] and json.loads(path.read_text())["format"] == 2
    assert CostModel.for_model(model, **kw).grid.tolist() == upgraded.grid.tolist()  # then reused
