"""Greedy exactness on a real pretrained model: SmolLM2-135M-Instruct in float32.

Needs the embedded model in the cache (``retrodraft models fetch smollm2-135m``; ``make test``
does it). Skipped, with that command in the reason, when it is missing.
"""

import pytest
import torch

from retrodraft import RetroDraft
from retrodraft import models

pytestmark = pytest.mark.model

PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "def is_palindrome(s: str) -> bool:\n",
    "import numpy as np\n\ndef moving_average(x, w):\n",
    "class Stack:\n    def __init__(self):\n",
    "The capital of France is",
    "Here is a list of the planets of the solar system:\n1.",
    "Once upon a time, in a small village,",
    "Q: What is 12 times 13?\nA:",
    "def quicksort(arr):\n",
    "# Read a CSV file and print the sum of the second column\nimport csv\n",
    "The three primary colors are",
    "SELECT name, COUNT(*) FROM users",
    "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists.\"\"\"\n",
    "Translate to French: Good morning, how are you?\n",
    "for i in range(10):\n",
    "The mitochondria is",
    "def binary_search(xs, target):\n",
    "Write a haiku about the sea.\n",
    "{\"name\": \"Alice\", \"age\": 30, \"city\":",
    "To make a cup of tea, first",
    "def count_words(text):\n    counts = {}\n",
    "In 1969, the first humans",
]


@pytest.fixture(scope="module")
def smollm():
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("SmolLM2-135M is not cached: run `retrodraft models fetch smollm2-135m`")
    torch.set_num_threads(2)
    model, tok = models.load("smollm2-135m", dtype=torch.float32)
    yield model, tok
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def references(smollm):
    model, tok = smollm
    refs = []
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt").input_ids
        refs.append((ids, model.generate(ids, max_new_tokens=64, do_sample=False)))
    return refs


@pytest.mark.parametrize("drafters", [["recycling"], ["lookup"], ["stand", "aded"], None])
def test_smollm2_greedy_is_identical(smollm, references, drafters):
    model, _ = smollm
    assistant = RetroDraft(drafters=drafters)
    accepted = []
    for ids, ref in references:
        out = model.generate(ids, max_new_tokens=64, do_sample=False, assistant=assistant)
        assert torch.equal(out, ref), f"differs on prompt {ids.tolist()}"
        accepted += assistant.stats.committed
    assert sum(accepted) / len(accepted) > 1.0  # the drafts do get accepted


def test_smollm2_stop_strings_and_chat_template(smollm):
    model, tok = smollm
    msgs = [{"role": "user", "content": "List three fruits, one per line."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    kw = dict(max_new_tokens=64, do_sample=False, stop_strings=["\n"], tokenizer=tok)
    ref = model.generate(ids, **kw)
    out = model.generate(ids, assistant=RetroDraft(), **kw)
    assert torch.equal(out, ref)
