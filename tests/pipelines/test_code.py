import pytest
import torch

from retrodraft import models
from retrodraft.pipelines.code import build_code_index, code_assistant, stdlib_path


def test_stdlib_is_on_disk():
    assert (stdlib_path() / "os.py").is_file()


def test_completion_drafting_from_an_indexed_code_base_is_exact(tmp_path):
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("run `retrodraft models fetch smollm2-135m`")
    src = tmp_path / "repo"
    src.mkdir()
    for name in ("bisect.py", "heapq.py", "textwrap.py"):
        (src / name).write_text((stdlib_path() / name).read_text())
    (src / "test").mkdir()
    (src / "test" / "test_x.py").write_text("excluded = True\n")
    h = build_code_index("smollm2-135m", tmp_path / "idx", sources=[str(src)], progress=False, workers=1)
    assert h["stats"]["files"] == 3  # tests excluded
    model, tok = models.load("smollm2-135m")
    stub = 'def insort_right(a, x, lo=0, hi=None, *, key=None):\n    """Insert item x in list a, and keep it sorted'
    ids = tok(stub, return_tensors="pt").input_ids
    ref = model.generate(ids, max_new_tokens=48, do_sample=False)
    a = code_assistant(tmp_path / "idx")
    assert torch.equal(model.generate(ids, max_new_tokens=48, do_sample=False, assistant=a), ref)
    assert a.stats.mean_accepted > 1.5
