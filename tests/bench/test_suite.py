"""The benchmark suite end to end on a tiny random model with a real tokenizer, 2 prompts per category."""

import json

import pytest
import torch

from retrodraft.bench import bench
from retrodraft.bench.data import SPEC_BENCH_CATEGORIES, humaneval, spec_bench
from retrodraft.bench.report import summarize, write_report
from retrodraft.cli import main


def test_spec_bench_has_every_category_and_both_turns():
    ps = spec_bench(2)
    assert [p.category for p in ps] == [c for c in SPEC_BENCH_CATEGORIES for _ in range(2)]
    assert all(len(p.turns) == 2 for p in ps if p.category == "multi-turn")
    assert {p.meta["source_category"] for p in spec_bench(8, ("multi-turn",))} == {
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def test_humaneval_is_a_completion_of_the_stub():
    (p,) = humaneval(1)
    assert not p.chat and "def " in p.turns[0] and p.id == "humaneval/HumanEval/0"


def test_bench_writes_every_file_and_field(tiny_folder, tmp_path):
    out = tmp_path / "run"
    report = bench(str(tiny_folder), suites=["spec-bench", "humaneval"], per_category=2, humaneval_n=2,
                   methods=["greedy", "pld", "retrodraft:lookup", "retrodraft:default@4"], max_new_tokens=12,
                   out=out, progress=False, command="test")
    assert report == out / "report.md"
    for f in ("results.json", "report.md", "speedup.png", "mat.png", "time_split.png"):
        assert (out / f).stat().st_size > 0, f
    res = json.loads((out / "results.json").read_text())
    for key in ("command", "cpu", "threads", "torch", "transformers", "dtype", "git_commit", "model"):
        assert key in res["environment"]
    n_prompts = 2 * len(SPEC_BENCH_CATEGORIES) + 2
    assert len(res["records"]) == n_prompts * 4
    assert all(t["peak_mem_mb"] >= 0 for r in res["records"] for t in r["turns"])
    rows = summarize(res)
    cats = {r["category"] for r in rows}
    assert cats == set(SPEC_BENCH_CATEGORIES) | {"humaneval", "all"}
    # ratios come from the raw timings
    for r in rows:
        if r["method"] == "retrodraft:lookup" and r["category"] == "qa":
            recs = [x for x in res["records"] if x["category"] == "qa"]
            tps = lambda m: sum(t["new_tokens"] for x in recs if x["method"] == m for t in x["turns"]) / sum(
                t["wall_s"] for x in recs if x["method"] == m for t in x["turns"])
            assert r["speedup"] == pytest.approx(tps("retrodraft:lookup") / tps("greedy"))
            assert r["mat"] >= 1.0
    # float32 retrodraft is exact
    assert all(r["exact"] == 1.0 for r in rows if r["method"].startswith("retrodraft"))


def test_a_method_that_differs_from_greedy_is_flagged(tiny_folder, tmp_path):
    out = tmp_path / "run"
    bench(str(tiny_folder), suites=["qa"], per_category=2, methods=["greedy", "retrodraft:lookup"],
          max_new_tokens=6, out=out, progress=False, plots=False, command="test")
    res = json.loads((out / "results.json").read_text())
    for rec in res["records"]:
        if rec["method"] == "retrodraft:lookup":
            rec["turns"][0]["tokens"][0] += 1
    text = write_report(res, out, plots=False).read_text()
    assert "Output differs from greedy** for: retrodraft:lookup" in text


def test_cli_bench_bad_method_is_a_clean_error(tiny_folder, tmp_path, capsys):
    code = main(["bench", "--model", str(tiny_folder), "--suite", "qa", "--per-category", "1",
                 "--methods", "greedy,medusa", "--out", str(tmp_path / "x"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown method 'medusa'" in err and "Traceback" not in err


def test_sweep_adds_budget_methods_and_a_curve(tiny_folder, tmp_path):
    out = tmp_path / "sweep"
    bench(str(tiny_folder), suites=["humaneval"], per_category=2, methods=["greedy"], sweep=[2, 8],
          max_new_tokens=8, out=out, progress=False, command="test")
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["methods"] == ["greedy", "retrodraft:default@2", "retrodraft:default@8"]
    assert (out / "sweep.png").stat().st_size > 0
    trees = {r["method"]: max(max(t["stats"]["tree_sizes"]) for t in r["turns"]) for r in res["records"] if r["method"] != "greedy"}
    assert trees["retrodraft:default@2"] <= 3 and trees["retrodraft:default@8"] <= 9


def test_peak_memory_sees_an_allocation_inside_the_call():
    import numpy as np
    from retrodraft.bench.runner import PeakMemory

    with PeakMemory(torch.device("cpu"), interval=0.001) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        import time
        time.sleep(0.05)
        del block
    assert mem.peak_mb > 40
    with PeakMemory(torch.device("cpu"), interval=0.001) as idle:
        pass
    assert idle.peak_mb < 40
