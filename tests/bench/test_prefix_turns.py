"""benchmarks/prefix_turns.py: the per-request prefill table and, for a closed-loop run, where the
prefill goes (first prompts, appended tokens, positions lost after a diverged output)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import prefix_turns  # noqa: E402


def _record(pid, method, prompt, out, wall, prefill=None, reused=None):
    stats = None if prefill is None else {"prefill_s": prefill, "prefix_reused": reused}
    return {"prompt_id": pid, "method": method, "turns": [{"prompt_tokens": prompt, "new_tokens": len(out),
                                                            "wall_s": wall, "tokens": out, "stats": stats}]}


def test_a_closed_loop_run_splits_its_prefill_into_first_prompt_appended_and_lost():
    ids = [f"agent-loop/ep/{t}" for t in range(3)]
    prompts, greedy = [10, 30, 50], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]
    recs = [_record(p, "greedy", n, g, 5.0) for p, n, g in zip(ids, prompts, greedy)]
    # "on" diverged from greedy in request 1 after 2 tokens, so request 2 reuses 30 + 2 of 34
    on_out = [greedy[0], [6, 7, 99, 98, 97], greedy[2]]
    on_reused = [0, 10 + 5 - 1, 30 + 2]
    prefilled = [n - r for n, r in zip(prompts, on_reused)]  # 10, 16, 18
    recs += [_record(p, "r", n, o, 1.0, prefill=f / 1000, reused=u)
             for p, n, o, f, u in zip(ids, prompts, on_out, prefilled, on_reused)]
    recs += [_record(p, "r/noreuse", n, g, 2.0, prefill=n / 1000, reused=0) for p, n, g in zip(ids, prompts, greedy)]
    text = prefix_turns.summarize({"records": recs})
    row = next(line for line in text.splitlines() if line.startswith("| r | 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # first prompt 10; appended 16 + 16; 2 positions lost, in request 2; 44 prefilled at 1 ms each
    assert cells[1:6] == ["10", "32", "2 (2)", "44", "1.0"]
    wall, pre = 3.0, 0.044
    assert cells[6] == f"{1000 * (wall - pre) / 15:.1f}" and cells[7] == f"{pre / wall:.0%}"
    floor = 0.042
    assert cells[8] == f"{floor / (wall - pre + floor):.0%}"
    assert "r/noreuse | 10 |" not in text  # only methods with the cache on get the split
    assert "Prefill of turns 2+: 0.1 s with the prefix cache off" in text


def test_a_scripted_run_has_no_closed_loop_split():
    recs = [_record("agent/ep/0", "greedy", 10, [1], 1.0), _record("agent/ep/0", "r", 10, [1], 0.5, 0.01, 0)]
    assert "Closed loop" not in prefix_turns.summarize({"records": recs})
