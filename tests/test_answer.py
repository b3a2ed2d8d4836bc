"""answer(): one call routes, runs and records a prompt, on the fake backend through the real
pipeline (router with first-use calibration, pool, engine, run log)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from conftest import FAKE_CONFIG
from qroute_cli.answer import Answer, answer
from qroute_cli.generation.runner import run_prompt, user_messages
from qroute_cli.routing.router import Router
from qroute_cli.routing.runlog import Store
from qroute_cli.types import GenerationConfig

# The documented `qroute run --json` fields, in their order (README, "qroute run --json").
FIELDS = ["prompt", "text", "pair", "verifier", "drafter", "tokens", "prompt_tokens", "latency_s", "ttft_s",
          "tokens_per_s", "drafted", "accepted", "acceptance", "finish_reason", "threads", "endpoint", "failovers",
          "route"]
ROUTE_FIELDS = ["strategy", "budget_s", "chosen", "reason", "max_tokens", "predicted_latency_s", "overhead_ms",
                "candidates"]


@pytest.fixture
def store():
    s = Store()
    yield s
    s.close()


@pytest.fixture
def router(fake_pool, store):
    r = Router(fake_pool.registry, budget_s=100.0, store=store, pool=fake_pool,
               console=Console(file=open(os.devnull, "w")))
    yield r
    r.close()


def test_the_decision_carries_the_prediction_it_was_made_on(router, fake_pool):
    prompt = "who wrote hamlet?"
    result = answer(router, fake_pool, user_messages(prompt), GenerationConfig(max_tokens=24))
    d = result.decision
    assert result.outcome == "ok" and result.generation.text
    assert d.task == "qa" and d.prompt_chars == len(prompt)
    assert {e.pair for e in d.estimates} == set(fake_pool.registry.pairs)
    assert d.predicted is not None and d.predicted.pair == d.chosen
    assert d.predicted.tokens <= 24  # the run as it goes: at most max_tokens
    assert d.predicted_latency_s == d.predicted.latency_s
    assert d.to_json()["predicted_latency_s"] == round(d.predicted_latency_s, 4)
    for gone in ("_pending", "last_estimates", "last_predicted_latency_s"):
        assert not hasattr(router, gone)


def test_record_logs_the_prediction_of_the_decision_it_is_given(router, fake_pool, store):
    """Two decisions in a row, recorded in reverse order: each log row has its own decision's
    prediction, so nothing of the first call leaks into the second."""
    code = user_messages("Write a python function that reverses a list")
    qa = user_messages("who wrote hamlet?")
    first = router.decide(code, max_tokens=40)
    second = router.decide(qa, max_tokens=12)
    assert (first.task, second.task) == ("code", "qa")
    assert first.predicted.tokens != second.predicted.tokens
    cfg = GenerationConfig(max_tokens=12)
    router.record(second, run_prompt(fake_pool, fake_pool.registry.pair(second.chosen), qa, cfg), qa)
    router.record(first, run_prompt(fake_pool, fake_pool.registry.pair(first.chosen), code, cfg), code)
    rows = {r.task: r for r in store.recent(2)}
    for d in (first, second):
        row = rows[d.task]
        assert row.predicted_latency_s == pytest.approx(d.predicted_latency_s)
        assert row.predicted_tokens == pytest.approx(d.predicted.tokens)
        assert row.prompt_chars == d.prompt_chars and row.pair == d.chosen


def test_answer_records_the_run_once(router, fake_pool, store):
    result = answer(router, fake_pool, user_messages("who wrote hamlet?"), GenerationConfig(max_tokens=16))
    (row,) = store.recent(10)
    assert row.predicted_latency_s == pytest.approx(result.decision.predicted_latency_s)
    assert row.output_tokens == result.generation.stats.output_tokens
    answer(router, fake_pool, user_messages("who wrote hamlet?"), GenerationConfig(max_tokens=16), learn=False)
    assert len(store.recent(10)) == 1  # learn=False: neither logged nor learned from


def test_a_budget_cap_reaches_the_run(fake_pool, store):
    """A decision that caps the answer length runs with that cap, and predicts the capped run."""
    router = Router(fake_pool.registry, budget_s=0.06, store=store, pool=fake_pool,
                    console=Console(file=open(os.devnull, "w")))
    result = answer(router, fake_pool, user_messages("tell me everything about rivers"),
                    GenerationConfig(max_tokens=400))
    d = result.decision
    assert d.max_tokens is not None and d.max_tokens < 400
    assert result.generation.stats.output_tokens <= d.max_tokens
    assert d.predicted.tokens == pytest.approx(d.max_tokens)
    router.close()


def test_before_run_sees_the_decision_and_may_replace_the_messages(router, fake_pool, store):
    seen = []
    shorter = user_messages("hi")

    def before_run(decision, pair, cfg):
        seen.append((decision.chosen, pair.name, cfg.max_tokens))
        return shorter

    result = answer(router, fake_pool, user_messages("who wrote hamlet? " * 20), GenerationConfig(max_tokens=8),
                    before_run=before_run)
    assert seen == [(result.decision.chosen, result.pair.name, 8)]
    assert store.recent(1)[0].prompt_chars == len("who wrote hamlet? " * 20)  # as decided
    assert result.generation.stats.prompt_tokens < 40  # ran on the replaced messages


def test_interrupt_while_routing_gives_an_interrupted_answer(router, fake_pool, store, monkeypatch):
    def stuck(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(router, "decide", stuck)
    result = answer(router, fake_pool, user_messages("hello"), GenerationConfig(max_tokens=8))
    assert result.outcome == "interrupted" and result.generation is None and result.decision is None
    assert result.to_json("hello") == {"prompt": "hello", "error": "interrupted", "finish_reason": "interrupted"}
    assert store.recent(10) == []


def _interrupt_eval_after(monkeypatch, router, backend, calls: int) -> None:
    """The next answer's `calls`-th eval is cut by Ctrl-C (after calibration, which evals too)."""
    router.decide(user_messages("warm up"), max_tokens=8)
    real = backend.eval
    left = [calls]

    def eval_then_stop(tokens, logits="last"):
        if left[0] == 0:
            monkeypatch.setattr(backend, "eval", real)
            raise KeyboardInterrupt
        left[0] -= 1
        return real(tokens, logits)

    monkeypatch.setattr(backend, "eval", eval_then_stop)


