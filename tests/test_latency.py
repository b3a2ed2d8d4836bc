"""Latency model, profile, online estimates and the Router wired together (fake backend)."""

from __future__ import annotations

import io
import json
import math
import sys
import types
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import fake_profile, model_profile
from qroute_cli.routing import latency
from qroute_cli.errors import QrouteError
from qroute_cli.routing.latency import (
    Machine,
    ModelProfile,
    Profile,
    PRIOR_ACCEPTANCE,
    base_per_token,
    cost_curve,
    load_profile,
    save_profile,
)
from qroute_cli.routing.online import LogFactorFilter, OnlineEstimates
from qroute_cli.routing.router import Router, task_type
from qroute_cli.routing.scoring import PriorScorer
from qroute_cli.generation.runner import user_messages
from qroute_cli.routing.runlog import Store
from qroute_cli.types import Generation, Prediction, SpecStats


@pytest.fixture(autouse=True)
def no_real_models(tmp_path, monkeypatch):
    """The fake registry also lists the built-in models: hide their files so only fakes route."""
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


def fake_pairs(registry) -> list:
    return [p for p in registry.pairs.values() if p.name.startswith("fake")]


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=200)


# -- the cost model -----------------------------------------------------------------


def test_a_pairs_cost_curve_is_read_from_the_profile(fake_registry):
    profile = fake_profile(fake_registry)
    big, small = profile.models["fake-big"], profile.models["fake-small"]
    curve = cost_curve(profile, fake_registry.pair("fake-big+small"))
    assert curve.verify_s == (big.decode_s,) + big.verify_s  # a batch of 1 is a plain step
    assert curve.draft_s == small.draft_token_s
    assert curve.catchup_s == pytest.approx(small.verify_s[0] - small.decode_s)  # a batch of 2, not 1
    ngram = cost_curve(profile, fake_registry.pair("fake-big+ngram"))
    assert ngram.draft_s == profile.ngram_s and ngram.catchup_s == 0.0
    assert cost_curve(profile, fake_registry.pair("fake-big")) is None


@pytest.mark.parametrize("pair", ["fake-big+small", "fake-big+ngram"])
@pytest.mark.parametrize("acceptance", [0.05, 0.6, 0.95])
def test_the_latency_model_predicts_with_the_engines_rule(fake_registry, pair, acceptance):
    """A speculative pair's predicted time per token assumes the draft length the engine's
    rule picks on the pair's curve; for n-gram drafting, only the steps whose lookup finds a
    draft carry one, so its gain is diluted towards plain."""
    from qroute_cli.speculation import best_draft_len, seconds_per_token
    from qroute_cli.tuning import DRAFTING

    profile = fake_profile(fake_registry)
    p = fake_registry.pair(pair)
    curve = cost_curve(profile, p)
    per_token, k = base_per_token(profile, p, acceptance)
    rule_k, rule_s = best_draft_len(curve, acceptance, 8)
    assert k == rule_k
    plain = profile.models["fake-big"].decode_s
    if p.drafter == "ngram":
        assert per_token == pytest.approx(seconds_per_token(curve, k, acceptance, DRAFTING.ngram_coverage))
        assert rule_s <= per_token <= plain + curve.draft_s  # between always drafting and never
    else:
        assert per_token == pytest.approx(rule_s)
        assert per_token <= plain  # never slower than plain


def test_prefill_is_linear_with_fixed_cost():
    m = ModelProfile("m", "m", 0.05, 200.0, 0.01, (0.02,) * 8)
    assert m.prefill(100) == pytest.approx(0.55)
    assert m.prefill(300) - m.prefill(100) == pytest.approx(1.0)


# -- the profile file ---------------------------------------------------------------


def test_profile_round_trip_and_corruption(tmp_path):
    prof = Profile(Machine("cpu X", 4, "0.3.36"), {"m": model_profile("m", 0.01, draft=0.005)}, ngram_s=2e-5)
    path = save_profile(prof, tmp_path / "p.json")
    back = load_profile(path)
    assert back == prof
    assert load_profile(tmp_path / "none.json") is None
    path.write_text("{not json")
    with pytest.raises(ValueError):
        load_profile(path)
    data = prof.to_json()
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version"):
        load_profile(path)


