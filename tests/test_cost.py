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


def test_a_corrupt_cache_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_COST_CACHE", str(tmp_path))
    model = tiny_model("llama")
    path = cost_dir() / f"{model_key(model)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    cm = CostModel.for_model(model, sizes=(1, 2), past_len=8, repeats=1)
    assert cm.sizes.tolist() == [1, 2] and json.loads(path.read_text())["format"] == 1


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

