"""Make the ``agent`` benchmark set: scripted tool-use episodes whose turns repeat earlier content.

    python retrodraft/bench/suites/agent/make_agent.py

Three episodes in the shape of SWE-bench and text-to-SQL agent traces: a system prompt listing the
tools, a task, then turns of ``Thought`` / ``Action`` (the agent) and ``Observation`` (the tool).
The agent's turns are written here; every observation is real output of the tool run by this
script:

- ``swe-textproc``: fix two bugs in a copy of the standard library's ``textwrap.dedent`` and
  ``textwrap.indent`` (PSF-licensed, ``../refactor/LICENSE``) with two bugs put in: read the
  file, run the tests (run for real on the buggy file), rewrite the whole file twice (tests rerun
  after each write), finish.
- ``sql-top-customers`` and ``sql-category-revenue``: text-to-SQL on an SQLite database made
  here from a fixed seed: list tables, describe them, run a query that fails (the real SQLite
  error), run the corrected query (the real rows), answer. The second episode asks another
  question of the same database, as an agent serving many users would.

Each agent turn becomes one benchmark request whose prompt is the conversation before it (see
``retrodraft.bench.data.agent``). Writes ``episodes.jsonl`` next to this file.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sysconfig
from pathlib import Path

SYSTEM = """You are a software agent working in a sandbox. Work step by step. Every reply has a short \
`Thought:` line and then exactly one `Action:`, in one of these forms:

Action: read_file PATH
Action: write_file PATH
```python
<the complete new content of the file>
```
Action: run_tests
Action: list_tables
Action: describe_tables NAME, NAME, ...
Action: run_sql
```sql
<one SQLite query>
```
Action: finish
<your final answer for the user>

After each action you get an `Observation:` with the tool's output. write_file replaces the whole file \
and reruns the tests."""


# ---------------------------------------------------------------- SWE-style episode
def textproc_source() -> str:
    """``textwrap``'s dedent and indent with their regexes, as a module of their own."""
    src = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    body = src[src.index("_whitespace_only_re = ") : src.index('\n\nif __name__ == "__main__":')]
    return ('"""dedent and indent, copied from CPython\'s Lib/textwrap.py (PSF License)."""\n\nimport re\n\n'
            + body + "\n")


BUG_INDENT = ("            return line.strip()\n", "            return line\n")
BUG_DEDENT = ("        text = re.sub(r'(?m)^' + margin, '', text)\n", "        text = re.sub(r'^' + margin, '', text)\n")

TESTS = {
    "test_dedent_common_margin": ("dedent('    a = 1\\n    b = 2\\n')", "a = 1\nb = 2\n"),
    "test_dedent_keeps_blank_lines": ("dedent('  x\\n\\n  y')", "x\n\ny"),
    "test_indent_prefixes_lines": ("indent('a\\nb\\n', '> ')", "> a\n> b\n"),
    "test_indent_skips_whitespace_lines": ("indent('a\\n  \\nb\\n', '> ')", "> a\n  \n> b\n"),
}


def run_tests(source: str) -> str:
    """Run ``TESTS`` against ``source`` and report like pytest's short summary."""
    ns: dict = {}
    exec(compile(source, "textproc.py", "exec"), ns)
    lines, failed = [f"collected {len(TESTS)} items", ""], []
    for name, (expr, want) in TESTS.items():
        got = eval(expr, ns)
        ok = got == want
        lines.append(f"test_textproc.py::{name} {'PASSED' if ok else 'FAILED'}")
        if not ok:
            failed.append(f"FAILED test_textproc.py::{name} - AssertionError: assert {got!r} == {want!r}\n"
                          f"    where {got!r} = {expr}")
    lines.append("")
    lines += failed
    passed = len(TESTS) - len(failed)
    lines.append(f"{len(failed)} failed, {passed} passed" if failed else f"{passed} passed")
    return "\n".join(lines)