def test_machine_key_has_cpu_threads_and_build():
    m = latency.current_machine(3)
    assert m.threads == 3 and m.cpu and m.llama_cpp
    assert m.key != latency.current_machine(5).key
    cpuinfo = Path("/proc/cpuinfo")  # Linux; macOS has none, and qroute asks platform there
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    if names:
        assert m.cpu == names[0]


def test_missing_models_follow_identity(fake_registry):
    prof = fake_profile(fake_registry)
    pairs = fake_pairs(fake_registry)
    assert latency.missing_models(prof, fake_registry, pairs) == []
    del prof.models["fake-small"]
    assert latency.missing_models(prof, fake_registry, pairs) == ["fake-small"]
    prof.models["fake-big"] = model_profile("fake-big", 0.01, identity="another file")
    assert set(latency.missing_models(prof, fake_registry, pairs)) == {"fake-big", "fake-small"}
    assert set(latency.missing_models(None, fake_registry, pairs[:1])) == {"fake-big"}


# -- online estimates ---------------------------------------------------------------


def test_log_factor_filter_learns_shared_and_local():
    f = LogFactorFilter()
    for _ in range(10):
        f.update("a", math.log(2.0))
    assert f.factor("a") == pytest.approx(2.0, rel=0.05)
    # Never observed, but the shared factor moved it most of the way: the machine is slower.
    assert 1.3 < f.factor("b") <= 2.05
    for _ in range(15):
        f.update("b", math.log(1.0))
    assert f.factor("b") == pytest.approx(1.0, rel=0.1)
    assert f.factor("a") > 1.5  # what is special about "a" stays


def test_margin_is_quantile_of_recent_errors_under_current_factors():
    from qroute_cli.routing.online import Residual

    o = OnlineEstimates(target_hit_rate=0.8)
    assert o.margin() == o.default_margin
    ratios = (0.9, 1.0, 1.1, 1.2, 1.5, 1.0, 1.0, 1.3, 1.4, 2.0)
    o.residuals.extend(Residual("p", "v", 0.0, 0.01, 100, x) for x in ratios)  # predicted 1.0 s each
    assert o.margin() == pytest.approx(float(np.quantile(ratios, 0.8)), rel=0.05)
    # Once the filter has learned that "p" runs 1.5x slower, the same runs need less slack.
    for _ in range(20):
        o.decode.update("p", math.log(1.5))
    assert o.margin() == 1.0
    o.residuals.clear()
    o.residuals.extend(Residual("q", "v", 0.0, 0.01, 100, 0.5) for _ in range(10))
    assert o.margin() == 1.0  # never below 1


def test_prompt_tokens_learn_line_and_cached_prefix():
    o = OnlineEstimates()
    assert o.prompt_tokens("v", 350) == pytest.approx(latency.TEMPLATE_TOKENS + 100)
    from qroute_cli.routing.online import LinearFit, RunningMean

    fit = o.chars.setdefault("v", LinearFit())
    for chars in (20, 100, 400, 900):
        fit.update(chars, 40 + chars / 5)  # 40 template tokens, 5 characters per token
    assert o.prompt_tokens("v", 500) == pytest.approx(140.0)
    o.cached["v"] = RunningMean(2, 60)  # 30 prompt tokens were reused on average
    assert o.prompt_tokens("v", 500) == pytest.approx(140.0 - 60 / 5, rel=0.01)


def test_acceptance_and_length_shrink_to_prior():
    o = OnlineEstimates()
    assert o.acceptance_for("p", "qa", 0.6) == (0.6, False)
    from qroute_cli.routing.online import BetaRate

    o.acceptance[("p", "*")] = BetaRate(90, 100)
    o.acceptance[("p", "code")] = BetaRate(10, 100)
    rate, learned = o.acceptance_for("p", "qa", 0.6)
    assert learned and 0.8 < rate < 0.9
    assert o.acceptance_for("p", "code", 0.6)[0] < 0.35


