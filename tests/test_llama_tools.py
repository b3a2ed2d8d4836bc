"""llama.cpp's own tools: finding the built binaries, and LlamaServer's process lifecycle.

The lifecycle tests run a stand-in `llama-server` (a small Python HTTP server written to a
temporary folder, with QROUTE_LLAMA_BIN_DIR pointing there) that can be slow to load, exit at
once, never get ready, ignore SIGTERM or find its port taken. The real tests (`-m real`) start
the llama-server that scripts/build_llama_tools.sh builds, with smollm2-135m, and check what holds
on any machine: the OpenAI endpoints answer, the timings are there, and a model drafting for
itself at temperature 0 has nearly every drafted token accepted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from servers import llama_server, smollm_self_draft_server, smollm_server  # noqa: F401 (fixtures)

FAKE_SERVER = textwrap.dedent('''\
    #!{python}
    """A stand-in llama-server: FAKE_LLAMA_MODE says how it behaves."""
    import http.server, json, os, signal, sys, time

    args = sys.argv[1:]
    host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
    mode = os.environ.get("FAKE_LLAMA_MODE", "ok")
    with open(os.environ["FAKE_LLAMA_ARGS"], "a") as fh:
        fh.write(json.dumps(args) + "\\n")
    if mode == "exit":
        print("error: failed to load model 'broken.gguf'", flush=True)
        sys.exit(1)
    if mode == "port-taken-once" and not os.path.exists(os.environ["FAKE_LLAMA_ARGS"] + ".bound"):
        open(os.environ["FAKE_LLAMA_ARGS"] + ".bound", "w").close()
        print(f"couldn't bind HTTP server socket, hostname: {{host}}, port: {{port}}", flush=True)
        sys.exit(1)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready_at = time.monotonic() + (1e9 if mode == "hang" else 0.3)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = time.monotonic() >= ready_at
            body = json.dumps({{"status": "ok"}} if ok else {{"error": {{"message": "Loading model"}}}}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    print("loading model", flush=True)
    http.server.HTTPServer((host, port), Handler).serve_forever()
''')


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """A folder with a stand-in llama-server (and empty other tools); returns the args log."""
    from qroute_cli.generation.llama_tools import TOOLS

    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in TOOLS:
        path = folder / tool
        path.write_text(FAKE_SERVER.format(python=sys.executable) if tool == "llama-server" else "#!/bin/sh\n")
        path.chmod(0o755)
    log = tmp_path / "args.jsonl"
    monkeypatch.setenv("QROUTE_LLAMA_BIN_DIR", str(folder))
    monkeypatch.setenv("FAKE_LLAMA_ARGS", str(log))
    return log


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def gone(pid: int) -> bool:
    """Whether no process, not even a zombie, has this pid (a zombie still answers kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def dead(pid: int) -> bool:
    """Whether the process has ended: gone, or a zombie left to a parent that is not ours (an
    orphan's new parent, e.g. a container's init, may reap it late or never)."""
    if gone(pid):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return gone(pid)


def assert_stopped(server, pid: int, port: int) -> None:
    from qroute_cli.generation.llama_tools import port_open

    assert server.process is None and not server.alive()
    assert gone(pid), f"llama-server {pid} is still there"
    assert not port_open("127.0.0.1", port)


# -- finding the tools -----------------------------------------------------------------------


def test_missing_tools_say_how_to_build_them(tmp_path, monkeypatch):
    from qroute_cli.generation.llama_tools import LlamaToolError, find_tool

    monkeypatch.setenv("QROUTE_LLAMA_BIN_DIR", str(tmp_path))
    with pytest.raises(LlamaToolError) as err:
        find_tool("llama-server")
    assert "build_llama_tools.sh" in err.value.hint
    assert err.value.exit_code == 3


def test_bin_dir_finds_the_cached_build_of_the_installed_version(tmp_path, monkeypatch):
    from qroute_cli.generation import llama_tools

    monkeypatch.delenv("QROUTE_LLAMA_BIN_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert llama_tools.bin_dir() is None
    monkeypatch.setattr(llama_tools, "_llama_cpp_version", lambda: "0.3.36")
    for key, version in (("aaaa", "0.3.35"), ("bbbb", "0.3.36")):
        folder = tmp_path / "qroute" / "bin" / key
        folder.mkdir(parents=True)
        for tool in llama_tools.TOOLS:
            (folder / tool).write_text("")
        (folder / "build-info.txt").write_text(f"llama-cpp-python: {version}\ncmake flags: (none)\n")
    assert llama_tools.bin_dir() == tmp_path / "qroute" / "bin" / "bbbb"
    assert llama_tools.build_info(llama_tools.bin_dir())["cmake flags"] == "(none)"
    (tmp_path / "qroute" / "bin" / "bbbb" / "llama-bench").unlink()  # incomplete: not a build
    assert llama_tools.bin_dir() is None


def test_speculation_options_become_llama_server_flags(fake_tools, model_file):
    from qroute_cli.generation.llama_tools import LlamaServer, Speculation

    spec = Speculation(draft_model=Path("/m/draft.gguf"), spec_type="ngram-simple", n_max=4, n_min=1)
    cmd = LlamaServer(model_file, speculation=spec, threads=2, ctx=512).command(8123)
    joined = " ".join(cmd)
    assert cmd[0].endswith("llama-server")
    for part in ("-m " + str(model_file), "-md /m/draft.gguf", "--spec-type ngram-simple,draft-simple", "--spec-draft-n-max 4",
                 "--spec-draft-n-min 1", "--host 127.0.0.1", "--port 8123", "-t 2", "-c 512", "-np 1"):
        assert part in joined
    assert Speculation(draft_model=Path("d.gguf")).args() == ["-md", "d.gguf", "--spec-type", "draft-simple"]
    assert Speculation(draft_model=Path("e.gguf"), spec_type="draft-eagle3").args()[-1] == "draft-eagle3"
    assert Speculation().args() == []


# -- the process lifecycle, with a stand-in server -----------------------------------------


def test_server_is_ready_when_started_and_gone_when_stopped(fake_tools, model_file):
    from qroute_cli.generation.llama_tools import LlamaServer

    with LlamaServer(model_file) as server:
        assert server.get_json("/health") == {"status": "ok"}  # waited through the 503s
        pid, port, log = server.pid, server.port, Path(server._log_file.name)
        assert server.url == f"http://127.0.0.1:{port}"
        assert "loading model" in server.log_tail()
    assert_stopped(server, pid, port)
    assert not log.exists()
    server.stop()  # idempotent


def test_server_is_stopped_when_the_block_fails(fake_tools, model_file):
    from qroute_cli.generation.llama_tools import LlamaServer

    with pytest.raises(ZeroDivisionError):
        with LlamaServer(model_file) as server:
            pid, port = server.pid, server.port
            1 / 0
    assert_stopped(server, pid, port)


def test_a_server_that_exits_says_why(fake_tools, model_file, monkeypatch):
    from qroute_cli.generation.llama_tools import LlamaServer, LlamaToolError

    monkeypatch.setenv("FAKE_LLAMA_MODE", "exit")
    server = LlamaServer(model_file)
    with pytest.raises(LlamaToolError, match="failed to load model 'broken.gguf'") as err:
        server.start()
    assert "exited with code 1" in err.value.message
    assert server.process is None


def test_a_server_never_ready_is_stopped_after_the_timeout(fake_tools, model_file, monkeypatch):
    from qroute_cli.generation.llama_tools import LlamaServer, LlamaToolError

    monkeypatch.setenv("FAKE_LLAMA_MODE", "hang")
    server = LlamaServer(model_file, startup_timeout_s=1.0)
    with pytest.raises(LlamaToolError, match="not ready after 1 s") as err:
        server.start()
    assert "loading model" in err.value.message  # the log tail
    assert server.process is None


def test_a_server_ignoring_sigterm_is_killed(fake_tools, model_file, monkeypatch):
    from qroute_cli.generation.llama_tools import LlamaServer

    monkeypatch.setenv("FAKE_LLAMA_MODE", "stubborn")
    server = LlamaServer(model_file).start()
    pid, port = server.pid, server.port
    server.stop(timeout_s=0.5)
    assert_stopped(server, pid, port)


def test_a_taken_port_is_retried_on_another(fake_tools, model_file, monkeypatch):
    from qroute_cli.generation.llama_tools import LlamaServer

    monkeypatch.setenv("FAKE_LLAMA_MODE", "port-taken-once")
    with LlamaServer(model_file) as server:
        assert server.get_json("/health")["status"] == "ok"
    assert len(fake_tools.read_text().splitlines()) == 2


def test_a_missing_model_file_is_named(fake_tools, tmp_path):
    from qroute_cli.generation.llama_tools import LlamaServer, LlamaToolError

    with pytest.raises(LlamaToolError, match="nothing.gguf"):
        LlamaServer(tmp_path / "nothing.gguf").start()


@pytest.mark.skipif(sys.platform != "linux", reason="the parent death signal is Linux's (prctl)")
def test_the_server_dies_with_a_process_that_never_stopped_it(fake_tools, model_file, tmp_path):
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from qroute_cli.generation.llama_tools import LlamaServer
        server = LlamaServer(Path({str(model_file)!r})).start()
        Path({str(pid_file)!r}).write_text(str(server.pid))
        os._exit(0)  # no stop(), no atexit
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=os.environ)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    outlived = not dead(pid)
    if outlived:
        os.kill(pid, signal.SIGKILL)  # leave no stray server behind a failing test
    assert not outlived, f"llama-server {pid} outlived the process that started it"


# -- the real llama-server ------------------------------------------------------------------


def chat(server, content: str, max_tokens: int) -> dict:
    return server.post_json("/v1/chat/completions", {
        "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
        "temperature": 0, "seed": 1,
        "cache_prompt": False,  # every request computes the same batches, so greedy repeats exactly
    })


@pytest.mark.real
def test_llama_server_answers_the_openai_api(smollm_server):
    server = smollm_server
    assert server.get_json("/health")["status"] == "ok"
    props = server.get_json("/props")
    assert props["model_path"].endswith("smollm2-135m.gguf")
    assert props["total_slots"] == 1
    models = server.get_json("/v1/models")
    assert len(models["data"]) == 1 and models["data"][0]["id"]

    answer = chat(server, "What is the capital of France?", 12)
    text = answer["choices"][0]["message"]["content"]
    assert text.strip()
    timings = answer["timings"]
    assert timings["prompt_ms"] > 0 and timings["predicted_ms"] > 0
    assert timings["predicted_n"] == answer["usage"]["completion_tokens"] <= 12
    assert "draft_n" not in timings  # no speculation configured
    # Greedy on one server, one thread: the same answer again.
    assert chat(server, "What is the capital of France?", 12)["choices"][0]["message"]["content"] == text


@pytest.mark.real
def test_a_model_drafting_for_itself_has_nearly_every_draft_accepted(smollm_self_draft_server):
    answer = chat(smollm_self_draft_server, "Write a short story about a lighthouse keeper.", 48)
    timings = answer["timings"]
    assert timings["predicted_n"] > 8
    assert timings["draft_n"] > 0
    # The same weights propose and verify; only a near-tie between batched and single-token
    # logits can reject a token, so acceptance stays close to 1 on any CPU.
    assert timings["draft_n_accepted"] / timings["draft_n"] >= 0.9


@pytest.mark.real
def test_a_real_server_leaves_nothing_behind():
    with pytest.raises(RuntimeError, match="test failure inside the block"):
        with llama_server("smollm2-135m", ctx=512) as server:
            pid, port = server.pid, server.port
            with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
                assert json.loads(response.read())["status"] == "ok"
            raise RuntimeError("test failure inside the block")
    assert_stopped(server, pid, port)