def swe_episode() -> dict:
    good = textproc_source()
    for old, _ in (BUG_INDENT, BUG_DEDENT):
        assert good.count(old) == 1, old
    buggy = good.replace(*BUG_INDENT).replace(*BUG_DEDENT)
    fixed_indent = buggy.replace(BUG_INDENT[1], BUG_INDENT[0])
    assert "failed" not in run_tests(good)
    task = ("Two bug reports against `textproc.py`, our copy of textwrap's `dedent` and `indent`:\n"
            "1. `indent(text, prefix)` also prefixes lines that contain only whitespace, although its docstring "
            "says those are skipped.\n"
            "2. `dedent` removes the common margin from the first line only.\n"
            "Fix both in `textproc.py` and make `run_tests` pass.")
    turns = [
        ("Thought: I will read the module before changing anything.\nAction: read_file textproc.py",
         f"```python\n{buggy}```"),
        ("Thought: Let me run the tests to see both failures.\nAction: run_tests",
         run_tests(buggy)),
        ("Thought: In `indent` the default predicate returns the line itself, which is truthy for whitespace-only "
         "lines; it must return `line.strip()`. I rewrite the file with that fix.\n"
         f"Action: write_file textproc.py\n```python\n{fixed_indent}```",
         "Wrote textproc.py.\n" + run_tests(fixed_indent)),
        ("Thought: `dedent` builds its pattern without the multiline flag, so `^` only matches at the start of "
         "the text. It needs `(?m)^`.\n"
         f"Action: write_file textproc.py\n```python\n{good}```",
         "Wrote textproc.py.\n" + run_tests(good)),
        ("Thought: All tests pass.\nAction: finish\nFixed both bugs in `textproc.py`:\n"
         "- `indent`: the default predicate now returns `line.strip()`, so whitespace-only lines are not "
         "prefixed.\n"
         "- `dedent`: the margin is removed with `re.sub(r'(?m)^' + margin, '', text)`, i.e. from every line.\n"
         "All 4 tests pass.", None),
    ]
    return episode("swe-textproc", "swe", task, turns)


