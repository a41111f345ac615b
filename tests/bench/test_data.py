"""The benchmark suites ship as package data: a wheel holds every suite file, and an installed
(non-editable) copy of retrodraft loads its suites from its own folder, not from a checkout."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retrodraft.bench.data import DataError, data_dir, load_suite

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "retrodraft" / "bench" / "suites"
#: One data file per suite that ``load_suite`` reads (the make-scripts and licences travel too).
NEEDED = ("spec_bench/question.jsonl", "humaneval/HumanEval.jsonl.gz", "squad/questions.jsonl",
          "refactor/items.jsonl", "json/requests.jsonl", "json/schema.json", "agent/episodes.jsonl")


def test_suites_live_in_the_package():
    assert Path(str(data_dir())) == SUITES
    for name in NEEDED:
        assert (SUITES / name).is_file(), name


def test_a_missing_override_folder_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_BENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="RETRODRAFT_BENCH_DATA"):
        load_suite(["humaneval"], 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a fresh copy of the sources: a stale *.egg-info in the checkout would list the data
    # files by itself and hide a missing package-data declaration.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "retrodraft", src / "retrodraft", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(out)], check=True, cwd=src)
    (whl,) = out.glob("retrodraft-*.whl")
    return whl


def test_the_wheel_holds_every_suite_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in SUITES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped >= {f"retrodraft/bench/suites/{n}" for n in NEEDED}
    assert shipped <= names, sorted(shipped - names)


def test_an_installed_wheel_loads_its_suites_from_its_own_folder(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what `pip install --target` lays out for a pure wheel
    code = ("import json, retrodraft; from retrodraft.bench.data import data_dir, load_suite; "
            "ps = load_suite(['spec-bench', 'humaneval', 'squad-rag', 'refactor', 'json', 'agent'], 1, requests=2); "
            "print(json.dumps({'package': retrodraft.__file__, 'data': str(data_dir()), "
            "'suites': sorted({p.category for p in ps})}))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("RETRODRAFT_BENCH_DATA", None)
    proc = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(target)), got
    assert got["data"] == str(target / "retrodraft" / "bench" / "suites")
    assert got["suites"] == sorted(["multi-turn", "translation", "summarization", "qa", "math_reasoning", "rag",
                                    "humaneval", "squad-rag", "refactor", "json", "agent"])
