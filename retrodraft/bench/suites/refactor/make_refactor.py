"""Make the ``refactor`` benchmark set: real standard-library functions, each to be returned whole
with one stated small change.

    python retrodraft/bench/suites/refactor/make_refactor.py [--n 16]

For each module of ``MODULES`` in turn (the Python standard library of the interpreter that runs
this script: PSF-licensed, see ``LICENSE``), the first public function or method of 25-60 lines
that suits the next edit kind is taken, dedented, and paired with an instruction. The kinds
cycle: rename an identifier, add a parameter, add type hints, add a logging line. Where the
change is mechanical (rename, parameter, logging line) the script applies it too and stores the
expected answer; type hints have none. Writes ``items.jsonl`` next to this file.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import sys
import sysconfig
import textwrap
import tokenize
from pathlib import Path

MODULES = [
    "textwrap.py", "shlex.py", "difflib.py", "argparse.py", "configparser.py", "glob.py", "posixpath.py",
    "json/encoder.py", "statistics.py", "fractions.py", "ipaddress.py", "email/utils.py", "urllib/parse.py",
    "gettext.py", "pprint.py", "tokenize.py", "smtplib.py", "zipfile.py", "mimetypes.py", "shutil.py",
    "tempfile.py", "base64.py",
]
KINDS = ("rename", "add_parameter", "type_hints", "logging")
MIN_LINES, MAX_LINES = 25, 60
#: Better names for common short or vague identifiers; others get a ``_value`` suffix.
RENAMES = {
    "s": "text", "i": "index", "j": "inner", "n": "count", "c": "char", "x": "value", "k": "key", "v": "val",
    "d": "divisor", "l": "items", "p": "part", "f": "fileobj", "fp": "file_obj", "a": "first", "b": "second",
    "res": "result", "result": "outcome", "buf": "buffer", "line": "current_line", "lines": "all_lines",
    "name": "item_name", "filename": "file_name", "path": "target_path", "text": "source_text", "value": "raw_value", "data": "payload",
    "parts": "pieces", "args": "arguments", "chunks": "pieces", "key": "lookup_key", "msg": "message",
    "size": "byte_size", "start": "begin", "end": "stop", "pos": "position", "idx": "position",
    "token": "current_token", "tokens": "token_list", "indent": "indentation", "width": "max_width",
}
NEW_PARAMS = ("strict=False", "timeout=None", "verbose=False", "limit=None")
PROMPT = ("{instruction} Return the whole function with the change applied, in one ```python block, "
          "and nothing else.\n\n```python\n{code}```")


def functions(tree: ast.AST) -> list[ast.FunctionDef]:
    """Public functions and methods of 25-60 lines, in source order."""
    out = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
           and MIN_LINES <= n.end_lineno - n.lineno + 1 <= MAX_LINES]
    return sorted(out, key=lambda n: n.lineno)


def source_of(lines: list[str], fn: ast.FunctionDef) -> str:
    start = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    return textwrap.dedent("".join(lines[start - 1 : fn.end_lineno]))


def name_tokens(code: str) -> list[tokenize.TokenInfo]:
    """NAME tokens that are plain identifiers (not attributes after a dot)."""
    toks = list(tokenize.generate_tokens(io.StringIO(code).readline))
    return [t for i, t in enumerate(toks) if t.type == tokenize.NAME and not (i and toks[i - 1].string == ".")]


def params(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]


def edit_rename(code: str, fn: ast.FunctionDef) -> tuple[str, str] | None:
    tree = ast.parse(code).body[0]
    kw_names = {k.arg for k in ast.walk(tree) if isinstance(k, ast.keyword)}
    in_fstrings = {n.id for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for n in ast.walk(j)
                   if isinstance(n, ast.Name)}
    scoped = {x for n in ast.walk(tree) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
    nested = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda, ast.ClassDef)) and n is not tree]
    local = set(params(tree)) | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    toks = name_tokens(code)
    used = {t.string for t in toks}
    counts = {name: sum(t.string == name for t in toks) for name in local}
    cands = [n for n in local if n not in kw_names | in_fstrings | scoped and counts[n] >= 3 and not nested
             and n not in ("self", "cls") and (RENAMES.get(n) or f"{n}_value") not in used]
    if not cands:
        return None
    old = max(cands, key=lambda n: (n in RENAMES, counts[n], n))
    new = RENAMES.get(old) or f"{old}_value"
    lines = code.splitlines(keepends=True)
    for t in sorted((t for t in toks if t.string == old), key=lambda t: t.start, reverse=True):
        r, c = t.start
        lines[r - 1] = lines[r - 1][:c] + new + lines[r - 1][c + len(old):]
    kind = "parameter" if old in params(tree) else "variable"
    return f"In the function `{fn.name}` below, rename the {kind} `{old}` to `{new}` everywhere it is used.", "".join(lines)


_DEF = re.compile(r"^(def \w+\()(.*)(\)(\s*->\s*[^:]+)?:\s*)$")


def edit_add_parameter(code: str, fn: ast.FunctionDef, which: int) -> tuple[str, str] | None:
    a = fn.args
    if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or fn.decorator_list:
        return None
    first, rest = code.split("\n", 1)
    m = _DEF.match(first)
    if not m:
        return None
    used = {t.string for t in name_tokens(code)}
    for k in range(len(NEW_PARAMS)):
        new = NEW_PARAMS[(which + k) % len(NEW_PARAMS)]
        if new.split("=")[0] not in used:
            break
    else:
        return None
    args = m.group(2).strip()
    first = f"{m.group(1)}{args + ', ' if args else ''}{new}{m.group(3)}"
    instruction = (f"Add a new last parameter `{new}` to the function `{fn.name}` below (with that default, so "
                   f"existing callers keep working); do not use it yet and change nothing else.")
    return instruction, first + "\n" + rest


def edit_type_hints(code: str, fn: ast.FunctionDef) -> tuple[str, None] | None:
    a = fn.args
    every = a.posonlyargs + a.args + a.kwonlyargs
    if len(params(fn)) < 2 or any(x.annotation for x in every) or fn.returns:
        return None
    return (f"Add type hints to every parameter and to the return value of the function `{fn.name}` below; "
            f"change nothing else."), None


def edit_logging(code: str, fn: ast.FunctionDef) -> tuple[str, str] | None:
    tree = ast.parse(code).body[0]
    body = tree.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)
    after = body[0].end_lineno if has_doc else body[0].lineno - 1
    nxt = body[1] if has_doc and len(body) > 1 else body[0]
    if nxt.lineno == tree.lineno or (has_doc and len(body) < 2):
        return None
    names = params(tree)[:4]
    fmt = ", ".join(f"{p}=%r" for p in names)
    line = f'logger.debug("{fn.name}({fmt})"' + "".join(f", {p}" for p in names) + ")"
    indent = " " * nxt.col_offset
    lines = code.splitlines(keepends=True)
    lines.insert(after, indent + line + "\n")
    instruction = (f"Add this logging line as the first statement of the function `{fn.name}` below (after its "
                   f"docstring, if any), using the module's existing `logger`: `{line}`. Change nothing else.")
    return instruction, "".join(lines)


def make_item(kind: str, code: str, fn: ast.FunctionDef, slot: int):
    if kind == "rename":
        return edit_rename(code, fn)
    if kind == "add_parameter":
        return edit_add_parameter(code, fn, slot)
    if kind == "type_hints":
        return edit_type_hints(code, fn)
    return edit_logging(code, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    std = Path(sysconfig.get_paths()["stdlib"])
    items: list[dict] = []
    for module in MODULES:
        if len(items) == args.n:
            break
        kind = KINDS[len(items) % len(KINDS)]
        text = (std / module).read_text()
        lines = text.splitlines(keepends=True)
        for fn in functions(ast.parse(text)):
            code = source_of(lines, fn)
            made = make_item(kind, code, fn, len(items) // len(KINDS))
            if made is None:
                continue
            instruction, expected = made
            if expected is not None:
                ast.parse(expected)  # the edited function still parses
            items.append({
                "id": f"{module.removesuffix('.py')}:{fn.name}@{fn.lineno}",
                "kind": kind, "source": f"Lib/{module}", "python": sys.version.split()[0],
                "lines": code.count("\n"), "instruction": instruction, "code": code,
                "prompt": PROMPT.format(instruction=instruction, code=code), "expected": expected,
            })
            break
    out = Path(__file__).with_name("items.jsonl")
    with out.open("w") as f:
        for it in items:
            f.write(json.dumps(it) + "\n")
    print(f"wrote {len(items)} items to {out}: " + ", ".join(f"{i['id']} ({i['kind']})" for i in items))


if __name__ == "__main__":
    main()