# ---------------------------------------------------------------- text-to-SQL episodes
SCHEMA_SQL = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, signed_up DATE NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL, unit_price REAL NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), ordered_at DATE NOT NULL, status TEXT NOT NULL);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL, unit_price REAL NOT NULL);
"""
CUSTOMERS = [("Ada Lovelace", "London"), ("Grace Hopper", "New York"), ("Alan Turing", "Manchester"),
             ("Katherine Johnson", "Hampton"), ("Edsger Dijkstra", "Eindhoven"), ("Barbara Liskov", "Boston"),
             ("Donald Knuth", "Stanford"), ("Frances Allen", "Peru"), ("John Backus", "Philadelphia"),
             ("Radia Perlman", "Portsmouth")]
PRODUCTS = [("Mechanical keyboard", "peripherals", 89.0), ("Wireless mouse", "peripherals", 25.5),
            ("27-inch monitor", "displays", 249.0), ("Portable monitor", "displays", 179.0),
            ("USB-C dock", "accessories", 119.0), ("Laptop stand", "accessories", 39.9),
            ("Noise-cancelling headset", "audio", 149.0), ("Desk microphone", "audio", 99.0)]


def make_db() -> sqlite3.Connection:
    rng = random.Random(12)
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA_SQL)
    for i, (name, city) in enumerate(CUSTOMERS, 1):
        db.execute("INSERT INTO customers VALUES (?, ?, ?, ?)", (i, name, city, f"2021-{rng.randint(1, 12):02d}-"
                                                                                f"{rng.randint(1, 28):02d}"))
    for i, (name, cat, price) in enumerate(PRODUCTS, 1):
        db.execute("INSERT INTO products VALUES (?, ?, ?, ?)", (i, name, cat, price))
    for o in range(1, 61):
        date = f"{rng.choice([2022, 2023, 2023, 2024])}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        status = rng.choice(["shipped", "shipped", "shipped", "cancelled"])
        db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (o, rng.randint(1, len(CUSTOMERS)), date, status))
        for p in rng.sample(range(1, len(PRODUCTS) + 1), rng.randint(1, 3)):
            price = PRODUCTS[p - 1][2] * rng.choice([1.0, 1.0, 0.9])
            db.execute("INSERT INTO order_items VALUES (?, ?, ?, ?)", (o, p, rng.randint(1, 4), round(price, 2)))
    return db


def run_sql(db: sqlite3.Connection, sql: str) -> str:
    """Rows as the sqlite3 shell prints them with headers on, or the error."""
    try:
        cur = db.execute(sql)
    except sqlite3.Error as e:
        return f"Error: {e}"
    rows = cur.fetchall()
    head = "|".join(d[0] for d in cur.description)
    body = "\n".join("|".join("" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in r)
                     for r in rows)
    return f"{head}\n{body}\n({len(rows)} rows)"


def describe(db: sqlite3.Connection) -> str:
    rows = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    return "\n".join(r[0] + ";" for r in rows)


def sql_episode(db, eid: str, question: str, wrong: str, right: str, why: str, answer) -> dict:
    tables = ", ".join(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
    err = run_sql(db, wrong)
    assert err.startswith("Error"), err
    rows = run_sql(db, right)
    assert not rows.startswith("Error"), rows
    turns = [
        ("Thought: First I need to know which tables exist.\nAction: list_tables", tables),
        (f"Thought: I need the columns of the tables that hold this data.\nAction: describe_tables {tables}",
         describe(db)),
        (f"Thought: I can join the tables and aggregate.\nAction: run_sql\n```sql\n{wrong}\n```", err),
        (f"Thought: {why}\nAction: run_sql\n```sql\n{right}\n```", rows),
        (f"Thought: The query answers the question.\nAction: finish\n{answer(rows)}\n\nQuery used:\n```sql\n{right}\n```",
         None),
    ]
    return episode(eid, "sql", question, turns)


def table_answer(intro: str):
    def fmt(rows: str) -> str:
        lines = rows.splitlines()[:-1]
        head = lines[0].split("|")
        md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(r.split("|")) + " |" for r in lines[1:]]
        return intro + "\n\n" + "\n".join(md)
    return fmt


def sql_episodes() -> list[dict]:
    db = make_db()
    top = sql_episode(
        db, "sql-top-customers",
        "Which three customers spent the most on shipped orders in 2023? Give their names, cities and totals "
        "(quantity times the price paid), largest first.",
        "SELECT c.name, c.city, SUM(oi.quantity * oi.unit_price) AS total\nFROM customers c\n"
        "JOIN orders o ON o.customer_id = c.id\nJOIN order_items oi ON oi.order_id = o.id\n"
        "WHERE o.status = 'shipped' AND strftime('%Y', o.order_date) = '2023'\nGROUP BY c.id\n"
        "ORDER BY total DESC\nLIMIT 3;",
        "SELECT c.name, c.city, SUM(oi.quantity * oi.unit_price) AS total\nFROM customers c\n"
        "JOIN orders o ON o.customer_id = c.id\nJOIN order_items oi ON oi.order_id = o.id\n"
        "WHERE o.status = 'shipped' AND strftime('%Y', o.ordered_at) = '2023'\nGROUP BY c.id\n"
        "ORDER BY total DESC\nLIMIT 3;",
        "The orders table has no order_date column; the date column is ordered_at.",
        table_answer("The three customers with the largest spend on shipped orders in 2023:"))
    revenue = sql_episode(
        db, "sql-category-revenue",
        "For each product category, what was the revenue from shipped orders in 2023, and how many distinct "
        "customers bought from it? Sort by revenue, largest first.",
        "SELECT p.category, SUM(oi.quantity * unit_price) AS revenue, COUNT(DISTINCT o.customer_id) AS customers\n"
        "FROM order_items oi\nJOIN orders o ON o.id = oi.order_id\nJOIN products p ON p.id = oi.product_id\n"
        "WHERE o.status = 'shipped' AND strftime('%Y', o.ordered_at) = '2023'\nGROUP BY p.category\n"
        "ORDER BY revenue DESC;",
        "SELECT p.category, SUM(oi.quantity * oi.unit_price) AS revenue, COUNT(DISTINCT o.customer_id) AS customers\n"
        "FROM order_items oi\nJOIN orders o ON o.id = oi.order_id\nJOIN products p ON p.id = oi.product_id\n"
        "WHERE o.status = 'shipped' AND strftime('%Y', o.ordered_at) = '2023'\nGROUP BY p.category\n"
        "ORDER BY revenue DESC;",
        "Both products and order_items have a unit_price column; the price paid is oi.unit_price.",
        table_answer("Revenue from shipped orders in 2023 by product category:"))
    return [top, revenue]


def episode(eid: str, kind: str, task: str, turns: list[tuple[str, str | None]]) -> dict:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
    for action, observation in turns:
        messages.append({"role": "assistant", "content": action})
        if observation is not None:
            messages.append({"role": "user", "content": f"Observation:\n{observation}"})
    return {"id": eid, "kind": kind, "messages": messages}


def main() -> None:
    episodes = [swe_episode()] + sql_episodes()
    out = Path(__file__).with_name("episodes.jsonl")
    with out.open("w") as f:
        for e in episodes:
            f.write(json.dumps(e) + "\n")
    n = sum(m["role"] == "assistant" for e in episodes for m in e["messages"])
    print(f"wrote {len(episodes)} episodes ({n} agent turns) to {out}")


if __name__ == "__main__":
    main()
