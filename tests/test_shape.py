import json

import numpy as np
import pytest
import torch

from helpers import tiny_model
from retrodraft import RetroDraft
from retrodraft.bench.data import Prompt
from retrodraft.errors import ConfigError
from retrodraft.calibrate import calibrate, calibration_template
from retrodraft.shape import TreeShape


def test_calibration_template_is_connected_and_reaches_the_depth():
    t = calibration_template(625, 20)
    assert len(t) == 625 and max(map(len, t)) == 20
    seen = set()
    for p in t:
        assert len(p) == 1 or p[:-1] in seen
        seen.add(p)


def test_from_counts_keeps_the_most_accepted_connected_positions():
    paths = [(0,), (1,), (0, 0), (0, 1), (0, 0, 0)]
    hits = np.array([10, 8, 1, 6, 0, 5])  # root, then per path
    shape = TreeShape.from_counts(paths, hits, steps=10, budget=3)
    assert shape.paths == [(0,), (0, 0), (0, 0, 0)]
    assert shape.rates == [0.8, 0.6, 0.5]
    assert shape.expected_accepted == pytest.approx(2.9)


def test_save_load_roundtrip_and_bad_files(tmp_path):
    s = TreeShape([(0,), (1,), (0, 0)], [0.5, 0.1, 0.3], {"command": "x"})
    path = s.save(tmp_path / "mine.json")
    assert TreeShape.load(path).paths == s.paths
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "retrodraft-tree-shape/1", "paths": [[0, 0]]}))
    with pytest.raises(ConfigError, match="not a valid tree shape"):
        TreeShape.load(bad)
    with pytest.raises(ConfigError, match="no tree shape 'nope'"):
        TreeShape.load("nope")


def test_shipped_presets_load_and_carry_their_command():
    for name in ("cpu-float32", "cpu-bfloat16", "gpu"):
        shape = TreeShape.load(name)
        assert shape.size >= 1 and shape.meta["command"].startswith("retrodraft calibrate")


def test_calibrate_on_a_tiny_model_and_draft_with_the_shape():
    model = tiny_model("llama")
    prompts = [Prompt(id=str(i), category="x", turns=[""], chat=False) for i in range(2)]

    class Tok:  # the calibrate loop only needs encoding of raw prompts
        pad_token_id, eos_token_id = 0, 0

        def __call__(self, text, return_tensors):
            class E:
                input_ids = torch.tensor([[11, 12, 13, 14, 11, 12, 13, 14, 11, 12]])
            return E()

    shapes = calibrate(model, Tok(), prompts, {"small": 4, "big": 12}, max_new_tokens=24, nodes=60, max_depth=8,
                       progress=False)
    assert shapes["small"].size == 4 and shapes["big"].size == 12
    assert shapes["big"].meta["steps"] > 0 and shapes["big"].rates[0] > 0
    ids = torch.tensor([[11, 12, 13, 14, 11, 12, 13, 14, 11, 12]])
    ref = model.generate(ids, max_new_tokens=30, do_sample=False)
    a = RetroDraft(drafters=["stand", "recycling"], shape=shapes["big"], budget=12)
    assert torch.equal(model.generate(ids, max_new_tokens=30, do_sample=False, assistant=a), ref)


def test_a_shape_needs_a_drafter_that_fills_one():
    with pytest.raises(ConfigError, match="fill a shape"):
        RetroDraft(drafters=["lookup"], shape=TreeShape([(0,)]))