def test_interrupt_during_generation_keeps_the_text_and_is_learned(router, fake_pool, store, monkeypatch):
    router.set_strategy("static:fake-big")
    _interrupt_eval_after(monkeypatch, router, fake_pool.get("fake-big"), 5)
    result = answer(router, fake_pool, user_messages("hello"), GenerationConfig(max_tokens=64))
    assert result.outcome == "interrupted" and result.generation.stats.output_tokens > 0
    assert result.to_json("hello")["finish_reason"] == "interrupted"
    assert store.recent(1)[0].finish == "interrupted"


def test_interrupt_before_the_first_token_is_not_learned(router, fake_pool, store, monkeypatch):
    router.set_strategy("static:fake-big")
    _interrupt_eval_after(monkeypatch, router, fake_pool.get("fake-big"), 0)
    result = answer(router, fake_pool, user_messages("hello"), GenerationConfig(max_tokens=64))
    assert result.outcome == "interrupted" and result.generation.stats.output_tokens == 0
    assert store.recent(10) == []  # its time is the user's, not the model's


def test_deadline_outcome(router, fake_pool):
    router.set_strategy("static:fake-big")
    result = answer(router, fake_pool, user_messages("tell me a long story"),
                    GenerationConfig(max_tokens=400, deadline_s=0.01))
    assert result.outcome == "deadline" and result.generation.finish_reason == "deadline"
    assert result.generation.text


def test_to_json_is_the_documented_shape(router, fake_pool):
    result = answer(router, fake_pool, user_messages("hello there"), GenerationConfig(max_tokens=20),
                    forced_pair="fake-big+small")
    obj = result.to_json("hello there")
    assert list(obj) == FIELDS and list(obj["route"]) == ROUTE_FIELDS
    s = result.generation.stats
    assert obj["pair"] == "fake-big+small" and obj["verifier"] == "fake-big" and obj["drafter"] == "fake-small"
    assert obj["tokens"] == s.output_tokens and obj["latency_s"] == round(s.latency_s, 4)
    assert obj["route"]["strategy"] == "forced" and obj["threads"] is None  # fakes have no threads
    assert isinstance(result, Answer) and json.loads(json.dumps(obj)) == obj


def test_qroute_run_json_is_answer_to_json():
    """The CLI writes exactly Answer.to_json: same fields, same order."""
    cmd = [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "run", "hello there",
           "--pair", "fake-big+ngram", "--json", "-n", "12"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert list(obj) == FIELDS and list(obj["route"]) == ROUTE_FIELDS
    assert obj["route"]["chosen"] == "fake-big+ngram" and obj["finish_reason"] in ("stop", "length")


def test_a_drafter_placed_apart_drafts_from_its_own_copy(fake_registry, store):
    """--draft-gpu-layers: a routed run and a forced one draft with the drafting copy; the
    verifier's copy of the same model stays for the pairs it verifies."""
    from qroute_cli.generation.pool import ModelPool

    with ModelPool(fake_registry, n_gpu_layers=4, draft_gpu_layers=0) as pool:
        router = Router(fake_registry, budget_s=100.0, store=store, pool=pool, console=Console(file=io.StringIO()))
        assert router.machine.draft_gpu_layers == 0
        result = answer(router, pool, user_messages("hello there"), GenerationConfig(max_tokens=12),
                        forced_pair="fake-big+small")
        assert result.outcome == "ok" and result.generation.stats.drafted > 0
        assert sorted(pool.loaded()) == ["fake-big", "fake-small (draft)"]
        answer(router, pool, user_messages("hello there"), GenerationConfig(max_tokens=12), forced_pair="fake-small")
        assert sorted(pool.loaded()) == ["fake-big", "fake-small", "fake-small (draft)"]
        router.close()