# -- the Router end to end on fake models ---------------------------------------------


def fake_generation(pair: str, latency_s: float, tokens: int, prompt_tokens: int, ttft: float) -> Generation:
    stats = SpecStats(prompt_tokens=prompt_tokens, output_tokens=tokens, ttft_s=ttft, latency_s=latency_s)
    return Generation(text="x" * tokens, tokens=tuple([1] * tokens), stats=stats, finish_reason="stop", pair=pair)


def simulate(registry, *, learn: bool, runs: int = 20, true_slow: float = 2.5, budget: float = 1.6,
             store_path=None):
    """Profile says 1x, the machine runs `true_slow` x slower. Returns per-run budget hits."""
    truth = fake_profile(registry, slow=true_slow)
    router = Router(registry, strategy="quality", budget_s=budget, profile=fake_profile(registry),
                    scorer=PriorScorer(registry, default_length=100), store=Store(store_path),
                    console=quiet_console())
    rng = np.random.default_rng(0)
    hits = []
    for i in range(runs):
        msgs = user_messages(f"question number {i} about things")
        d = router.decide(msgs, max_tokens=100)
        pair = registry.pairs[d.chosen]
        m = truth.models[pair.verifier]
        n_prompt = 30
        tokens = d.max_tokens or 100
        ttft = m.prefill(n_prompt) * rng.lognormal(0, 0.05)
        lat = ttft + (tokens - 1) * m.decode_s * rng.lognormal(0, 0.05)
        hits.append(lat <= budget)
        if learn:
            router.record(d, fake_generation(d.chosen, lat, tokens, n_prompt, ttft), msgs)
    router.close()
    return hits


def test_online_learning_recovers_budget_hit_rate(fake_registry, tmp_path):
    """A profile 2.5x too optimistic: the router misses at first and recovers after N prompts."""
    hits = simulate(fake_registry, learn=True)
    first_ok = hits.index(True)
    assert not hits[0]  # the wrong profile really does miss the budget
    assert first_ok <= 3, hits  # N: prompts until the first hit
    assert all(hits[first_ok:]), hits
    # Without learning the same router keeps missing: the recovery comes from the updates.
    assert sum(simulate(fake_registry, learn=False, store_path=tmp_path / "empty.db")) == 0


def test_learning_survives_restart(fake_registry):
    """Estimates are replayed from the store: a new Router starts where the last one stopped."""
    simulate(fake_registry, learn=True, runs=6)
    fresh = Router(fake_registry, budget_s=1.6, profile=fake_profile(fake_registry),
                   scorer=PriorScorer(fake_registry, default_length=100), console=quiet_console())
    d = fresh.decide(user_messages("question"), max_tokens=100)
    assert fresh.online.runs == 6
    assert d.chosen != "fake-big"  # it remembers that fake-big is too slow here
    fresh.close()


def test_a_route_over_budget_is_warned_of_except_in_the_bench(fake_registry):
    """A user whose budget no pair meets is told; the bench's sweep, which goes there on purpose,
    is not (strategies.fresh_router turns it off)."""
    from qroute_cli.evaluation import strategies

    def warnings(make) -> str:
        out = io.StringIO()
        router = make(console=Console(file=out, width=200))
        d = router.decide(user_messages("a question"), max_tokens=100)
        assert not any(c.fits for c in d.candidates)  # 1 ms: nothing fits
        router.close()
        return out.getvalue()

    kw = dict(budget_s=0.001, profile=fake_profile(fake_registry), scorer=PriorScorer(fake_registry, default_length=100))
    assert "Warning" in warnings(lambda **c: Router(fake_registry, store=Store(None), **kw, **c))
    with strategies.fresh_router(fake_registry, console=Console(file=io.StringIO()), **kw) as probe:
        assert probe.warn_over_budget is False
    assert "Warning" not in warnings(lambda **c: Router(fake_registry, store=Store(None), warn_over_budget=False, **kw, **c))


