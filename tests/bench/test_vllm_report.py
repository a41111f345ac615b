"""benchmarks/_vllm_report.py: vllm_bench's report.md, a table per mode (offline / server), and the
committed results folders (those written before server mode too) still render the same figures."""

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _vllm_report as R  # noqa: E402


def test_run_keys_name_the_mode():
    assert R.run_key("offline", 4) == "4"  # as every run before server mode was keyed
    assert R.run_key("server", 4) == "server:4"
    assert R.split_key("server:16") == ("server", 16)
    assert R.split_key("1") == ("offline", 1)
    with pytest.raises(ValueError):
        R.run_key("online", 1)


def _run(tok_s, outputs, **kw):
    return {"tok_s": tok_s, "mean_acceptance_length": kw.pop("mal", None), "outputs": outputs} | kw


def _results():
    same, other = [[1, 2, 3]], [[1, 2, 4]]
    return {"config": {}, "methods": {
        "none": {"runs": {"1": _run(10.0, same, command="python offline"),
                          "server:1": _run(8.0, same, latency_mean_s=2.5, latency_p50_s=2.0, latency_p90_s=4.0,
                                           command="python server")}},
        "retrodraft": {"runs": {"1": _run(20.0, same, mal=3.5, proposer_stats={"draft_ms_per_step": 1.25}),
                                "server:1": _run(12.0, other, mal=3.0),
                                "server:4": _run(30.0, same)}},
    }}


def _rows(text):
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines()
            if ln.startswith("| ") and not ln.startswith("| mode")]


def test_each_row_says_its_mode_and_compares_within_it():
    text = R.render(_results())
    rows = {(r[0], r[1], r[2]): r for r in _rows(text)}
    assert set(rows) == {("offline", "none", "1"), ("offline", "retrodraft", "1"), ("server", "none", "1"),
                         ("server", "retrodraft", "1"), ("server", "retrodraft", "4")}
    off, srv = rows[("offline", "retrodraft", "1")], rows[("server", "retrodraft", "1")]
    assert off[3:7] == ["20.00", "2.00x", "3.50", "1.25"]  # speedup over offline none: 20 / 10
    assert off[-1] == "True"
    assert srv[3:5] == ["12.00", "1.50x"]  # over server none: 12 / 8, not offline's 10
    assert srv[-2:] == ["False", "False"]  # identical to none, to offline retrodraft
    assert rows[("server", "none", "1")][7:10] == ["2.50", "2.00", "4.00"]  # latency mean, p50, p90
    assert rows[("server", "retrodraft", "4")][4] == "-" and rows[("server", "retrodraft", "4")][-2:] == ["-", "-"]
    assert text.index("Offline:") < text.index("Server:")
    assert "`python offline`" in text and "`python server`" in text


def test_a_mode_never_run_has_no_table():
    res = _results()
    for m in res["methods"].values():
        m["runs"] = {k: v for k, v in m["runs"].items() if k.startswith("server")}
    text = R.render(res)
    assert "Offline:" not in text and "Server:" in text


def _committed():
    return sorted(p.parent for p in BENCH.glob("results/vllm-*/results.json")
                  if "methods" in json.loads(p.read_text()))


@pytest.mark.parametrize("run", _committed(), ids=lambda p: p.name)
def test_committed_folders_render_their_figures(run):
    res = json.loads((run / "results.json").read_text())
    rows = _rows(R.render(res))
    keys = [k for m in res["methods"].values() for k in m.get("runs", {})]
    assert rows and sorted(r[0] for r in rows) == sorted(R.split_key(k)[0] for k in keys)
    committed = _rows((run / "report.md").read_text())
    if committed[0][0] in ("offline", "server"):  # written with the mode column: the same table
        assert sorted(committed) == sorted(rows)
        return
    # written before server mode (offline only, no mode column): the same figures
    old = {(r[0], r[1]): r for r in committed}
    for r in rows:
        assert r[0] == "offline"
        assert old[(r[1], r[2])][:6] == r[1:7]
        assert old[(r[1], r[2])][-1] == r[-1]


def test_the_committed_folders_are_found():
    assert len(_committed()) >= 5 and not any(re.search("replay", p.name) for p in _committed())
