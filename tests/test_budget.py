"""Honest budgets: predictions at the thread count an answer gets, conservative lengths for task
types the predictor never saw, and the hard budget (--hard-budget) that stops generation."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace

import pytest
from rich.console import Console

from conftest import fake_profile, make_chat, qroute, require_model
from qroute_cli.routing import latency
from qroute_cli.generation.backends.fake import FakeBackend
from qroute_cli.generation.engine import generate
from qroute_cli.routing.latency import Machine, Profile
from qroute_cli.routing.router import UNSEEN_TASK_RUNS, Router
from qroute_cli.generation.runner import run_prompt, user_messages
from qroute_cli.routing.runlog import Store
from qroute_cli.types import Generation, GenerationConfig, Prediction, SpecStats


@pytest.fixture(autouse=True)
def only_fakes(tmp_path, monkeypatch):
    """Hide the real model files so routing weighs the fake pairs only."""
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=300)


def profile_with_threads(registry, threads: int) -> Profile:
    """The fake profile, as if measured with `threads` llama.cpp threads (any machine)."""
    prof = fake_profile(registry)
    return Profile(Machine("Test CPU", threads, "test"), prof.models, prof.ngram_s)


class ThreadsPool:
    """A pool stand-in that knows how many threads the next answer gets (and the last had)."""

    n_threads = None
    n_gpu_layers = 0
    draft_gpu_layers = 0

    def __init__(self, registry, threads: int) -> None:
        self.registry = registry
        self.threads = threads
        self.last_threads: int | None = None

    def next_threads(self) -> int:
        self.last_threads = self.threads  # as fit_threads would, once the answer runs
        return self.threads


class TaskScorer:
    """A trained-predictor stand-in that knows math, qa and story prompts only."""

    name = "scripted"
    tasks = frozenset({"math", "qa", "story"})

    def __init__(self, length: float = 20.0) -> None:
        self.length = length

    def predict(self, prompt: str) -> Prediction:
        models = ("fake-big", "fake-small", "fake-other")
        return Prediction({"fake-big": 0.9, "fake-small": 0.5, "fake-other": 0.4}, {},
                          {m: self.length for m in models}, scorer=self.name)


def generation(pair: str, latency_s: float, tokens: int, ttft: float = 0.01, finish: str = "stop") -> Generation:
    stats = SpecStats(prompt_tokens=30, output_tokens=tokens, ttft_s=ttft, latency_s=latency_s)
    return Generation(text="x" * tokens, tokens=(1,) * tokens, stats=stats, finish_reason=finish, pair=pair)


# -- threads -------------------------------------------------------------------------------


def test_prediction_uses_the_thread_count_the_answer_will_get(fake_registry):
    """Calibrated with 4 threads, run with 1 (other processes busy): every cost is predicted
    4x (llama.cpp's speed-up from threads is at most linear), and the reason says why."""
    profile = profile_with_threads(fake_registry, 4)
    estimates = {}
    for threads in (4, 1):
        router = Router(fake_registry, strategy="static:fake-big", budget_s=100.0, profile=profile,
                        scorer=TaskScorer(), store=Store(), console=quiet(), pool=ThreadsPool(fake_registry, threads))
        d = router.decide(user_messages("who wrote hamlet?"), max_tokens=64)
        estimates[threads] = (d.estimate("fake-big"), d)
        router.close()
    quiet_est, quiet_d = estimates[4]
    busy_est, busy_d = estimates[1]
    assert busy_est.per_token_s == pytest.approx(4 * quiet_est.per_token_s)
    assert busy_est.prefill_s == pytest.approx(4 * quiet_est.prefill_s)
    assert busy_d.predicted_latency_s == pytest.approx(4 * quiet_d.predicted_latency_s)
    assert "Predicted for 1 llama.cpp thread, fewer than the calibration had" in busy_d.reason
    assert "thread" not in quiet_d.reason


def test_speed_is_learned_against_the_threads_a_run_had(fake_registry):
    """Runs on 1 of 4 threads that took 4x the 4-thread profile teach no further slowdown."""
    router = Router(fake_registry, strategy="static:fake-big", budget_s=100.0,
                    profile=profile_with_threads(fake_registry, 4), scorer=TaskScorer(length=50),
                    store=Store(), console=quiet(), pool=ThreadsPool(fake_registry, 1))
    msgs = user_messages("who wrote hamlet?")
    # fake-big: 0.010 s per token and 1000 prompt tokens/s with 4 threads; 4x that on one.
    ttft = 30 / 1000 * 4
    for _ in range(3):
        d = router.decide(msgs, max_tokens=50)
        router.record(d, generation("fake-big", ttft + 49 * 0.010 * 4, 50, ttft=ttft), msgs)
    assert router.online.decode.factor("fake-big") == pytest.approx(1.0, abs=0.05)
    assert router.online.prefill.factor("fake-big") == pytest.approx(1.0, abs=0.05)
    router.close()


class _Load:
    def __init__(self, others: float) -> None:
        self.value = others

    def others(self) -> float:
        return self.value


class _Threaded:
    threads = 2

    def set_threads(self, n: int) -> None:
        self.threads = n


def test_pool_says_the_thread_count_it_then_applies(real_registry, fake_registry, monkeypatch):
    from qroute_cli.generation.pool import ModelPool

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    load = _Load(1.0)  # one core busy elsewhere
    pool = ModelPool(real_registry, cpu_load=load)  # built-in models: nothing is loaded to answer this
    assert pool.next_threads() == 1
    load.value = 0.0  # the load changes before the answer starts: the prediction still holds
    backend = _Threaded()
    assert pool.fit_threads([backend]) == 1 and backend.threads == 1
    assert pool.fit_threads([backend]) == 2  # no prediction pending: read the load afresh
    assert ModelPool(real_registry, n_threads=3).next_threads() == 3  # --threads
    assert ModelPool(fake_registry).next_threads() is None  # fakes have no threads


class BusyPool:
    """A real pool of fakes on a machine where other processes leave one core free."""

    n_threads = None
    n_gpu_layers = 0
    draft_gpu_layers = 0

    def __init__(self, registry) -> None:
        from qroute_cli.generation.pool import ModelPool

        self.inner = ModelPool(registry)
        self.registry = registry
        self.last_threads: int | None = None

    def get(self, name: str, draft: bool = False):
        return self.inner.get(name, draft=draft)

    def slot(self, name: str, draft: bool = False) -> str:
        return self.inner.slot(name, draft)

    def next_threads(self) -> int:
        return 1

    def fit_threads(self, backends) -> int:
        self.last_threads = 1
        return 1


def test_first_use_calibration_measures_with_the_threads_an_answer_gets(fake_registry, monkeypatch):
    """Calibrating a busy 4-core machine on first use measures on the one free core and says
    so in the profile, so an answer on one thread is not predicted 4x slower again."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    pool = BusyPool(fake_registry)
    router = Router(fake_registry, strategy="static:fake-big", budget_s=100.0, scorer=TaskScorer(),
                    store=Store(), console=quiet(), pool=pool)
    d = router.decide(user_messages("who wrote hamlet?"), max_tokens=32)
    assert router.profile.machine.threads == 4
    assert {m.threads for m in router.profile.models.values()} == {1}
    assert "thread" not in d.reason  # measured as it runs: nothing to scale
    assert d.estimate("fake-big").per_token_s == pytest.approx(router.profile.models["fake-big"].decode_s)
    router.close()
    again = Router(fake_registry, strategy="static:fake-big", budget_s=100.0, scorer=TaskScorer(),
                   store=Store(), console=quiet(), pool=pool)
    again.decide(user_messages("who wrote hamlet?"), max_tokens=32)
    assert {m.threads for m in again.profile.models.values()} == {1}  # kept in the saved profile
    again.close()
    pool.inner.close()


def test_profile_at_threads_follows_each_models_measured_threads():
    m = latency.ModelProfile("m", "m", 0.0, 1000.0, 0.01, (0.02,))
    prof = Profile(Machine("cpu", 4, "x"), {"full": m, "busy": replace(m, threads=1)})
    one = prof.at_threads(1)
    assert one.models["full"].decode_s == pytest.approx(0.04) and one.models["busy"].decode_s == pytest.approx(0.01)
    assert prof.at_threads(4).models["busy"].decode_s == pytest.approx(0.01)  # more threads: no speed-up assumed
    data = json.loads(json.dumps(prof.to_json()))
    assert Profile.from_json(data).models["busy"].threads == 1


# -- task types the predictor never saw -----------------------------------------------------


def test_unseen_task_type_is_predicted_at_max_tokens_and_says_so(fake_registry):
    router = Router(fake_registry, budget_s=100.0, profile=fake_profile(fake_registry), scorer=TaskScorer(length=20),
                    store=Store(), console=quiet())
    code = user_messages("Write a Python function that merges two sorted lists")
    d = router.decide(code, max_tokens=256)
    assert all(e.tokens == 256 for e in d.estimates)
    assert "conservative" in d.reason and "code" in d.reason
    qa = router.decide(user_messages("who wrote hamlet?"), max_tokens=256)
    assert all(e.tokens == pytest.approx(20) for e in qa.estimates)  # trained: as predicted
    assert "conservative" not in qa.reason
    # Once a few code answers are logged, their lengths replace the worst case.
    for _ in range(UNSEEN_TASK_RUNS):
        d = router.decide(code, max_tokens=256)
        router.record(d, generation(d.chosen, 1.0, 120), code)
    d = router.decide(code, max_tokens=256)
    assert "conservative" not in d.reason
    assert all(e.tokens == pytest.approx(120) for e in d.estimates)
    router.close()


def test_a_scorer_without_task_claims_is_taken_as_it_is(fake_registry):
    from qroute_cli.routing.scoring import PriorScorer

    router = Router(fake_registry, budget_s=100.0, profile=fake_profile(fake_registry),
                    scorer=PriorScorer(fake_registry, default_length=40), store=Store(), console=quiet())
    d = router.decide(user_messages("def add(a, b): return a + b"), max_tokens=256)
    assert d.estimate("fake-big").tokens == pytest.approx(40) and "conservative" not in d.reason
    router.close()


def test_predictor_metadata_names_its_task_types():
    from qroute_cli.routing.predict import trained_tasks

    meta = {"trained_on": {"per_dataset": {"gsm8k": 60, "nq": 60, "wp": 60}}}
    assert trained_tasks(meta) == {"math", "qa", "story"}
    assert trained_tasks({}) is None


def test_shipped_predictor_vouches_only_for_tasks_it_has_enough_prompts_of(fake_registry):
    """A task with a handful of training prompts is left out of the file's claims, so the
    router treats it as unseen (conservative lengths) until it has logged runs of it."""
    pytest.importorskip("onnxruntime")
    from predictor.train import MIN_TASK_PROMPTS
    from qroute_cli.routing.predict import DATASET_TASKS, load_default

    scorer = load_default(fake_registry)
    counts = scorer.meta["trained_on"]["per_dataset"]
    assert scorer.tasks == {DATASET_TASKS.get(d, d) for d, n in counts.items() if n >= MIN_TASK_PROMPTS}
    assert {"math", "qa", "story"} <= scorer.tasks


# -- the hard budget -----------------------------------------------------------------------


class StepClock:
    """Simulated time: every eval() of the backend below costs `step_s`."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        pass  # time moves per eval() call only (TimedFake), whatever the batch


class TimedFake(FakeBackend):
    """The fake backend on its own clock, so the deadline is reached at a known step."""

    def __init__(self, step_s: float = 0.1) -> None:
        super().__init__(name="timed", seed=3, eos_bias=-30.0)  # never ends on its own
        self.clock = StepClock(step_s)

    def eval(self, tokens, logits="last"):
        self.clock.now += self.clock.step_s
        return super().eval(tokens, logits)


def test_deadline_stops_generation_and_keeps_the_text():
    prompt = list(b"<user>tell me a long story\n<assistant>")
    full = generate(TimedFake(), prompt, GenerationConfig(max_tokens=40))
    assert full.finish_reason == "length" and len(full.tokens) == 40
    cut = generate(TimedFake(), prompt, GenerationConfig(max_tokens=40, deadline_s=1.05))
    assert cut.finish_reason == "deadline"
    assert 0 < len(cut.tokens) < 40
    assert cut.stats.latency_s <= 1.05  # the step that would have ended past it never began
    assert cut.tokens == full.tokens[: len(cut.tokens)]  # greedy: what was kept is the answer's start
    assert full.text.startswith(cut.text) and cut.text == bytes(cut.tokens).decode()


def test_a_deadline_already_past_keeps_the_first_token():
    """The prefill cannot be cut short; the token it yields is kept, nothing after it."""
    gen = generate(FakeBackend(seed=3, eos_bias=-30.0), list(b"hello"), GenerationConfig(max_tokens=40, deadline_s=0.0))
    assert gen.finish_reason == "deadline" and len(gen.tokens) == 1 and len(gen.text) == 1


def test_deadline_cut_answers_teach_speed_but_not_length(fake_registry):
    router = Router(fake_registry, strategy="static:fake-big", budget_s=100.0, profile=fake_profile(fake_registry),
                    scorer=TaskScorer(length=50), store=Store(), console=quiet())
    msgs = user_messages("who wrote hamlet?")
    d = router.decide(msgs, max_tokens=200)
    router.record(d, generation("fake-big", 0.5, 5, finish="deadline"), msgs)
    assert not router.online.length  # 5 tokens is where the deadline fell, not the answer's length
    assert router.online.decode.index  # its speed still counts
    router.close()


def test_run_hard_budget_json_record():
    r = qroute("run", "tell me a story", "--json", "-n", "50", "--budget", "1e-9s", "--hard-budget")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[0])
    assert set(obj) >= {"prompt", "text", "pair", "verifier", "drafter", "tokens", "prompt_tokens", "latency_s",
                        "ttft_s", "tokens_per_s", "drafted", "accepted", "acceptance", "finish_reason", "threads",
                        "route"}
    assert obj["finish_reason"] == "deadline" and obj["tokens"] == 1 and len(obj["text"]) <= 1
    assert {"strategy", "budget_s", "chosen", "reason", "max_tokens", "predicted_latency_s", "overhead_ms",
            "candidates"} <= set(obj["route"])
    assert obj["route"]["predicted_latency_s"] > 0
    soft = json.loads(qroute("run", "tell me a story", "--json", "-n", "50", "--budget", "1e-9s").stdout)
    assert soft["finish_reason"] != "deadline" and soft["tokens"] > 1  # without it the budget is only a target
    assert "--hard-budget" in qroute("run", "--help").stdout