def test_missing_profile_is_measured_with_notice(fake_registry):
    out = io.StringIO()
    router = Router(fake_registry, budget_s=5.0, console=Console(file=out, width=200))
    d = router.decide(user_messages("hello"), max_tokens=50)
    assert "measuring now" in out.getvalue()
    assert latency.profile_path().exists()
    saved = load_profile()
    assert set(saved.models) == {"fake-big", "fake-small", "fake-other"}
    assert saved.models["fake-small"].draft_token_s is not None  # it drafts in fake-big+small
    assert d.overhead_ms > 0
    router.close()
    out2 = io.StringIO()
    Router(fake_registry, budget_s=5.0, console=Console(file=out2)).decide(user_messages("hi"), max_tokens=5)
    assert "measuring" not in out2.getvalue()  # measured once, reused after


def test_profile_of_another_setup_is_kept_and_this_one_measured(fake_registry):
    prof = fake_profile(fake_registry)
    prof.machine = Machine("Some Other CPU", 64, "0.0.1")
    save_profile(prof)
    out = io.StringIO()
    router = Router(fake_registry, budget_s=5.0, console=Console(file=out, width=300))
    router.decide(user_messages("hello"), max_tokens=10)
    assert "measuring now" in out.getvalue()
    assert load_profile().machine == latency.current_machine()
    assert load_profile(machine=prof.machine) == prof  # untouched: one profile per setup


def test_unreadable_profile_is_kept_aside_and_measured_again(fake_registry):
    latency.profile_path().parent.mkdir(parents=True, exist_ok=True)
    latency.profile_path().write_text("{ broken")
    out = io.StringIO()
    Router(fake_registry, budget_s=5.0, console=Console(file=out, width=300)).decide(user_messages("hi"), max_tokens=5)
    assert "cannot be used" in out.getvalue() and "measuring now" in out.getvalue()
    assert set(load_profile().models) == {"fake-big", "fake-small", "fake-other"}
    kept = list(latency.profile_path().parent.glob("*.unusable-*"))
    assert [k.read_text() for k in kept] == ["{ broken"]


def test_router_overhead_with_the_prior_scorer_is_small(fake_registry):
    """The router alone (prior scorer, no predictor); with the shipped ONNX predictor, see
    test_predict.py::test_routing_overhead_with_the_shipped_predictor."""
    router = Router(fake_registry, budget_s=1.0, profile=fake_profile(fake_registry),
                    scorer=PriorScorer(fake_registry), store=Store(), console=quiet_console())
    times = [router.decide(user_messages(f"prompt {i} " * 20), max_tokens=64).overhead_ms for i in range(50)]
    assert 0 < float(np.median(times)) < 5.0


class ScriptedScorer:
    """A trained-predictor stand-in: fixed per-model quality and length."""

    name = "scripted"

    def __init__(self, quality: dict, length: dict) -> None:
        self.quality, self.length = quality, length

    def predict(self, prompt: str) -> Prediction:
        return Prediction(self.quality, {}, self.length, scorer=self.name)


def test_model_drafter_reads_the_prompt_too(fake_registry):
    router = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry),
                    scorer=PriorScorer(fake_registry, default_length=50), store=Store(), console=quiet_console())
    d = router.decide(user_messages("x" * 700), max_tokens=50)
    est = {e.pair: e for e in d.estimates}
    assert est["fake-big"].draft_prefill_s == 0.0 and est["fake-big+ngram"].draft_prefill_s == 0.0
    # By hand, from the profile: n = TEMPLATE_TOKENS + 700 chars / 3.5 prompt tokens prefill in
    # n / 1000 s on fake-big and n / 2500 s on fake-small. At the prior acceptance 0.6, drafting
    # one token (0.004 s) plus a verify batch of one (0.011 s), plus the drafter's catch-up after
    # a fully accepted draft (0.6 x 0.0004 s), yields 1.6 tokens: 0.009525 s per token, better
    # than plain decoding (0.010 s) and than k = 2 ((0.020 + 0.36 x 0.0004) / 1.96 = 0.0103 s).
    n = latency.TEMPLATE_TOKENS + 200
    assert est["fake-big+small"].draft_prefill_s == pytest.approx(n / 2500, rel=0.1)
    assert est["fake-big+small"].draft_len == 1
    assert est["fake-big+small"].latency_s == pytest.approx(n / 1000 + n / 2500 + 50 * 0.009525)
    assert est["fake-big"].latency_s == pytest.approx(n / 1000 + 50 * 0.010)


