"""`qroute serve` answers pairs on remote endpoints side by side and local pairs one at a time.

Two fake OpenAI servers on 127.0.0.1 hold every request until the test releases them, so "in
flight at once" is shown by both servers holding requests together, never by a timing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from qroute_cli.config import load_registry
from qroute_cli.endpoints import Endpoints
from qroute_cli.errors import ConfigError
from qroute_cli.generation.pool import ModelPool
from qroute_cli.routing.router import Router
from qroute_cli.routing.runlog import RunRecord, Store
from qroute_cli.routing.scoring import PriorScorer
from qroute_cli.serve.app import Job, Worker
from qroute_cli.types import GenerationConfig, Message
from test_endpoints import local_profile, remote_profile
from test_endpoints import write_config as endpoint_config

HELD_S = 60.0  # how long a test waits for requests to arrive before it says they did not


def write_config(path: Path, urls: dict[str, str], max_concurrency: int | None = 2) -> Path:
    """Two remote models, one per endpoint (`max_concurrency` each), and a local fake pair."""
    keys = "connect_timeout = 1\nread_timeout = 120\n"
    if max_concurrency is not None:
        keys += f"max_concurrency = {max_concurrency}\n"
    return endpoint_config(path, urls, defaults="", endpoint_keys=keys)


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # never leave a server thread waiting


@pytest.fixture
def held_servers(release):
    with FakeOpenAI(model="served-big-remote", reply="the big answer", hold=release) as a, \
            FakeOpenAI(style="vllm", model="served-small-remote", reply="a small answer", hold=release) as b:
        yield a, b


@pytest.fixture
def worker(tmp_path, held_servers):
    a, b = held_servers
    reg = load_registry(write_config(tmp_path / "models.toml", {"a": a.url, "b": b.url}), include_user=False)
    profiles = {"big-remote@a": remote_profile("big-remote@a"), "small-remote@b": remote_profile("small-remote@b")}
    router = Router(reg, budget_s=60.0, scorer=PriorScorer(reg), remote_profiles=profiles, profile=local_profile(reg),
                    endpoints=Endpoints(reg))
    with ModelPool(reg) as pool:
        w = Worker(router, pool)
        yield w
        w.close()
    router.endpoints.close()


def job(prompt: str = "hi", **kwargs) -> Job:
    fields = dict(endpoint="chat", messages=[Message("user", prompt)], config=GenerationConfig(max_tokens=20),
                  strategy=None, budget_s=60.0, pair=None, hard_budget=False)
    return Job(**{**fields, **kwargs})


def test_requests_on_two_endpoints_are_in_flight_at_once(worker, held_servers, release):
    a, b = held_servers
    # Three routed prompts (all choose the better big-remote@a) and two pinned to b's pair.
    futures = [worker.submit(job(f"prompt {i}")) for i in range(3)]
    futures += [worker.submit(job(f"pinned {i}", pair="small-remote@b")) for i in range(2)]
    try:
        # Both servers hold two requests before either is released: four answers in flight.
        assert a.wait_held(2, HELD_S) and b.wait_held(2, HELD_S), (a.held, b.held)
    finally:
        release.set()
    rans = [f.result(timeout=HELD_S) for f in futures]
    assert [r.result.pair.name for r in rans] == ["big-remote@a"] * 3 + ["small-remote@b"] * 2
    assert [r.result.generation.text for r in rans] == ["the big answer"] * 3 + ["a small answer"] * 2
    assert a.most_held == 2 and b.most_held == 2  # a's third request waited for a free slot
    assert len(a.requests) == 3 and len(b.requests) == 2
    assert worker.router.store.count() == 5  # every answer learned from, from several threads
    assert sorted(r.endpoint for r in worker.router.store.recent()) == ["a"] * 3 + ["b"] * 2
    assert worker.pending == 0
    assert worker.router.budget_s == 60.0 and worker.router.strategy_text == "quality"  # restored


def test_local_requests_still_take_turns(worker, held_servers, release):
    release.set()
    order: list[tuple[int, str]] = []
    second_started = threading.Event()

    def local_job(i: int) -> Job:
        j = job(f"local {i}", pair="fake-other", config=GenerationConfig(max_tokens=8))

        def on_start(pair) -> None:
            order.append((i, "start"))
            if i == 1:
                second_started.set()

        def on_text(piece: str) -> None:
            if i == 0 and not order[-1][1] == "text":
                # Mid-answer: had the second local answer a thread of its own, it would start now.
                second_started.wait(2.0)
            order.append((i, "text"))

        j.on_start, j.on_text = on_start, on_text
        return j

    futures = [worker.submit(local_job(i)) for i in range(2)]
    rans = [f.result(timeout=HELD_S) for f in futures]
    assert all(r.result.pair.name == "fake-other" for r in rans)
    first_of_second = order.index((1, "start"))
    assert all(i == 0 for i, _ in order[:first_of_second]) and all(i == 1 for i, _ in order[first_of_second:])
    assert worker.router.store.count() == 2


def test_a_failover_from_endpoints_to_a_local_pair_joins_the_local_queue(worker, held_servers, release):
    a, b = held_servers
    release.set()
    a.script, b.script = ["status:503"], ["status:503"]
    threads: list[str] = []
    j = job("hi")
    j.on_start = lambda pair: threads.append(threading.current_thread().name)
    ran = worker.submit(j).result(timeout=HELD_S)
    assert ran.result.pair.name == "fake-other" and ran.result.generation.text
    assert [(f.pair, f.endpoint) for f in ran.result.failovers] == [("big-remote@a", "a"), ("small-remote@b", "b")]
    # Tried on a's thread, then b's, then answered on the one local thread.
    assert [t.rsplit("_", 1)[0] for t in threads] == ["qroute-a", "qroute-b", "qroute-answer"]
    assert [r.endpoint for r in worker.router.store.recent()] == [None]


def test_concurrent_http_requests_are_all_answered_and_logged(worker, held_servers, release):
    from starlette.testclient import TestClient

    from qroute_cli.serve.app import create_app

    a, b = held_servers
    n = 4
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    models = ["qroute/auto", "qroute/pair/small-remote@b"] * (n // 2)
    bodies: list[dict] = [None] * n  # type: ignore[list-item]
    with TestClient(create_app(worker.router, worker.pool)) as http:
        def ask(i: int) -> None:
            r = http.post("/v1/chat/completions", json={**chat, "model": models[i]})
            bodies[i] = r.json() if r.status_code == 200 else {"status": r.status_code, "body": r.text}

        clients = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in clients:
            t.start()
        try:
            assert a.wait_held(2, HELD_S) and b.wait_held(2, HELD_S), (a.held, b.held)
        finally:
            release.set()
        for t in clients:
            t.join(HELD_S)
        metrics = http.get("/metrics").text
    assert [body.get("model") for body in bodies] == ["big-remote@a", "small-remote@b"] * (n // 2), bodies
    assert [body["qroute"]["endpoint"] for body in bodies] == ["a", "b"] * (n // 2)
    assert worker.router.store.count() == n
    assert 'qroute_upstream_answers_total{pair="small-remote@b",upstream="b"} 2.0' in metrics


def test_the_learning_store_takes_appends_from_several_threads(tmp_path):
    store = Store(tmp_path / "runs.sqlite")  # opened in this thread, used from others
    errors: list[BaseException] = []

    def append(i: int) -> None:
        try:
            for k in range(25):
                store.append(RunRecord(ts=float(k), machine="m", prompt_hash=f"{i}-{k}", task="qa", prompt_chars=2,
                                       pair=f"p{i}", verifier="v", drafter="", strategy="quality", scorer="prior",
                                       observed_latency_s=0.1, ttft_s=0.01, prompt_tokens=3, output_tokens=4))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.count() == 100 and len(store.recent()) == 100
    store.close()


@pytest.mark.parametrize("value, accepted", [("4", True), ("1", True), ("0", False), ("-2", False),
                                             ("true", False), ("2.5", False), ('"4"', False)])
def test_max_concurrency_is_validated(tmp_path, value, accepted):
    path = tmp_path / "models.toml"
    write_config(path, {"a": "http://127.0.0.1:9"}, max_concurrency=None)
    path.write_text(path.read_text().replace('read_timeout = 120\n', f'read_timeout = 120\nmax_concurrency = {value}\n'))
    if accepted:
        assert load_registry(path, include_user=False).endpoints["a"].max_concurrency == int(value)
        return
    with pytest.raises(ConfigError) as info:
        load_registry(path, include_user=False)
    assert "'endpoints.a.max_concurrency'" in info.value.message and str(path) in info.value.message


def test_max_concurrency_defaults_to_four(tmp_path):
    path = write_config(tmp_path / "models.toml", {"a": "http://127.0.0.1:9"}, max_concurrency=None)
    assert load_registry(path, include_user=False).endpoints["a"].max_concurrency == 4
