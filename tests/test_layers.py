"""Imports only go down: the import-linter contracts of pyproject.toml hold, and they have teeth."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports; raise SystemExit(lint_imports(no_cache=True, no_logo=True))"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on the package under ``root`` with ``root``'s pyproject.toml."""
    env = {"PYTHONPATH": str(root), "PATH": "", "HOME": str(root)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layers_are_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "retrodraft", tmp_path / "retrodraft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    tree = tmp_path / "retrodraft" / "tree.py"
    tree.write_text(tree.read_text() + "\nfrom .assistant import RetroDraft  # core reaching up\n")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout
    assert "retrodraft.tree -> retrodraft.assistant" in r.stdout


def test_a_drafter_importing_another_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "retrodraft", tmp_path / "retrodraft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    history = tmp_path / "retrodraft" / "drafters" / "history.py"
    history.write_text(history.read_text() + "\nfrom .lookup import PromptLookup  # one drafter using another\n")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout
    assert "retrodraft.drafters.history -> retrodraft.drafters.lookup" in r.stdout
