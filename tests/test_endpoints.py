"""Remote endpoints, on the logic side: models.toml's [endpoints], the HTTP client and its errors,
the mapping of server timings, failover in answer(), and learning a remote pair's latency.

Every server here is real HTTP on 127.0.0.1 (tests/fake_openai.py replays llama-server's and
vLLM's event shapes); nothing is mocked. Tests against real servers running smollm2-135m are in
tests/test_endpoints_real.py.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from conftest import model_profile, qroute
from fake_openai import FakeOpenAI, free_port
from qroute_cli.answer import answer
from qroute_cli.config import load_registry
from qroute_cli.endpoints import Endpoints
from qroute_cli.endpoints.client import Client
from qroute_cli.endpoints.health import Health
from qroute_cli.endpoints.report import ServerReport, read_event
from qroute_cli.endpoints.run import run_remote
from qroute_cli.errors import ConfigError, EndpointError
from qroute_cli.generation.pool import ModelPool
from qroute_cli.generation.runner import user_messages
from qroute_cli.routing import remote
from qroute_cli.routing.router import Router
from qroute_cli.routing.runlog import Store
from qroute_cli.routing.scoring import PriorScorer
from qroute_cli.types import Endpoint, GenerationConfig, Message, Pair

HI = [Message("user", "hi")]


def write_config(path: Path, urls: dict[str, str], *, kinds: dict[str, str] | None = None, extra: str = "",
                 defaults: str = 'budget = "5s"', endpoint_keys: str | None = None) -> Path:
    """A registry of two remote models, each served by its own endpoint, and a local fake pair.
    `endpoint_keys` replaces the timeouts and kind each endpoint gets by default."""
    kinds = kinds or {}
    text = textwrap.dedent("""\
        include_builtin = false
        [defaults]
        """) + defaults + textwrap.dedent("""

        [models.big-remote]
        remote = true
        quality_prior = 0.9

        [models.small-remote]
        remote = true
        quality_prior = 0.5

        [models.fake-other]
        path = "fake://seed=7"
        quality_prior = 0.1
        n_ctx = 1024

        [pairs.fake-other]
        verifier = "fake-other"
    """)
    for (name, url), model in zip(urls.items(), ("big-remote", "small-remote")):
        keys = endpoint_keys if endpoint_keys is not None else (
            f'kind = "{kinds.get(name, "llama-server")}"\nconnect_timeout = 1\nread_timeout = 2\ndown_for = 30\n')
        text += f'\n[endpoints.{name}]\nurl = "{url}"\n' + keys + textwrap.dedent(f"""
            [pairs."{model}@{name}"]
            verifier = "{model}"
            endpoint = "{name}"
            model = "served-{model}"
        """)
    path.write_text(text + extra)
    return path


def remote_profile(pair: str, decode_s: float = 0.004, overhead_s: float = 0.001) -> remote.RemoteProfile:
    return remote.RemoteProfile(pair, "test", 0.0, 2000.0, decode_s, overhead_s, True, "2026-01-01T00:00:00+00:00")


def local_profile(reg):
    from qroute_cli.routing.latency import Profile, current_machine

    ident = reg.models["fake-other"].identity
    return Profile(current_machine(), {"fake-other": model_profile("fake-other", 0.003, identity=ident)})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers():
    with FakeOpenAI(style="llama-server", model="served-big-remote", reply="the big answer is here") as a, \
            FakeOpenAI(style="vllm", model="served-small-remote", reply="a small answer", draft=(6, 4)) as b:
        yield a, b


@pytest.fixture
def routed(tmp_path, servers):
    """(registry, router, pool, clock) over the two fake servers, with hand-made remote profiles."""
    a, b = servers
    reg = load_registry(write_config(tmp_path / "models.toml", {"a": a.url, "b": b.url}), include_user=False)
    clock = Clock()
    profiles = {"big-remote@a": remote_profile("big-remote@a"), "small-remote@b": remote_profile("small-remote@b")}
    router = Router(reg, budget_s=5.0, scorer=PriorScorer(reg), remote_profiles=profiles, profile=local_profile(reg),
                    endpoints=Endpoints(reg, health=Health(clock)))
    with ModelPool(reg) as pool:
        yield reg, router, pool, clock
    router.close()
    router.endpoints.close()


# -- models.toml ----------------------------------------------------------------------------


def test_endpoint_pairs_load_and_need_no_local_file(tmp_path, servers):
    from qroute_cli.models.cache import installed_pairs

    a, b = servers
    reg = load_registry(write_config(tmp_path / "m.toml", {"a": a.url + "/", "b": b.url}, kinds={"b": "openai"}),
                        include_user=False)
    pair = reg.pairs["big-remote@a"]
    assert pair.endpoint == "a" and pair.model == "served-big-remote" and pair.remote
    assert reg.endpoints["a"] == Endpoint("a", a.url, "llama-server", None, None, 1.0, 2.0, 30.0)  # no trailing /
    assert reg.endpoints["b"].kind == "openai"
    assert reg.models["big-remote"].remote and reg.pair_models(pair) == []
    assert {p.name for p in installed_pairs(reg)} == {"fake-other", "big-remote@a", "small-remote@b"}


BAD = {
    "unknown endpoint key": ('[endpoints.x]\nurl = "http://h:1"\nurll = "x"\n', "'endpoints.x.urll'"),
    "bad kind": ('[endpoints.x]\nurl = "http://h:1"\nkind = "tgi"\n', "'endpoints.x.kind'"),
    "no scheme": ('[endpoints.x]\nurl = "h:1"\n', "'endpoints.x.url'"),
    "no url": ('[endpoints.x]\nkind = "openai"\n', "'endpoints.x' has no url"),
    "key in place of a name": ('[endpoints.x]\nurl = "http://h:1"\napi_key_env = "sk-123 abc"\n', "'endpoints.x.api_key_env'"),
    "zero timeout": ('[endpoints.x]\nurl = "http://h:1"\nread_timeout = 0\n', "'endpoints.x.read_timeout'"),
    "boolean timeout": ('[endpoints.x]\nurl = "http://h:1"\ndown_for = true\n', "'endpoints.x.down_for'"),
    "unknown endpoint of a pair": ('[pairs.p]\nverifier = "big-remote"\nendpoint = "nope"\n', "'pairs.p.endpoint'"),
    "remote model run locally": ('[pairs.p]\nverifier = "big-remote"\n', "'pairs.p' runs locally"),
    "model name without endpoint": ('[pairs.p]\nverifier = "fake-other"\nmodel = "m"\n', "'pairs.p.model'"),
    "remote model with a file": ('[models.r]\nremote = true\npath = "x.gguf"\n', "'models.r' is remote"),
    "remote not a boolean": ('[models.r]\nremote = "yes"\n', "'models.r.remote' must be a bool"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_endpoint_config_names_the_file_and_key(tmp_path, case):
    extra, key = BAD[case]
    path = write_config(tmp_path / "models.toml", {}, extra=extra)
    with pytest.raises(ConfigError) as info:
        load_registry(path, include_user=False)
    assert str(path) in info.value.message and key in info.value.message
    assert info.value.exit_code == 2


def test_bad_endpoint_config_is_exit_2_with_one_line(tmp_path):
    path = write_config(tmp_path / "models.toml", {}, extra='[endpoints.x]\nurl = "http://h:1"\nkind = "tgi"\n')
    r = qroute("models", "list", config=path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'endpoints.x.kind'" in r.stderr and str(path) in r.stderr


# -- what a server reports ----------------------------------------------------------------


def test_llama_server_timings_map_to_stats():
    # The last event of a llama-server stream (tools/server/server-task.cpp, llama.cpp of 0.3.36).
    event = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
             "timings": {"cache_n": 7, "prompt_n": 30, "prompt_ms": 60.5, "prompt_per_token_ms": 2.0,
                         "predicted_n": 41, "predicted_ms": 400.0, "predicted_per_token_ms": 10.0,
                         "draft_n": 48, "draft_n_accepted": 33}}
    r = read_event(event, ServerReport())
    assert r == ServerReport(prompt_tokens=37, cached_tokens=7, completion_tokens=41, prefill_s=0.0605,
                             decode_s=0.4, drafted=48, accepted=33)
    assert r.timed


def test_vllm_speculative_fields_map_to_stats():
    # vLLM with --per-request-spec-decode-metrics summary: a usage event with metrics.
    event = {"choices": [], "usage": {"prompt_tokens": 11742, "completion_tokens": 35, "total_tokens": 11777,
                                      "prompt_tokens_details": {"cached_tokens": 9504}},
             "metrics": {"speculative_decoding": {"mean_acceptance_length": 1.23, "draft_acceptance_rate": 0.0775,
                                                  "acceptance_histogram": [39, 1, 0, 3], "num_spec_steps": 43,
                                                  "num_accepted_draft_tokens": 10, "num_draft_tokens": 129,
                                                  "num_spec_tokens": 3}}}
    r = read_event(event, ServerReport())
    assert r == ServerReport(prompt_tokens=11742, cached_tokens=9504, completion_tokens=35, drafted=129, accepted=10)
    assert not r.timed
    # OpenAI's own names for the same counts.
    usage = {"usage": {"prompt_tokens": 5, "completion_tokens": 9,
                       "completion_tokens_details": {"accepted_prediction_tokens": 6, "rejected_prediction_tokens": 2}}}
    assert read_event(usage, ServerReport()).drafted == 8 and read_event(usage, ServerReport()).accepted == 6


def test_nonsense_statistics_are_ignored_not_fatal():
    event = {"timings": {"prompt_n": "many", "prompt_ms": -1, "predicted_n": True, "predicted_ms": float("nan"),
                         "draft_n": 3, "draft_n_accepted": 9}, "usage": [1, 2], "metrics": "x"}
    assert read_event(event, ServerReport()) == ServerReport()


# -- one answer through an endpoint ------------------------------------------------------


def test_an_answer_streams_and_carries_the_servers_timings(servers):
    a, _ = servers
    a.draft = (12, 9)
    client = Client(Endpoint("a", a.url, kind="llama-server"))
    pieces = []
    gen = run_remote(client, Pair("p", "big-remote", endpoint="a", model="served-big-remote"),
                     [Message("system", "be brief"), Message("user", "hi")], GenerationConfig(max_tokens=50, seed=3,
                                                                                               stop=("END",)),
                     pieces.append)
    client.close()
    body = a.requests[-1]
    assert body["model"] == "served-big-remote" and body["stream"] is True and body["max_tokens"] == 50
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert body["seed"] == 3 and body["stop"] == ["END"] and body["stream_options"] == {"include_usage": True}
    assert "".join(pieces) == gen.text == "the big answer is here" and gen.finish_reason == "stop"
    s = gen.stats
    assert s.output_tokens == 5 and s.drafted == 12 and s.accepted == 9
    assert s.server_prefill_s == pytest.approx(s.prompt_tokens * 0.5 / 1000)
    assert s.server_decode_s == pytest.approx(4 * 4.0 / 1000)
    assert 0 < s.ttft_s <= s.latency_s


def test_max_tokens_ends_with_length(servers):
    a, _ = servers
    with Endpoints(load_registry_for(a)) as eps:
        gen = eps.run(Pair("p", "big-remote", endpoint="a"), HI, GenerationConfig(max_tokens=2))
    assert gen.text == "the big" and gen.finish_reason == "length" and gen.stats.output_tokens == 2


def load_registry_for(server, tmp=None) -> object:
    from qroute_cli.config import Registry

    return Registry(endpoints={"a": Endpoint("a", server.url, kind="llama-server", read_timeout_s=2.0)})


FAILURES = {
    "status:500": ("http", "answered HTTP 500: scripted failure 500"),
    "status:404": ("http", "answered HTTP 404"),
    "garbage": ("bad_response", "not JSON"),
    "drop": ("dropped", "dropped the connection"),
    "nofinish": ("dropped", "without a finish_reason"),
    "hang:5": ("timeout", "sent nothing for 0.5 s"),
}


@pytest.mark.parametrize("mode", list(FAILURES))
def test_a_failing_endpoint_is_one_clear_error(servers, mode):
    a, _ = servers
    a.script = [mode]
    client = Client(Endpoint("a", a.url, kind="llama-server", read_timeout_s=0.5))
    with pytest.raises(EndpointError) as info:
        run_remote(client, Pair("p", "big-remote", endpoint="a"), HI, GenerationConfig(max_tokens=50))
    client.close()
    kind, words = FAILURES[mode]
    exc = info.value
    assert exc.kind == kind and words in exc.message and exc.hint and exc.endpoint == "a"
    assert exc.message.startswith(f"Endpoint 'a' ({a.url})") and "\n" not in exc.message
    assert exc.exit_code == 4 and exc.endpoint_fault
    assert exc.shown == {"drop": 2, "nofinish": 5}.get(mode, 0)


def test_nothing_listening_is_refused():
    client = Client(Endpoint("gone", f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(EndpointError) as info:
        run_remote(client, Pair("p", "m", endpoint="gone"), HI, GenerationConfig())
    assert info.value.kind == "refused" and "refused the connection" in info.value.message


def test_a_missing_api_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("QROUTE_TEST_KEY", raising=False)
    with pytest.raises(EndpointError) as info:
        Client(Endpoint("k", "http://127.0.0.1:1", api_key_env="QROUTE_TEST_KEY"))
    assert info.value.exit_code == 2 and "$QROUTE_TEST_KEY" in info.value.message


def test_the_api_key_is_sent_as_a_bearer_token(servers, monkeypatch):
    import threading

    a, _ = servers
    seen = []
    monkeypatch.setenv("QROUTE_TEST_KEY", "s3cret")
    client = Client(Endpoint("a", a.url, api_key_env="QROUTE_TEST_KEY"))
    seen.append(client._http.headers["authorization"])
    client.close()
    assert seen == ["Bearer s3cret"] and threading.active_count() >= 1


def _wait_for(cond, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_a_hard_budget_stops_the_stream_and_closes_it(servers):
    a, _ = servers
    a.reply = " ".join(f"w{i}" for i in range(200))
    a.piece_delay_s = 0.02
    client = Client(Endpoint("a", a.url, kind="llama-server"))
    gen = run_remote(client, Pair("p", "m", endpoint="a"), HI, GenerationConfig(max_tokens=200, deadline_s=0.3))
    client.close()
    assert gen.finish_reason == "deadline" and 0 < gen.stats.output_tokens < 200
    assert _wait_for(lambda: a.disconnects == 1)  # the server saw the client go


def test_an_interrupt_from_on_text_stops_the_stream(servers):
    a, _ = servers
    a.reply = " ".join(f"w{i}" for i in range(100))
    a.piece_delay_s = 0.02
    pieces = []

    def on_text(text):
        pieces.append(text)
        if len(pieces) == 3:
            raise KeyboardInterrupt  # what `qroute serve` raises for a client that left

    client = Client(Endpoint("a", a.url))
    gen = run_remote(client, Pair("p", "m", endpoint="a"), HI, GenerationConfig(max_tokens=100), on_text)
    client.close()
    assert gen.finish_reason == "interrupted" and gen.text == "w0 w1 w2" and gen.stats.output_tokens == 3
    assert _wait_for(lambda: a.disconnects == 1)


# -- failover -------------------------------------------------------------------------------


def test_a_failing_endpoint_fails_over_to_the_next_pair(routed, servers):
    reg, router, pool, clock = routed
    a, b = servers
    a.script = ["status:503"]
    shown = []
    result = answer(router, pool, HI, GenerationConfig(max_tokens=20), shown.append)
    assert result.pair.name == "small-remote@b" and result.generation.text == "a small answer"
    assert "".join(shown) == "a small answer"
    assert [(f.pair, f.endpoint) for f in result.failovers] == [("big-remote@a", "a")]
    assert "HTTP 503" in result.failovers[0].error
    obj = result.to_json("hi")
    assert obj["endpoint"] == "b" and obj["failovers"][0]["pair"] == "big-remote@a"
    # Left out while down: the next prompt goes straight to b, a is not asked.
    asked = len(a.requests)
    assert "big-remote@a" not in {p.name for p in router.candidates()}
    assert answer(router, pool, HI, GenerationConfig(max_tokens=20)).pair.name == "small-remote@b"
    assert len(a.requests) == asked
    # The run log keeps a note; both answers were logged with their endpoint.
    notes = router.store.notes()
    assert len(notes) == 1 and notes[0][1] == "endpoint a" and "HTTP 503" in notes[0][2]
    assert [r.endpoint for r in router.store.recent()] == ["b", "b"]
    # After down_for seconds it is tried again.
    clock.now += 31
    assert answer(router, pool, HI, GenerationConfig(max_tokens=20)).pair.name == "big-remote@a"


def test_a_stopped_server_fails_over(routed, servers):
    reg, router, pool, clock = routed
    servers[0].stop()
    result = answer(router, pool, HI, GenerationConfig(max_tokens=20))
    assert result.pair.name == "small-remote@b" and "refused the connection" in result.failovers[0].error


def test_text_already_shown_is_not_answered_twice(routed, servers):
    reg, router, pool, clock = routed
    servers[0].script = ["drop"]
    shown = []
    with pytest.raises(EndpointError) as info:
        answer(router, pool, HI, GenerationConfig(max_tokens=20), shown.append)
    assert info.value.kind == "dropped" and "".join(shown) == "the big"
    assert router.endpoints.health.is_down("a")  # still marked down for the next prompt


def test_unshown_text_lets_the_next_pair_answer_whole(routed, servers):
    reg, router, pool, clock = routed
    servers[0].script = ["drop"]
    collected = []
    result = answer(router, pool, HI, GenerationConfig(max_tokens=20), collected.append, restart=True)
    assert result.pair.name == "small-remote@b" and result.generation.text == "a small answer"
    assert result.failovers[0].pair == "big-remote@a"


def test_a_pinned_pair_that_fails_is_an_error(routed, servers):
    reg, router, pool, clock = routed
    servers[0].script = ["status:500"]
    with pytest.raises(EndpointError):
        answer(router, pool, HI, GenerationConfig(max_tokens=20), forced_pair="big-remote@a")
    assert len(servers[1].requests) == 0


def test_a_bad_request_is_not_held_against_the_endpoint(routed, servers):
    reg, router, pool, clock = routed
    servers[0].script = ["status:400"]
    with pytest.raises(EndpointError) as info:
        answer(router, pool, HI, GenerationConfig(max_tokens=20))
    assert info.value.status == 400 and not router.endpoints.health.is_down("a")


def test_when_every_endpoint_is_down_the_error_says_so(tmp_path, servers):
    a, b = servers
    reg = load_registry(write_config(tmp_path / "m.toml", {"a": a.url, "b": b.url}), include_user=False)
    reg.pairs.pop("fake-other")
    profiles = {n: remote_profile(n) for n in ("big-remote@a", "small-remote@b")}
    a.stop(), b.stop()
    router = Router(reg, budget_s=5.0, scorer=PriorScorer(reg), remote_profiles=profiles)
    with ModelPool(reg) as pool, pytest.raises(EndpointError) as info:
        answer(router, pool, HI, GenerationConfig(max_tokens=20))
    router.close()
    assert "No pair can run" in info.value.message and "refused" in info.value.message
    assert info.value.exit_code == 4


# -- latency --------------------------------------------------------------------------------


def test_remote_latency_is_learned_from_server_timings(routed, servers):
    reg, router, pool, clock = routed
    a, _ = servers
    a.predicted_ms_per_token = 12.0  # three times the profile's 4 ms per token
    a.reply = " ".join(f"w{i}" for i in range(40))
    msgs = [Message("user", "hello there")]
    before = router.decide(msgs, max_tokens=40, forced_pair="big-remote@a").predicted.per_token_s
    for _ in range(6):
        answer(router, pool, msgs, GenerationConfig(max_tokens=40), forced_pair="big-remote@a")
    after = router.decide(msgs, max_tokens=40, forced_pair="big-remote@a").predicted
    assert before == pytest.approx(0.004)
    assert 0.008 < after.per_token_s < 0.014  # moved most of the way to 12 ms
    # b's factors are b's: nothing a taught moved them.
    assert router.decide(msgs, max_tokens=40, forced_pair="small-remote@b").predicted.per_token_s == pytest.approx(0.004)
    # The overhead is the wall clock less the server's time: never negative.
    assert router.online.overhead_for("a", 0.0) >= 0.0 and "a" in router.online.overhead
    # Replayed from the log, a fresh router learns the same.
    fresh = Router(reg, budget_s=5.0, scorer=PriorScorer(reg), remote_profiles=router.remote_profiles)
    assert fresh.decide(msgs, max_tokens=40, forced_pair="big-remote@a").predicted.per_token_s == \
        pytest.approx(after.per_token_s, rel=1e-6)
    fresh.close()


def test_calibration_reads_the_servers_speeds(tmp_path, servers):
    a, b = servers
    a.reply = " ".join(f"w{i}" for i in range(40))
    reg = load_registry(write_config(tmp_path / "m.toml", {"a": a.url, "b": b.url}), include_user=False)
    with Endpoints(reg) as eps:
        prof = remote.calibrate_pair(eps, reg.pairs["big-remote@a"])
        assert prof.timed_by_server and prof.decode_s == pytest.approx(0.004)
        assert prof.prefill_tps == pytest.approx(2000, rel=0.05) and prof.prefill_base_s < 0.01
        assert prof.identity == f"{a.url} served-big-remote"
        # vLLM reports no timings: measured by wall clock (the overhead is inside the prefill).
        prof_b = remote.calibrate_pair(eps, reg.pairs["small-remote@b"])
        assert not prof_b.timed_by_server and prof_b.overhead_s == 0 and prof_b.decode_s > 0
    prompts = [r["messages"][0]["content"] for r in a.requests]
    assert len(prompts) == 3 and len(set(prompts)) == 3  # fresh text each time: no prompt cache helps


def test_an_openai_endpoint_without_the_model_says_which_it_has(tmp_path, servers):
    a, b = servers
    reg = load_registry(write_config(tmp_path / "m.toml", {"a": a.url, "b": b.url}, kinds={"b": "openai"}),
                        include_user=False)
    b.model = "something-else"
    with Endpoints(reg) as eps, pytest.raises(EndpointError) as info:
        remote.calibrate_pair(eps, reg.pairs["small-remote@b"])
    assert "does not serve model 'served-small-remote'" in info.value.message
    assert 'model = "something-else"' in info.value.hint


def test_first_use_calibrates_and_saves(tmp_path, servers):
    a, b = servers
    reg = load_registry(write_config(tmp_path / "m.toml", {"a": a.url, "b": b.url}), include_user=False)
    b.stop()
    router = Router(reg, budget_s=5.0, scorer=PriorScorer(reg))
    with ModelPool(reg) as pool:
        result = answer(router, pool, HI, GenerationConfig(max_tokens=20))
    router.close()
    assert result.pair.name == "big-remote@a"  # b could not be measured: down, not fatal
    saved = remote.load_profiles()
    assert set(saved) == {"big-remote@a"} and saved["big-remote@a"].timed_by_server
    assert remote.profiles_path().exists()


def test_an_unreadable_profile_file_is_measured_again(qroute_home):
    remote.profiles_path().parent.mkdir(parents=True, exist_ok=True)
    remote.profiles_path().write_text("{not json")
    said = []
    assert remote.load_profiles(said.append) == {} and "measured again" in said[0]


def test_store_upgrades_and_keeps_notes(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        store.note("endpoint a", "down: refused")
        assert store.notes()[0][1:] == ("endpoint a", "down: refused")


# -- qroute serve ---------------------------------------------------------------------------


def test_serve_says_which_pair_answered_and_counts_per_endpoint(routed, servers):
    from starlette.testclient import TestClient

    from qroute_cli.serve.app import create_app

    reg, router, pool, clock = routed
    a, b = servers
    a.script = ["status:500"]
    chat = {"model": "qroute/auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    with TestClient(create_app(router, pool)) as http:
        r = http.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "small-remote@b" and body["choices"][0]["message"]["content"] == "a small answer"
        q = body["qroute"]
        assert q["endpoint"] == "b" and q["failovers"][0]["pair"] == "big-remote@a"
        assert q["drafted"] == 6 and q["accepted"] == 4  # vLLM's speculative counts
        health = http.get("/health").json()
        assert health["endpoints"]["a"]["state"] == "down" and "HTTP 500" in health["endpoints"]["a"]["error"]
        assert health["endpoints"]["b"] == {"state": "up"}
        # Streamed: b answers while a is down.
        with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["qroute"]["endpoint"] == "b"
        # Pinned to a pair whose endpoint fails: its error, not another pair's answer.
        a.script = ["status:500"]
        r = http.post("/v1/chat/completions", json={**chat, "model": "qroute/pair/big-remote@a"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
        metrics = http.get("/metrics").text
    assert 'qroute_upstream_failures_total{reason="failover",upstream="a"} 1.0' in metrics
    assert 'qroute_upstream_answers_total{pair="small-remote@b",upstream="b"} 2.0' in metrics
    assert 'qroute_upstream_failures_total{reason="http",upstream="a"} 1.0' in metrics  # the pinned one


# -- the command line -----------------------------------------------------------------------


def test_models_list_shows_endpoint_pairs_and_their_state(tmp_path, servers):
    a, _ = servers
    path = write_config(tmp_path / "m.toml", {"a": a.url, "b": f"http://127.0.0.1:{free_port()}"})
    r = qroute("models", "list", "--json", config=path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    eps = {e["name"]: e for e in data["endpoints"]}
    assert eps["a"]["state"] == "up" and eps["a"]["models"] == ["served-big-remote"]
    assert eps["b"]["state"] == "down" and "refused the connection" in eps["b"]["error"]
    assert {p["name"]: p["endpoint"] for p in data["pairs"]}["big-remote@a"] == "a"
    remote_model = next(m for m in data["models"] if m["name"] == "big-remote")
    assert remote_model["path"].startswith("remote")
    r = qroute("models", "list", config=path, env={"COLUMNS": "200"})
    assert r.returncode == 0 and "Pairs on endpoints" in r.stdout and "big-remote@a" in r.stdout
    assert "refused the connection" in r.stdout


def test_calibrate_an_endpoint_from_the_command_line(tmp_path, servers):
    a, _ = servers
    a.reply = " ".join(f"w{i}" for i in range(40))
    path = write_config(tmp_path / "m.toml", {"a": a.url, "b": f"http://127.0.0.1:{free_port()}"})
    r = qroute("calibrate", "--endpoint", "a", "--json", config=path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["big-remote@a"]["decode_s"] == pytest.approx(0.004)
    r = qroute("calibrate", "--endpoint", "b", config=path)
    assert r.returncode == 4 and "refused the connection" in r.stderr and "Traceback" not in r.stderr
    r = qroute("models", "pull", "big-remote", config=path)
    assert r.returncode == 2 and "is remote" in r.stderr


def test_the_readme_example_loads(tmp_path):
    """The models.toml of the README's section on remote endpoints is what the loader accepts."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Remote endpoints", 1)[1].split("\n## ", 1)[0]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "models.toml"
    path.write_text(example)
    reg = load_registry(path, include_user=False)
    assert set(reg.endpoints) == {"gpu-box", "cpu-box", "vllm"}
    assert reg.endpoints["vllm"].kind == "openai" and reg.endpoints["gpu-box"].api_key_env == "GPU_BOX_KEY"
    assert reg.endpoints["cpu-box"].down_for_s == 60 and reg.endpoints["cpu-box"].connect_timeout_s == 2
    remote_pairs = {n: p for n, p in reg.pairs.items() if p.remote}
    assert set(remote_pairs) == {"qwen2.5-7b+0.5b@gpu-box", "qwen2.5-coder-1.5b+ngram@cpu-box", "qwen2.5-7b@vllm"}
    assert reg.endpoints["vllm"].model_for(remote_pairs["qwen2.5-7b@vllm"]) == "Qwen/Qwen2.5-7B-Instruct"
    assert reg.models["qwen2.5-7b-instruct"].remote and not reg.models["qwen2.5-coder-1.5b"].remote
    # Every key the README lists for an endpoint is one the loader knows.
    from qroute_cli.config import _ENDPOINT_KEYS

    import re

    listed = section.split("Endpoint keys:", 1)[1].split("; a pair", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) - {"openai"} == set(_ENDPOINT_KEYS)  # openai: a kind


def test_chat_answers_through_an_endpoint_and_fails_over(routed, servers):
    from conftest import Screen
    from qroute_cli.chat import Chat

    reg, router, pool, clock = routed
    a, b = servers
    screen = Screen()
    router.console = screen.view.err  # as `qroute chat` wires it
    chat = Chat(pool, router, GenerationConfig(max_tokens=20), screen.view)
    assert chat.ask("hello").text == "the big answer is here"  # no local model was loaded for it
    assert pool.loaded() == []
    a.script = ["status:502"]
    assert chat.ask("and again").text == "a small answer"
    assert "HTTP 502" in screen.err
    # The second turn carried the first as context.
    assert [m["content"] for m in b.requests[-1]["messages"]] == ["hello", "the big answer is here", "and again"]