def test_predictor_quality_and_length_drive_the_choice(fake_registry):
    scorer = ScriptedScorer({"fake-big": 0.2, "fake-small": 0.9, "fake-other": 0.5},
                            {"fake-big": 10, "fake-small": 10, "fake-other": 10})
    router = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), scorer=scorer,
                    store=Store(), console=quiet_console())
    d = router.decide(user_messages("hi"), max_tokens=500)
    assert d.chosen == "fake-small"
    lat = {c.pair: c.predicted_latency_s for c in d.candidates}
    scorer.length = {k: 100 for k in scorer.length}
    d2 = router.decide(user_messages("hi"), max_tokens=500)
    assert {c.pair: c.predicted_latency_s for c in d2.candidates}["fake-big"] > 5 * lat["fake-big"]


def test_predict_module_used_or_falls_back(fake_registry, monkeypatch):
    mod = types.ModuleType("qroute_cli.routing.predict")

    def broken(registry, path=None):
        raise QrouteError("predictor file is corrupt")

    mod.load_default = broken
    monkeypatch.setitem(sys.modules, "qroute_cli.routing.predict", mod)
    import qroute_cli.routing

    monkeypatch.setattr(qroute_cli.routing, "predict", mod, raising=False)
    out = io.StringIO()
    router = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), console=Console(file=out, width=300))
    assert isinstance(router.scorer, PriorScorer)
    assert "predictor is unavailable" in out.getvalue()
    scripted = ScriptedScorer({"fake-big": 0.1}, {})
    mod.load_default = lambda registry, path=None: scripted
    assert Router(fake_registry, budget_s=5.0).scorer is scripted


def test_task_type():
    assert task_type("def add(a, b): return a+b  -- add type hints") == "code"
    assert task_type("Tom has 3 apples and buys 4 more. How many apples does he have?") == "math"
    assert task_type("Write a story about a dragon") == "story"
    assert task_type("who wrote the iliad") == "qa"


def test_calibration_resets_speed_learning_but_keeps_lengths(fake_registry):
    """Runs timed before the latest calibration teach lengths, not speed factors."""
    simulate(fake_registry, learn=True, runs=6)  # timed 2.5x slower than the profile
    learned = Router(fake_registry, budget_s=1.6, profile=fake_profile(fake_registry), console=quiet_console(),
                     scorer=PriorScorer(fake_registry, default_length=100))
    learned.decide(user_messages("question"), max_tokens=100)
    assert learned.online.decode.factor(next(iter(learned.online.decode.index))) > 1.5
    learned.close()

    fresh_profile = fake_profile(fake_registry)
    stamp = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()  # after every run above
    fresh_profile.models.update({n: replace(m, measured_at=stamp) for n, m in fresh_profile.models.items()})
    later = Router(fake_registry, budget_s=1.6, profile=fresh_profile, console=quiet_console(),
                   scorer=PriorScorer(fake_registry, default_length=100))
    later.decide(user_messages("question"), max_tokens=100)
    assert later.online.runs == 6
    assert not later.online.decode.index and not later.online.prefill.index  # speed: from the new profile
    assert later.online.length  # answer lengths are still known
    later.close()


