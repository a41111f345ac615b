"""What a benchmark method such as ``retrodraft:default`` meant at the git commit a run recorded.

``retrodraft:default`` is ``RetroDraft()``, whose drafters and tree sizing changed over the
project's history (recycling + lookup with per-device fixed trees, then with cost-model sizing,
then history + recycling + lookup). A run's ``results.json`` stores the method key and the git
commit, so the set is read from ``retrodraft/assistant.py`` *at that commit* (``git show``, parsed
with :mod:`ast`, never imported): ``DEFAULT_DRAFTERS``, ``RetroDraft.__init__``'s defaults for
``budget`` / ``sizing``, and the constants they refer to. Today's default comes from a live
``RetroDraft()``.
"""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Config:
    """A retrodraft method as run: its drafters and how a step's tree was sized.

    ``sizing`` is ``"auto"`` (cost model, at most ``budget`` nodes), ``"fixed"`` (``budget``
    nodes) or ``"preset"`` (a fixed per-device node count, ``budget`` for the run's device).
    """

    drafters: tuple[str, ...]
    sizing: str
    budget: int | None

    def describe(self) -> str:
        size = {"auto": f"cost-model sizing, at most {self.budget} nodes",
                "fixed": f"fixed {self.budget}-node trees",
                "preset": f"fixed {self.budget}-node trees (the per-device preset)"}[self.sizing]
        return f"{' + '.join(self.drafters)}, {size}"


@dataclass(frozen=True)
class Defaults:
    """``RetroDraft()``'s defaults in one version of the code."""

    drafters: tuple[str, ...]
    budget_default: object  # the ``budget`` parameter's default: "auto", an int, or None
    has_sizing: bool  # the version had a ``sizing`` parameter
    sizing_default: str | None  # its default (None: "auto" unless ``budget`` is given)
    auto_cap: int | None  # the node cap of cost-model sizing, where the version had one
    presets: dict

    def config(self, dtype: str, device: str = "cpu") -> Config:
        """``RetroDraft()`` on a model of this dtype and device."""
        if self.has_sizing:
            if isinstance(self.budget_default, int):  # a version where ``budget`` alone meant fixed trees
                return Config(self.drafters, self.sizing_default or "fixed", self.budget_default)
            return Config(self.drafters, self.sizing_default or "auto", self.auto_cap)
        if self.budget_default == "auto" and self.auto_cap is not None:
            return Config(self.drafters, "auto", self.auto_cap)
        if self.budget_default == "auto":
            key = "gpu" if device != "cpu" else "cpu-bfloat16" if dtype in ("bfloat16", "float16") else "cpu-float32"
            return Config(self.drafters, "preset", self.presets.get(key))
        return Config(self.drafters, "fixed", int(self.budget_default))


def _literal(tree: ast.Module, name: str):
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def _value(node: ast.expr, tree: ast.Module):
    """A default argument's value: a literal, or a module-level constant it names."""
    if isinstance(node, ast.Name):
        return _literal(tree, node.id)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def parse_defaults(source: str) -> Defaults:
    """Read ``RetroDraft()``'s defaults from the text of a version of ``retrodraft/assistant.py``
    (plus, appended, any module it takes its constants from)."""
    tree = ast.parse(source)
    params: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "RetroDraft":
            init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
            args = init.args.args[len(init.args.args) - len(init.args.defaults):] + init.args.kwonlyargs
            defaults = init.args.defaults + init.args.kw_defaults
            for a, d in zip(args, defaults):
                if d is not None:
                    params[a.arg] = _value(d, tree)
    drafters = _literal(tree, "DEFAULT_DRAFTERS")
    if drafters is None:
        raise ValueError("no literal DEFAULT_DRAFTERS in this version of retrodraft/assistant.py")
    return Defaults(tuple(drafters), params.get("budget"), "sizing" in params, params.get("sizing"),
                    _auto_cap(tree), _literal(tree, "BUDGET_PRESETS") or {})


def _auto_cap(tree: ast.Module) -> int | None:
    """The node cap of cost-model sizing: ``DEFAULT_BUDGET``, called ``AUTO_MAX_NODES`` before."""
    cap = _literal(tree, "DEFAULT_BUDGET")
    return cap if cap is not None else _literal(tree, "AUTO_MAX_NODES")


@lru_cache(maxsize=None)
def defaults_at(commit: str) -> Defaults | None:
    """``RetroDraft()``'s defaults at ``commit``; None where this checkout lacks the commit (a
    shallow clone) or the file cannot be read."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
                              capture_output=True, text=True, check=True).stdout

    try:
        src = show("retrodraft/assistant.py")
        if not re.search(r"^DEFAULT_DRAFTERS\b", src, flags=re.M):
            # The constants moved to another module: append every module of that commit defining them.
            found = subprocess.run(["git", "-C", str(ROOT), "grep", "-l", "-E", r"^DEFAULT_DRAFTERS\b", commit, "--",
                                    "retrodraft"], capture_output=True, text=True).stdout.split()
            src += "".join("\n" + show(f.split(":", 1)[1]) for f in found)
        return parse_defaults(src)
    except (OSError, subprocess.CalledProcessError, ValueError, StopIteration, SyntaxError):
        return None


def today() -> Config:
    """``RetroDraft()`` as the working tree builds it."""
    from retrodraft import RetroDraft

    a = RetroDraft()
    return Config(tuple(d.name for d in a.drafters), a.sizing, a.budget)


def method_config(method: str, defaults: Defaults | None, dtype: str, device: str = "cpu") -> Config | None:
    """The drafters and sizing of a ``retrodraft:SPEC[@N|@autoN]`` method key at a version whose
    defaults are ``defaults``; None for other methods or where the defaults are unknown."""
    if not method.startswith("retrodraft") or defaults is None:
        return None
    spec = method.partition(":")[2] or "default"
    spec, _, budget = spec.partition("@")
    base = defaults.config(dtype, device)
    drafters = base.drafters if spec == "default" else tuple(spec.split("+"))
    if budget.startswith("auto"):
        return Config(drafters, "auto", int(budget[4:]) if budget[4:] else base.budget)
    if budget:
        return Config(drafters, "fixed", int(budget))
    return Config(drafters, base.sizing, base.budget)
