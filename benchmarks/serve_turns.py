"""A served multi-turn agent conversation, turn by turn, with retrodraft's prefix cache on and off.

    python benchmarks/serve_turns.py --model qwen2.5-coder-1.5b --dtype bfloat16 --requests 5 \
        --max-tokens 256 --out benchmarks/results/serve-turns/qwen2.5-coder-1.5b-bf16.json

Exports the model twice with ``retrodraft export`` (the prefix cache at its default budget, and
off: ``prefix_cache=0``), serves each folder with ``transformers serve --trust-remote-code`` on
127.0.0.1 and plays the ``agent-loop`` episodes through the ``openai`` client, one request per agent
turn, greedy (``temperature=0``), after one untimed warm-up request per server. The first mode plays the closed loop: each request resends the
served model's own earlier replies of the episode (cut at ``--max-tokens``) and the recorded tool
observations. The other modes resend the first mode's replies, so every mode is sent the same
conversations, and whether its own reply was the same is recorded. Per turn: the wall time of the
request seen by the client, prompt and completion tokens (the server's usage), and the server log's
``reused=N`` (prompt positions taken from the prefix cache instead of prefilled).

The JSON holds the command, the environment and every turn; the summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import openai
import torch
import transformers

from retrodraft.bench.data import agent_loop, with_own_replies
from retrodraft.cost import cpu_name
from retrodraft.export import export

#: mode -> the export's prefix_cache option (None: the library default).
MODES = {"on": None, "off": 0}
#: The untimed first request of each server.
WARMUP = "Write a Python function that adds two numbers."
_LOGGED = re.compile(r"retrodraft request=(\d+) tokens=(\d+) steps=(\d+) mat=([\d.]+) wall_s=([\d.]+) reused=(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(folder: Path, log: Path, dtype: str, start_s: float):
    """``transformers serve folder --trust-remote-code`` on a free loopback port; stopped on exit."""
    port = _free_port()
    exe = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(folder.parent / "hf-modules")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", dtype, "--trust-remote-code"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start in {start_s:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=1800, max_retries=0,
                            http_client=openai.DefaultHttpxClient(trust_env=False))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _logged(log: Path) -> list[dict]:
    return [{"request": int(m[1]), "tokens": int(m[2]), "steps": int(m[3]), "mat": float(m[4]),
             "wall_s": float(m[5]), "reused": int(m[6])} for m in _LOGGED.finditer(log.read_text())]


def play(client, name: str, prompts, log: Path, max_tokens: int, replies: dict[str, str] | None) -> list[dict]:
    """Send every prompt in order; ``replies`` (prompt id -> text) fills the earlier assistant turns,
    or, when None, the served model's own replies of this run do (the closed loop)."""
    own: dict[str, str] = {}
    turns = []
    for p in prompts:
        sent = with_own_replies(p, own if replies is None else replies)
        before = len(_logged(log))
        t0 = time.perf_counter()
        r = client.chat.completions.create(model=name, messages=sent.messages, max_tokens=max_tokens,
                                           temperature=0)
        wall = time.perf_counter() - t0
        text = r.choices[0].message.content or ""
        own[p.id] = text
        deadline = time.monotonic() + 10
        while len(_logged(log)) == before and time.monotonic() < deadline:  # the log line may lag the reply
            time.sleep(0.1)
        lines = _logged(log)[before:]
        turns.append({"prompt_id": p.id, "turn": p.meta["turn"], "prompt_tokens": r.usage.prompt_tokens,
                      "completion_tokens": r.usage.completion_tokens, "wall_s": wall,
                      "reused": lines[-1]["reused"] if lines else None, "server": lines[-1] if lines else None,
                      "reply": text,
                      "same_reply": None if replies is None else text == replies.get(p.id)})
        print(f"  {p.id}: prompt {r.usage.prompt_tokens}, reused {turns[-1]['reused']}, "
              f"{r.usage.completion_tokens} tokens in {wall:.1f} s", file=sys.stderr)
    return turns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="a registry name or a model folder")
    ap.add_argument("--dtype", default="bfloat16", help="the server's --dtype (default: %(default)s)")
    ap.add_argument("--requests", type=int, default=5, help="agent-loop requests, from the first (default: 5)")
    ap.add_argument("--max-tokens", type=int, default=256, help="per reply (default: %(default)s)")
    ap.add_argument("--modes", default="on,off", help=f"comma list of {', '.join(MODES)}; the first plays the "
                                                      "closed loop (default: %(default)s)")
    ap.add_argument("--start-s", type=float, default=600, help="seconds a server may take to start")
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes takes a comma list of {', '.join(MODES)}")
    prompts = agent_loop(args.requests)
    result = {"command": "python benchmarks/serve_turns.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "model": args.model, "dtype": args.dtype, "max_tokens": args.max_tokens, "cpu": cpu_name(),
              "cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "modes": {}}
    replies = None
    with tempfile.TemporaryDirectory(prefix="serve-turns-") as tmp:
        for mode in modes:
            folder = export(args.model, Path(tmp) / f"served-{mode}", prefix_cache=MODES[mode])
            log = Path(tmp) / f"{mode}.log"
            print(f"{mode}: serving {folder}", file=sys.stderr)
            t0 = time.perf_counter()
            with _server(folder, log, args.dtype, args.start_s) as client:
                start = time.perf_counter() - t0
                # excluded: the first request pays one-time costs (the cost curve, kernel compilation)
                t0 = time.perf_counter()
                client.chat.completions.create(model=str(folder), messages=[{"role": "user", "content": WARMUP}],
                                               max_tokens=8, temperature=0)
                warmup = time.perf_counter() - t0
                turns = play(client, str(folder), prompts, log, args.max_tokens, replies)
            result["modes"][mode] = {"prefix_cache": MODES[mode], "server_start_s": start, "warmup_s": warmup,
                                     "turns": turns}
            if replies is None:
                replies = {t["prompt_id"]: t["reply"] for t in turns}
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["summary"] = summarize(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary"])
    return 0


def summarize(result: dict) -> str:
    """A markdown table: per turn, each mode's reused positions and seconds; then the totals."""
    modes = list(result["modes"])
    rows = list(zip(*(result["modes"][m]["turns"] for m in modes)))
    lines = ["| request | prompt tokens | " + " | ".join(f"{m}: reused / s" for m in modes) + " |",
             "|---|---:|" + "---:|" * len(modes)]
    for row in rows:
        lines.append(f"| {row[0]['prompt_id']} | {row[0]['prompt_tokens']} | "
                     + " | ".join(f"{t['reused']} / {t['wall_s']:.1f}" for t in row) + " |")
    for m in modes:
        ts = result["modes"][m]["turns"]
        later = sum(t["wall_s"] for t in ts[1:])
        same = [t["same_reply"] for t in ts if t["same_reply"] is not None]
        lines.append(f"\n{m}: {sum(t['wall_s'] for t in ts):.1f} s for {len(ts)} requests "
                     f"({later:.1f} s for requests 2+), {sum(t['completion_tokens'] for t in ts)} tokens"
                     + (f", {sum(same)}/{len(same)} replies identical to {modes[0]}'s" if same else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