def test_trained_length_bias_is_learned_per_task(fake_registry):
    """A predictor that guesses code answers 8x too short is corrected after a few code runs."""
    scorer = ScriptedScorer({"fake-big": 0.9, "fake-small": 0.5, "fake-other": 0.5},
                            {"fake-big": 20, "fake-small": 20, "fake-other": 20})
    router = Router(fake_registry, strategy="static:fake-big", budget_s=50.0, profile=fake_profile(fake_registry),
                    scorer=scorer, store=Store(), console=quiet_console())
    code, qa = user_messages("write a python function that reverses a list"), user_messages("who wrote hamlet?")
    assert router.decide(code, max_tokens=400).estimate("fake-big").tokens == pytest.approx(20)  # the predictor as it is
    for _ in range(4):
        d = router.decide(code, max_tokens=400)
        router.record(d, fake_generation("fake-big", 2.0, 160, 30, 0.05), code)
    assert router.decide(qa, max_tokens=400).estimate("fake-big").tokens == pytest.approx(20)  # qa: untouched
    assert router.decide(code, max_tokens=400).estimate("fake-big").tokens > 100  # code: learned from 4 runs of 160
    router.close()


def test_set_strategy_switches_and_rejects_unknown(fake_registry):
    from qroute_cli.errors import UsageError

    router = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), store=Store(),
                    console=quiet_console())
    router.set_strategy("static:fake-other")
    assert router.decide(user_messages("hi"), max_tokens=10).chosen == "fake-other"
    assert router.strategy_text == "static:fake-other"
    with pytest.raises(UsageError):
        router.set_strategy("fastest-please")
    assert router.strategy_text == "static:fake-other"  # a bad name changes nothing
    router.close()


def test_saved_profile_drops_models_the_registry_no_longer_has(fake_registry):
    stale = fake_profile(fake_registry)
    stale.models["removed-model"] = model_profile("removed-model", 0.01)
    del stale.models["fake-other"]  # missing: the router measures it and saves
    save_profile(stale)
    router = Router(fake_registry, budget_s=5.0, console=quiet_console(), store=Store())
    router.decide(user_messages("hi"), max_tokens=5)
    router.close()
    assert set(load_profile().models) == {"fake-big", "fake-small", "fake-other"}


def test_a_capped_run_is_predicted_and_logged_as_capped(fake_registry):
    """When no pair fits and the answer is capped, the prediction logged is the capped run's."""
    store = Store()
    router = Router(fake_registry, budget_s=0.3, profile=fake_profile(fake_registry),
                    scorer=PriorScorer(fake_registry, default_length=400), store=store, console=quiet_console())
    msgs = user_messages("tell me everything about rivers")
    d = router.decide(msgs, max_tokens=400)
    assert d.max_tokens is not None and d.max_tokens < 400  # nothing fits 400 tokens in 0.3 s
    uncapped = d.estimate(d.chosen).latency_s
    assert d.predicted_latency_s < uncapped
    assert d.predicted_latency_s <= 0.3 + 1e-6
    router.record(d, fake_generation(d.chosen, 0.25, d.max_tokens, 10, 0.01), msgs)
    rec = store.recent(1)[0]
    assert rec.predicted_latency_s == pytest.approx(d.predicted_latency_s)
    assert rec.predicted_tokens == d.max_tokens
    router.close()


def test_the_decision_hands_the_run_its_cost_curve(fake_registry):
    """The chosen pair runs by the curve and acceptance it was predicted with."""
    profile = fake_profile(fake_registry)
    router = Router(fake_registry, budget_s=5.0, profile=profile, scorer=PriorScorer(fake_registry, default_length=50),
                    store=Store(), console=quiet_console())
    d = router.decide(user_messages("tell me a story"), max_tokens=50, forced_pair="fake-big+small")
    assert d.predicted.costs == cost_curve(profile, fake_registry.pair("fake-big+small"))
    assert d.predicted.acceptance == pytest.approx(0.6)
    assert d.estimate("fake-big").costs is None


