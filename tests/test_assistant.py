import numpy as np
import pytest
import torch

from helpers import RandomDrafter, tiny_model
from retrodraft import ConfigError, RetroDraft
from retrodraft.assistant import AUTO_MAX_NODES, BUDGET_PRESETS, MAX_BUDGET
from retrodraft.tree import DraftTree


@pytest.mark.parametrize("budget", [-1, MAX_BUDGET + 1, 2.5, "big", True])
def test_out_of_range_budgets_are_refused(budget):
    with pytest.raises(ConfigError, match="budget must be"):
        RetroDraft(budget=budget)


def test_unknown_drafter_names_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown drafter 'medusa'.*lookup.*recycling"):
        RetroDraft(drafters=["medusa"])


def test_no_drafters_is_refused():
    with pytest.raises(ConfigError, match="at least one drafter"):
        RetroDraft(drafters=[])


def test_default_is_recycling_plus_lookup_with_auto_budget():
    a = RetroDraft()
    assert [d.name for d in a.drafters] == ["recycling", "lookup"]
    assert a.budget == "auto" and a.budget_for(tiny_model("llama")) == AUTO_MAX_NODES


def test_preset_budget_follows_device_and_dtype():
    a = RetroDraft(budget="preset")
    assert a.budget_for(tiny_model("llama")) == BUDGET_PRESETS["cpu-float32"]
    assert a.budget_for(tiny_model("llama", dtype=torch.bfloat16)) == BUDGET_PRESETS["cpu-bfloat16"]


@pytest.mark.parametrize("max_nodes", [0, MAX_BUDGET + 1, 3.0, True])
def test_out_of_range_max_nodes_are_refused(max_nodes):
    with pytest.raises(ConfigError, match="max_nodes must be"):
        RetroDraft(max_nodes=max_nodes)


class Fixed(RandomDrafter):
    def __init__(self, paths, scores):
        self.paths_, self.scores_ = paths, scores

    def propose(self, context, budget):
        return DraftTree.from_paths(int(context[-1]), self.paths_, self.scores_)


def test_draft_fuses_drafters_and_keeps_the_best_within_budget():
    a = RetroDraft(drafters=[Fixed([[1, 2, 3]], [[0.9, 0.8, 0.2]]), Fixed([[1, 4], [5]], [[0.7, 0.6], [0.5]])], budget=4)
    tree = a.draft(np.array([9, 0]), budget=4)
    assert tree.root == 0
    assert sorted(tree.paths()) == [[1, 2], [1, 4], [5]]


def test_draft_respects_max_depth():
    a = RetroDraft(drafters=[Fixed([[1, 2, 3]], [[0.9, 0.8, 0.7]])], budget=10)
    assert a.draft(np.array([0]), 10, max_depth=2).paths() == [[1, 2]]
    assert len(a.draft(np.array([0]), 10, max_depth=0)) == 1
