"""``retrodraft export`` end to end: the real ``transformers serve`` on a loopback port, queried with
the official ``openai`` client, against the same folder served without retrodraft."""

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="needs the serve extra: pip install -e '.[serve]'")

from helpers import tiny_model  # noqa: E402
from retrodraft import state as st  # noqa: E402
from retrodraft.cli import main  # noqa: E402
from retrodraft.errors import ConfigError  # noqa: E402
from retrodraft.export import export  # noqa: E402
from tiny_tokenizer import save_tiny_chat_model, tiny_tokenizer  # noqa: E402

TRANSFORMERS = Path(sys.executable).parent / "transformers"
START_S = 180  # a cold server start on a busy 2-core box
REQUEST_S = 120
MAX_TOKENS = 24
PROMPTS = ["w7 w8 w9 w10 w7 w8 w9", "w20 w21 w22 w20 w21", "w30 w31 w32 w33 w34", "w40 w41 w40 w41 w40 w41",
           "w50 w51 w52 w50 w51 w52 w50"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(folder: Path, log: Path, *flags: str):
    """``transformers serve folder`` on a free loopback port; always stopped on exit."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(folder.parent / "hf-modules")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(TRANSFORMERS), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", *flags], stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start in {START_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield _client(port), str(folder)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # uvicorn shuts down cleanly on SIGTERM, running atexit (the state save)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _client(port: int):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=REQUEST_S, max_retries=0,
                         http_client=openai.DefaultHttpxClient(trust_env=False))


def _chat(server, prompt: str, stream: bool = False, **extra) -> str:
    client, name = server
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        r = client.chat.completions.create(model=name, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                           extra_body=extra or None)
        assert r.usage.completion_tokens == MAX_TOKENS
        return r.choices[0].message.content
    parts = []
    for chunk in client.chat.completions.create(model=name, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                                stream=True, extra_body=extra or None):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def _requests_logged(log: Path) -> int:
    return log.read_text().count("retrodraft request=")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    src = save_tiny_chat_model(root / "tiny", tiny_model("llama"))
    out = export(src, root / "served", state=root / "served" / "state", save_every=2)
    return root, src, out


def test_export_writes_a_servable_folder(folders):
    root, src, out = folders
    assert (out / "config.json").resolve() == (src / "config.json").resolve()  # linked, not copied
    assert (out / "custom_generate" / "generate.py").is_file()
    assert (out / "custom_generate" / "requirements.txt").read_text().startswith("retrodraft>=")
    options = json.loads((out / "generation_config.json").read_text())["retrodraft"]
    assert options == {"drafters": ["history", "recycling", "lookup"], "sizing": "auto", "save_every": 2, "state": "state"}
    small = export(src, root / "small", prefix_cache=1 << 20)
    assert json.loads((small / "generation_config.json").read_text())["retrodraft"]["prefix_cache"] == 1 << 20
    with pytest.raises(ConfigError, match="prefix_cache must be a byte budget"):
        export(src, root / "bad", prefix_cache=-1)
    with pytest.raises(ConfigError, match="already holds an export"):
        export(src, out)
    copy_args = ["--copy", "--sizing", "fixed", "--budget", "6"]
    assert main(["export", str(src), "--out", str(root / "copied"), *copy_args]) == 0
    copied = root / "copied"
    assert not (copied / "model.safetensors").is_symlink()
    assert json.loads((copied / "generation_config.json").read_text())["retrodraft"]["budget"] == 6
    assert main(["export", str(src), "--out", str(copied), "--drafters", "medusa"]) == 2  # one line, no traceback


def test_served_with_retrodraft_equals_served_without(folders):
    root, src, out = folders
    log, plain_log = root / "retro.log", root / "plain.log"
    with _server(out, log, "--trust-remote-code") as retro, _server(out, plain_log) as plain:
        expected = [_chat(plain, p) for p in PROMPTS]
        assert len(set(expected)) == len(PROMPTS) and all(len(e.split()) >= MAX_TOKENS // 2 for e in expected)
        assert _requests_logged(plain_log) == 0  # without --trust-remote-code: plain decoding

        assert [_chat(retro, p) for p in PROMPTS] == expected
        assert [_chat(retro, p, stream=True) for p in PROMPTS[:2]] == expected[:2]
        # several clients at once; the server decodes one request at a time, each exactly
        jobs = [PROMPTS[i % len(PROMPTS)] for i in range(8)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(_chat, retro, p, i % 2 == 1) for i, p in enumerate(jobs)]
            got = [f.result(timeout=4 * REQUEST_S) for f in futures]
        assert got == [expected[PROMPTS.index(p)] for p in jobs]
        served = len(PROMPTS) + 2 + len(jobs)
        assert _requests_logged(log) == served  # one log line per request

        # per-request options travel in the request's generation config
        config = {"max_new_tokens": MAX_TOKENS, "do_sample": False}
        off = json.dumps({**config, "retrodraft": {"enabled": False}})
        assert _chat(retro, PROMPTS[0], generation_config=off) == expected[0]
        fixed = json.dumps({**config, "retrodraft": {"sizing": "fixed", "budget": 3}})
        assert _chat(retro, PROMPTS[1], generation_config=fixed) == expected[1]
        assert _requests_logged(log) == served + 1  # the request without drafting logs nothing
        assert _chat(retro, PROMPTS[2]) == expected[2]  # an odd count: one request left to save at shutdown
        assert _requests_logged(log) == served + 2
        bad = json.dumps({**config, "retrodraft": {"drafters": ["stand"]}})
        with pytest.raises(openai.APIStatusError):
            _chat(retro, PROMPTS[2], generation_config=bad)
    text = log.read_text()
    line = next(ln for ln in text.splitlines() if "retrodraft request=1 " in ln)
    assert f"tokens={MAX_TOKENS}" in line and "steps=" in line and "mat=" in line and "wall_s=" in line
    reused = [int(ln.rsplit("reused=", 1)[1]) for ln in text.splitlines() if "retrodraft request=" in ln]
    assert reused[0] == 0 and max(reused) > 0  # a prompt sent again prefilled from the prefix cache
    assert "saved the state" in text and "(shutdown)" in text  # every 2 requests, and at shutdown
    st.verify(out / "state", tiny_tokenizer())


def test_a_restarted_server_loads_its_state_and_refuses_unsupported_modes(folders):
    root, src, out = folders
    if not (out / "state" / st.MANIFEST).is_file():
        pytest.skip("needs the state saved by the previous test")
    before = st.read_manifest(out / "state")
    log = root / "restart.log"
    with _server(out, log, "--trust-remote-code") as retro:
        assert "loaded the saved state" in log.read_text()
        assert _chat(retro, PROMPTS[3])
    assert st.read_manifest(out / "state")["sha256"] != before["sha256"]  # saved again at shutdown

    refused = root / "refused.log"
    with pytest.raises(AssertionError, match="exited"):
        with _server(out, refused, "--trust-remote-code", "--continuous-batching"):
            pass
    assert "serve this folder without --continuous-batching" in refused.read_text()
