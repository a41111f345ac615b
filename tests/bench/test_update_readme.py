"""benchmarks/update_readme.py: it runs on the committed results, gives every run folder a heading,
reads what ``default`` meant from the code at each run's commit, and the committed
benchmarks/README.md and README results table are what it generates (never hand-edited)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import update_readme  # noqa: E402
from _defaults import Config, defaults_at, method_config, parse_defaults  # noqa: E402

RUNS = sorted(p for p in (ROOT / "benchmarks" / "results").iterdir() if p.is_dir() and p.name != "latest")


def _commits() -> set[str]:
    return {update_readme.load_run(r)["environment"]["git_commit"] for r in RUNS if update_readme.load_run(r)}


def _have_history() -> bool:
    return all(subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{c}^{{commit}}"],
                              capture_output=True).returncode == 0 for c in _commits())


def test_every_run_folder_gets_a_heading_with_its_command():
    text = update_readme.benchmarks_readme()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    for run in RUNS:
        assert headings.count(run.name) == 1, run.name
        res = update_readme.load_run(run)
        if res is not None:
            assert res["environment"]["command"] in text
            assert f"results/{run.name}/report.md" in text
        else:  # a stand-alone measurement: every command its JSON files store is shown
            for f in run.glob("*.json"):
                for cmd in update_readme._commands(json.loads(f.read_text()), []):
                    assert cmd in text, (run.name, cmd)


def test_other_folders_without_stored_commands_point_to_their_readme(tmp_path):
    (tmp_path / "benchmarks" / "results" / "x").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x" / "curve.json").write_text('{"seconds": [1.0]}')
    text = update_readme.benchmarks_readme(tmp_path)
    assert "## x" in text and "no command stored" in text


@pytest.mark.skipif(not _have_history(), reason="a shallow clone lacks the commits the runs recorded")
def test_default_is_read_from_the_runs_commit():
    text = update_readme.benchmarks_readme()
    # A run made before history joined the default set says so, and today's default is different.
    section = text.split("## qwen2.5-coder-1.5b-bf16-humaneval-history\n", 1)[1].split("\n## ", 1)[0]
    assert "- `retrodraft:default`: recycling + lookup, cost-model sizing, at most 32 nodes" in section
    assert "- `retrodraft:history+recycling+lookup`: history + recycling + lookup" in section
    assert "unknown" not in text


@pytest.mark.skipif(not _have_history(), reason="a shallow clone lacks the commits the runs recorded")
def test_committed_files_are_what_the_generator_writes():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "update_readme.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_current_selection_names_existing_runs_and_methods():
    sel = json.loads((ROOT / "benchmarks" / "current.json").read_text())
    for w in sel["workloads"]:
        res = update_readme.load_run(ROOT / "benchmarks" / "results" / w["run"])
        assert res is not None, w["run"]
        cats = {r["category"] for r in res["records"]} | {"all"}
        assert w["category"] in cats, w
        for key in ("default", "pld", "suffix"):
            assert w[key] is None or w[key] in res["config"]["methods"], (w["run"], w[key])
    table = update_readme.current_table()
    assert table.count("\n| ") == len(sel["workloads"]) + 1  # header + one row per workload


def test_parse_defaults_resolves_each_era_of_the_code():
    preset_era = '''
BUDGET_PRESETS = {"cpu-float32": 8, "cpu-bfloat16": 24, "gpu": 64}
DEFAULT_DRAFTERS: tuple[str, ...] = ("recycling", "lookup")
class RetroDraft:
    def __init__(self, drafters=None, budget="auto"): ...
'''
    sizing_era = '''
DEFAULT_DRAFTERS = ("history", "recycling", "lookup")
AUTO_MAX_NODES = 32
class RetroDraft:
    def __init__(self, drafters=None, budget=None, *, trace=False, sizing=None): ...
'''
    old, new = parse_defaults(preset_era), parse_defaults(sizing_era)
    assert old.config("bfloat16") == Config(("recycling", "lookup"), "preset", 24)
    assert old.config("float32") == Config(("recycling", "lookup"), "preset", 8)
    assert new.config("bfloat16") == Config(("history", "recycling", "lookup"), "auto", 32)
    assert method_config("retrodraft:default@8", new, "float32") == Config(("history", "recycling", "lookup"), "fixed", 8)
    assert method_config("retrodraft:lookup@auto64", new, "float32") == Config(("lookup",), "auto", 64)
    assert method_config("pld", new, "float32") is None
    assert defaults_at("0" * 40) is None
    named = 'DEFAULT_DRAFTERS = ("history",)\nDEFAULT_BUDGET = 32\nclass RetroDraft:\n' \
            '    def __init__(self, drafters=None, budget=DEFAULT_BUDGET, sizing="auto"): ...\n'
    assert parse_defaults(named).config("float32") == Config(("history",), "auto", 32)
    budget_era = 'DEFAULT_DRAFTERS = ("history", "lookup")\nDEFAULT_BUDGET = 24\nclass RetroDraft:\n' \
                 '    def __init__(self, drafters=None, budget=None, *, trace=False, sizing=None): ...\n'
    assert parse_defaults(budget_era).config("float32") == Config(("history", "lookup"), "auto", 24)