@pytest.mark.parametrize("explain", [False, True])
def test_a_forced_plain_pair_is_predicted_only_when_explained(fake_registry, fake_pool, monkeypatch, explain):
    """Nothing in a forced plain pair's run follows a prediction: without --explain the
    predictor is not loaded (a one-shot `qroute run --pair` skips it), and the run is still
    logged and learned from; with --explain every candidate is predicted."""
    from qroute_cli.routing import router as router_mod

    loads = []
    monkeypatch.setattr(router_mod, "default_scorer",
                        lambda registry, warn, path=None: loads.append(1) or PriorScorer(registry, default_length=50))
    store = Store()
    router = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), store=store,
                    console=quiet_console(), pool=fake_pool, explain=explain)
    d = router.decide(user_messages("tell me a story"), max_tokens=50, forced_pair="fake-big")
    assert d.chosen == "fake-big" and d.strategy == "forced"
    assert len(loads) == int(explain)
    assert (d.predicted is not None) == explain and bool(d.candidates) == explain
    router.record(d, fake_generation("fake-big", 0.5, 40, 10, 0.01), user_messages("tell me a story"))
    rec = store.recent(1)[0]
    assert rec.scorer == ("prior" if explain else "none") and (rec.predicted_tokens is None) != explain
    assert router.online.length[("fake-big", rec.task)].n == 1  # learned from either way
    assert len(loads) == int(explain)  # recording loads nothing either
    router.close()


def test_a_forced_drafting_pair_drafts_by_its_learned_acceptance_without_the_scorer(fake_registry, fake_pool,
                                                                                     monkeypatch):
    """A one-shot `qroute run --pair P+drafter` with a profile never loads the trained scorer:
    it drafts by the priors (the fake pair has no per-task rate, so its drafter kind's), then
    by what its logged runs taught."""
    from qroute_cli.routing import router as router_mod

    loads = []
    monkeypatch.setattr(router_mod, "default_scorer",
                        lambda registry, warn, path=None: loads.append(1) or PriorScorer(registry, default_length=50))
    store, msgs = Store(), user_messages("tell me a story")
    first = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), store=store,
                   console=quiet_console(), pool=fake_pool)
    d = first.decide(msgs, max_tokens=50, forced_pair="fake-big+small")
    assert loads == [] and d.predicted.acceptance == pytest.approx(PRIOR_ACCEPTANCE["model"])
    assert set(fake_pool.loaded()) == set()  # the run loads the models, as without a prediction
    gen = fake_generation("fake-big+small", 0.5, 40, 10, 0.01)
    first.record(d, replace(gen, stats=replace(gen.stats, drafted=60, accepted=15, checked=60)), msgs)
    first.close()

    later = Router(fake_registry, budget_s=5.0, profile=fake_profile(fake_registry), store=store,
                   console=quiet_console(), pool=fake_pool)
    d = later.decide(msgs, max_tokens=50, forced_pair="fake-big+small")
    assert loads == []  # nor does the second run
    learned = later.online.acceptance_for("fake-big+small", d.task, PRIOR_ACCEPTANCE["model"])[0]
    assert d.predicted.acceptance == pytest.approx(learned) and learned < 0.5  # 15 of 60 drafts kept
    assert [e.pair for e in d.estimates] == ["fake-big+small"]
    later.record(d, gen, msgs)
    assert store.recent(1)[0].scorer == "prior"
    later.close()


def test_without_a_profile_a_forced_pair_loads_no_scorer(fake_registry, fake_pool, monkeypatch):
    from qroute_cli.routing import router as router_mod

    monkeypatch.setattr(router_mod, "default_scorer", lambda *a, **k: pytest.fail("the scorer was loaded"))
    monkeypatch.setattr(router_mod.Router, "_load_profile", lambda self: None)
    router = Router(fake_registry, budget_s=5.0, store=Store(), console=quiet_console(), pool=fake_pool)
    d = router.decide(user_messages("tell me a story"), max_tokens=50, forced_pair="fake-big+small")
    assert d.chosen == "fake-big+small" and d.predicted is None
    assert fake_pool.loaded() == []  # the run loads them, as before
    router.close()