def test_chat_hard_budget_command(fake_pool):
    from qroute_cli.chat import parse_command

    chat, screen = make_chat(fake_pool, max_tokens=30)
    chat.router.budget_s = 1e-9
    assert chat.ask("tell me a story").finish_reason != "deadline"
    chat.handle("/hard-budget on")
    assert chat.hard_budget and "Hard budget: on" in screen.err
    gen = chat.ask("and another one")
    assert gen.finish_reason == "deadline" and len(gen.tokens) == 1
    assert chat.history.turns[-1].finish == "deadline"  # the text so far is kept in the conversation
    chat.handle("/hard-budget maybe")
    assert "on or off" in screen.err
    assert parse_command("/hard-budget off").name == "hard-budget"


@pytest.mark.real
def test_deadline_on_a_real_model(smollm_pool):
    require_model("smollm2-135m")
    pair = smollm_pool.registry.pair("smollm2-135m")
    gen = run_prompt(smollm_pool, pair, user_messages("Write a long story about the sea."),
                     GenerationConfig(max_tokens=64, deadline_s=0.0))
    assert gen.finish_reason == "deadline" and len(gen.tokens) == 1


def test_profile_at_threads_scales_every_cost():
    m = latency.ModelProfile("m", "m", 0.1, 1000.0, 0.01, (0.02, 0.03), 0.005)
    prof = Profile(Machine("cpu", 2, "x"), {"m": m})
    one = prof.at_threads(1).models["m"]
    assert one.prefill(100) == pytest.approx(2 * m.prefill(100))
    assert one.decode_s == pytest.approx(0.02) and one.draft_token_s == pytest.approx(0.01)
    assert one.verify_s == pytest.approx((0.04, 0.06))
    assert prof.at_threads(2) is prof and prof.at_threads(None) is prof and prof.at_threads(8) is prof
