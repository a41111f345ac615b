"""A tiny random model with a real tokenizer (SmolLM2's, with its chat template) for the bench tests."""

import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from retrodraft import models


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    src = models.cached_path("smollm2-135m")
    if src is None:
        pytest.skip("needs the SmolLM2 tokenizer: run `retrodraft models fetch smollm2-135m`")
    out = tmp_path_factory.mktemp("tiny")
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja") or f.name == "generation_config.json":
            shutil.copy(f, out / f.name)
    cfg = AutoConfig.from_pretrained(src)
    cfg.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    return out
