import json

import numpy as np
import pytest
import torch

from helpers import OracleDrafter, RandomDrafter, tiny_model
from retrodraft import ConfigError, RetroDraft
from retrodraft.cost import CostModel, TreeSizer, cost_dir, model_key
from retrodraft.tree import DraftTree

VOCAB = 96


def _chain(scores):
    return DraftTree.from_paths(0, [list(range(1, len(scores) + 1))], [scores])


def test_interpolates_between_measured_sizes():
    cm = CostModel(np.array([1, 3, 9]), np.array([1.0, 2.0, 5.0]))
    assert cm.seconds_for(2) == pytest.approx(1.5)
    assert cm.relative(np.array([1, 6])) == pytest.approx([1.0, 3.5])
    assert cm.max_tokens == 9


@pytest.mark.parametrize("sizes, seconds", [([2, 4], [1, 2]), ([1, 1], [1, 2]), ([1, 2], [1, 0]), ([1], [1])])
def test_malformed_curves_are_refused(sizes, seconds):
    with pytest.raises(ConfigError):
        CostModel(np.array(sizes), np.array(seconds))


def test_initial_trust_discounts_the_drafters_until_evidence_arrives():
    cm = CostModel(np.array([1, 64]), np.array([1.0, 1.0]))
    assert TreeSizer(cm, trust=0.5).calibrated(np.array([0.9]))[0] == pytest.approx(0.4625)
    sizer = TreeSizer(cm, trust=0.5, prior=2.0)
    tree = _chain([0.9])
    for _ in range(50):
        sizer.observe(tree, np.array([0, 1]))  # always accepted
    assert sizer.calibrated(np.array([0.9]))[0] > 0.95


def test_flat_cost_verifies_every_useful_node():
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 1.0])), prior=1e6)
    assert sizer.choose(_chain([0.9, 0.8, 0.7, 0.1])) == 4


def test_steep_cost_falls_back_to_plain_decoding():
    # Each extra token costs as much as a whole pass: no guess below certainty pays.
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 64.0])), prior=1e6)
    assert sizer.choose(_chain([0.6, 0.5, 0.4])) == 0


def test_picks_the_size_with_the_best_expected_rate():
    cm = CostModel(np.array([1, 2, 3, 4]), np.array([1.0, 1.1, 1.6, 1.7]))
    sizer = TreeSizer(cm, prior=1e6)
    scores = [0.95, 0.9, 0.85]
    cal = sizer.calibrated(np.array(scores))
    rates = [(1 + cal[:n].sum()) / cm.seconds_for(n + 1) for n in range(4)]
    assert sizer.choose(_chain(scores)) == int(np.argmax(rates))


def test_calibration_learns_that_confident_drafters_were_wrong():
    # Each extra token costs half a pass: worth it at 0.9, not at what was really accepted.
    sizer = TreeSizer(CostModel(np.array([1, 64]), np.array([1.0, 32.5])), prior=2.0, trust=1.0)
    tree = _chain([0.9, 0.9, 0.9])
    before = sizer.calibrated(np.array([0.9]))[0]
    assert sizer.choose(tree) == 3
    for _ in range(50):
        sizer.observe(tree, np.array([0]))  # nothing accepted, ever
    after = sizer.calibrated(np.array([0.9]))[0]
    assert before == pytest.approx(0.925) and after < 0.05
    assert sizer.choose(tree) == 0
    assert sizer.expected_accepted(tree) == pytest.approx(1 + 3 * after)


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
    a = RetroDraft(drafters=[OracleDrafter(ref[0, 12:].tolist(), 12, VOCAB)], cost=flat)
    assert torch.equal(model.generate(ids, max_new_tokens=40, do_sample=False, assistant=a), ref)
    assert a.stats.mean_accepted > 4  # free nodes and a perfect drafter: long blocks
    steep = CostModel(np.array([1, 64]), np.array([1.0, 64.0]))
    b = RetroDraft(drafters=[RandomDrafter(VOCAB)], cost=steep)
    assert torch.equal(model.generate(ids, max_new_tokens=40, do_sample=False, assistant=b), ref)
    assert set(b.stats.tree_sizes) == {1}  # random guesses never pay at that cost


def test_cost_json_path_is_accepted(tmp_path):
    path = tmp_path / "c.json"
    CostModel(np.array([1, 2]), np.array([0.1, 0.2]), key="k").save(path)
    assert RetroDraft(cost=path).cost.seconds.tolist() == [0.1, 0.2]
