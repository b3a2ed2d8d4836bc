"""`qroute serve` as a user runs it: a real server process on 127.0.0.1, called with OpenAI's own
Python client (and httpx for what the client cannot send: bad JSON, no key, a huge body).
The worker's queue rules (the wait counts against the budget, a client that leaves stops its
answer) are tested in-process on the fake backend."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAKE_CONFIG, default_sigint, require_model, require_module

KEY = "test-key"
FAKE_PAIRS = ["fake-big", "fake-big+small", "fake-big+ngram", "fake-small", "fake-other"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `qroute serve` process and what a test needs to reach it."""

    def __init__(self, home: Path, config: Path | None, env: dict[str, str] | None = None,
                 api_key: str | None = KEY) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "QROUTE_HOME": str(home), **(env or {})}
        self.env.pop("QROUTE_CONFIG", None)
        self.config = config
        self.log = home / "serve.log"
        args = ["serve", "--port", str(self.port)] + (["--api-key", api_key] if api_key else [])
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(self.command(*args), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         preexec_fn=default_sigint)  # stopped by SIGINT, as Ctrl-C would
        self._wait_ready()

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "qroute_cli"] + (["--config", str(self.config)] if self.config else []) + list(args)

    def qroute(self, *args: str) -> subprocess.CompletedProcess:
        """Another qroute command on the server's data dir."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env, timeout=60)

    def _wait_ready(self, timeout: float = 90) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"qroute serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"qroute serve did not answer /health within {timeout} s:\n{self.log.read_text()}")

    def client(self, **kwargs):
        openai = require_module("openai")
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60, **kwargs)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_module("openai")
    require_module("httpx")
    home = tmp_path_factory.mktemp("serve-home")
    srv = Server(home, FAKE_CONFIG, env={"QROUTE_MODELS": str(home / "models")})
    yield srv
    srv.stop()
    log = srv.log.read_text()
    assert srv.proc.returncode == 0 and "Traceback" not in log, log  # Ctrl-C is the way to stop a server


def _http(server, method: str, path: str, key: str | None = KEY, **kwargs):
    import httpx

    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


HELLO = [{"role": "user", "content": "Say hello"}]


def test_chat_completion_routes_and_says_which_pair_answered(server):
    resp = server.client().chat.completions.create(model="qroute/auto", messages=HELLO, max_tokens=20)
    assert resp.object == "chat.completion"
    assert resp.model in FAKE_PAIRS
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert 0 < resp.usage.completion_tokens <= 20
    route = resp.model_extra["qroute"]
    assert route["pair"] == resp.model and route["strategy"] == "quality"
    assert route["budget_s"] == 5.0  # the fake config's default
    assert route["predicted_latency_s"] > 0 and route["latency_s"] > 0
    assert route["queue_s"] >= 0 and route["wall_s"] >= route["queue_s"]
    assert "candidates" not in route  # only when asked


def test_streaming_gives_the_same_text_in_openai_chunks(server):
    client = server.client()
    whole = client.chat.completions.create(model="qroute/pair/fake-big+small", messages=HELLO, max_tokens=30)
    chunks = list(client.chat.completions.create(model="qroute/pair/fake-big+small", messages=HELLO,
                                                 max_tokens=30, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.model == "fake-big+small" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert final[0].model_extra["qroute"]["drafter"] == "fake-small"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done(server):
    r = _http(server, "POST", "/v1/completions",
              json={"model": "qroute/pair/fake-big", "prompt": "hi", "max_tokens": 5, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    bodies = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(b["object"] == "text_completion" for b in bodies)


def test_completions(server):
    resp = server.client().completions.create(model="qroute/pair/fake-big", prompt="Once upon", max_tokens=8)
    assert resp.object == "text_completion" and resp.model == "fake-big"
    assert resp.choices[0].text and resp.usage.completion_tokens <= 8


def test_models_lists_routed_names_and_every_installed_pair(server):
    ids = [m.id for m in server.client().models.list()]
    assert ids[:2] == ["qroute/auto", "qroute/auto@1s"]
    assert "qroute/auto@2s" in ids and "qroute/cost" in ids
    assert [i for i in ids if i.startswith("qroute/pair/")] == [f"qroute/pair/{p}" for p in FAKE_PAIRS]


def test_pinned_pair_is_not_routed(server):
    resp = server.client().chat.completions.create(model="qroute/pair/fake-small", messages=HELLO, max_tokens=5)
    assert resp.model == "fake-small"
    assert resp.model_extra["qroute"]["strategy"] == "forced"


def test_budget_from_the_name_the_header_and_the_body(server):
    client = server.client()
    named = client.chat.completions.create(model="qroute/auto@2s", messages=HELLO, max_tokens=5)
    route = named.model_extra["qroute"]
    assert route["budget_s"] == 2.0
    assert 0 < route["routed_budget_s"] <= 2.0  # what the queue left: the router decided on that
    assert "2.0 s budget" in route["reason"]
    header = client.chat.completions.create(model="qroute/auto@2s", messages=HELLO, max_tokens=5,
                                            extra_headers={"X-QRoute-Budget": "800ms"})
    assert header.model_extra["qroute"]["budget_s"] == 0.8
    body = client.chat.completions.create(model="qroute/cost", messages=HELLO, max_tokens=5,
                                          extra_headers={"X-QRoute-Budget": "800ms"},
                                          extra_body={"qroute": {"budget": "3s", "explain": True}})
    route = body.model_extra["qroute"]
    assert route["budget_s"] == 3.0 and route["strategy"] == "cost"
    assert {c["pair"] for c in route["candidates"]} == set(FAKE_PAIRS)
    pinned = client.chat.completions.create(model="qroute/auto", messages=HELLO, max_tokens=5,
                                            extra_body={"qroute": {"pair": "fake-other"}})
    assert pinned.model == "fake-other"


def test_invalid_json_and_bad_fields_are_400_with_an_openai_error(server):
    openai = require_module("openai")
    r = _http(server, "POST", "/v1/chat/completions", content=b'{"model": "qroute/auto", "messages": [',
              headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
    client = server.client()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qroute/auto", messages=HELLO, temperature="hot")
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qroute/auto", messages=[{"role": "robot", "content": "x"}])
    assert bad.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qroute/auto", messages=HELLO, extra_body={"qroute": {"budgt": "1s"}})
    assert bad.value.body["param"] == "qroute.budgt"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qroute/auto", messages=HELLO, extra_headers={"X-QRoute-Budget": "soon"})
    assert bad.value.body["param"] == "X-QRoute-Budget" and "soon" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="qroute/auto", messages=HELLO, extra_body={"qroute": {"strategy": "fastest"}})
    assert bad.value.body["param"] == "qroute.strategy"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="qroute/pair/fake-bigg", messages=HELLO)
    assert "Did you mean 'fake-big'" in missing.value.body["message"]
    for body in ([1, 2], {"model": "qroute/auto"}, {"model": "qroute/auto", "messages": []}):
        r = _http(server, "POST", "/v1/chat/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], body
    assert _http(server, "GET", "/v1/chat/completions").status_code == 405
    assert "error" in _http(server, "GET", "/v2/nothing").json()


def test_api_key_is_required_when_set(server):
    openai = require_module("openai")
    for key in (None, "wrong"):
        r = _http(server, "GET", "/v1/models", key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_a_body_over_the_limit_is_413(server):
    big = {"model": "qroute/auto", "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    r = _http(server, "POST", "/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: counted as it is read
        yield b'{"model": "qroute/auto", "messages": [{"role": "user", "content": "'
        for _ in range(12):
            yield b"x" * 100_000
        yield b'"}]}'

    r = _http(server, "POST", "/v1/chat/completions", content=chunked())
    assert r.status_code == 413


def test_health_and_metrics(server):
    health = _http(server, "GET", "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["pairs"] == 5
    server.client().chat.completions.create(model="qroute/pair/fake-big+ngram", messages=HELLO, max_tokens=30)
    text = _http(server, "GET", "/metrics").text
    assert 'qroute_requests_total{endpoint="chat",outcome="ok",pair="fake-big+ngram"}' in text
    assert 'qroute_drafted_tokens_total{endpoint="chat",pair="fake-big+ngram"}' in text
    assert 'qroute_accepted_tokens_total{endpoint="chat",pair="fake-big+ngram"}' in text
    assert 'qroute_request_latency_seconds_bucket{endpoint="chat",le="0.05",pair="fake-big+ngram"}' in text
    assert "qroute_budget_misses_total" in text or "qroute_budget_misses" in text
    assert 'qroute_requests_total{endpoint="chat",outcome="error",pair="none"}' in text  # the refused ones


def test_every_answer_is_a_learning_store_row(server):
    def runs() -> int:
        r = server.qroute("stats", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["total"]["runs"]

    before = runs()
    client = server.client()
    client.chat.completions.create(model="qroute/auto", messages=HELLO, max_tokens=5)
    list(client.completions.create(model="qroute/cost", prompt="hi", max_tokens=5, stream=True))
    assert runs() == before + 2


def test_binding_beyond_loopback_needs_an_api_key(tmp_path):
    r = subprocess.run([sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "serve", "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "QROUTE_HOME": str(tmp_path)})
    assert r.returncode == 2
    assert "--api-key" in r.stderr and "Traceback" not in r.stderr


# -- the worker, in-process -------------------------------------------------------------


@pytest.fixture
def worker(fake_registry, fake_pool):
    from qroute_cli.routing.router import Router
    from qroute_cli.serve.app import Worker

    w = Worker(Router(fake_registry, pool=fake_pool, budget_s=5.0), fake_pool)
    yield w
    w.close()


def _job(**kwargs):
    from qroute_cli.serve.app import Job
    from qroute_cli.types import GenerationConfig, Message

    fields = dict(endpoint="chat", messages=[Message("user", "Say hello")], config=GenerationConfig(max_tokens=200),
                  strategy=None, budget_s=5.0, pair=None, hard_budget=False)
    return Job(**{**fields, **kwargs})


def test_queue_wait_counts_against_the_budget(worker):
    from qroute_cli.serve.app import BudgetSpent

    waited = _job(budget_s=2.0)
    waited.arrived -= 1.5  # it waited 1.5 s of its 2 s for the model
    ran = worker.submit(waited).result()
    assert ran.queue_s >= 1.5 and ran.budget_s == 2.0
    assert ran.result.decision.budget_s <= 0.5  # the router decided on what was left
    spent = _job(budget_s=1.0)
    spent.arrived -= 1.5
    with pytest.raises(BudgetSpent, match="ran out while the request waited"):
        worker.submit(spent).result()
    pinned = _job(budget_s=1.0, pair="fake-small")  # a pinned pair is answered however long it waited
    pinned.arrived -= 1.5
    assert worker.submit(pinned).result().result.pair.name == "fake-small"
    hard = worker.submit(_job(budget_s=0.1, pair="fake-big", hard_budget=True)).result()
    assert hard.result.generation.finish_reason == "deadline", hard.result.generation.stats  # queue included
    # The server's own budget and strategy come back after each request.
    assert worker.router.budget_s == 5.0 and worker.router.strategy_text == "quality"


def test_a_client_that_leaves_stops_its_answer(worker):
    full = worker.submit(_job(pair="fake-big")).result()
    pieces: list[str] = []
    job = _job(pair="fake-big")

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            job.stop.set()  # what the server does when the client disconnects

    job.on_text = on_text
    ran = worker.submit(job).result()
    gen = ran.result.generation
    assert gen.finish_reason == "interrupted" and ran.result.outcome == "interrupted"
    assert len(pieces) == 3 and gen.stats.output_tokens < full.result.generation.stats.output_tokens
    gone = _job()
    gone.stop.set()  # left while it waited: never runs
    assert worker.submit(gone).result() is None


# -- a real model ------------------------------------------------------------------------


def smollm_server(tmp_path: Path) -> Server:
    """`qroute serve` with the built-in registry and only smollm2-135m installed, so no other
    model is calibrated at start."""
    model = require_model("smollm2-135m")
    models = tmp_path / "models"
    models.mkdir()
    for path in model.parent.glob("smollm2-135m.gguf*"):
        (models / path.name).symlink_to(path)
    home = tmp_path / "home"
    home.mkdir()
    return Server(home, None, env={"QROUTE_MODELS": str(models)})


@pytest.mark.real
def test_real_model_chat_completion(tmp_path):
    require_module("openai")
    srv = smollm_server(tmp_path)
    question = "What is the capital of France?"
    try:
        resp = srv.client().chat.completions.create(
            model="qroute/auto@10s", messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0)
    finally:
        srv.stop()
    assert resp.model in ("smollm2-135m", "smollm2-135m+ngram")
    assert resp.model_extra["qroute"]["latency_s"] > 0 and resp.usage.completion_tokens > 0
    # Greedy: the server answers exactly as `qroute run` does with the same pair.
    run = srv.qroute("run", question, "--pair", resp.model, "--json", "-n", "16")
    assert run.returncode == 0, run.stderr
    assert resp.choices[0].message.content == json.loads(run.stdout)["text"]


@pytest.mark.real
def test_a_client_that_disconnects_mid_stream_stops_its_generation(tmp_path):
    """End to end: a streaming client that reads one chunk and closes the connection ends its
    answer early (logged as interrupted, far short of max_tokens), and the server answers the next
    request."""
    import sqlite3

    import httpx

    srv = smollm_server(tmp_path)
    home = srv.home
    body = {"model": "qroute/pair/smollm2-135m", "stream": True, "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]}
    try:
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data:") and '"content"' in line:
                    break  # one piece of text arrived: leave
        deadline = time.monotonic() + 120
        while 'outcome="interrupted"' not in _http(srv, "GET", "/metrics").text:
            assert time.monotonic() < deadline, "the server never ended the abandoned answer"
            time.sleep(0.2)
        after = srv.client().chat.completions.create(model="qroute/pair/smollm2-135m", max_tokens=4,
                                                     messages=[{"role": "user", "content": "Hi"}])
        assert after.choices[0].message.content is not None
    finally:
        srv.stop()
    (db,) = home.rglob("runs.db")
    rows = sqlite3.connect(db).execute("SELECT finish, output_tokens FROM runs ORDER BY id").fetchall()
    assert rows[0][0] == "interrupted" and 0 < rows[0][1] < 2000, rows


def test_help_does_not_load_the_server_libraries():
    code = ("import sys; from qroute_cli.cli import app, _register_commands; _register_commands();"
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']);"
            "assert r.exit_code == 0 and 'serve' in r.output, r.output;"
            "print([m for m in ('starlette', 'uvicorn', 'pydantic', 'prometheus_client') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
