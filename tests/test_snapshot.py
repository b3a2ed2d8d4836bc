"""The learned estimates kept beside the store (routing/snapshot.py): a start folds only the
runs logged since, and learns exactly what a fold of the whole log learns."""

from __future__ import annotations

import io
import json
import random
import time
from dataclasses import replace

import pytest
from rich.console import Console

from conftest import fake_profile
from qroute_cli.generation.runner import user_messages
from qroute_cli.routing import router as router_module
from qroute_cli.routing import snapshot
from qroute_cli.routing.online import LogFactorFilter, OnlineEstimates
from qroute_cli.routing.remote import RemoteProfile
from qroute_cli.routing.router import Router
from qroute_cli.routing.runlog import RunRecord, Store
from qroute_cli.routing.scoring import PriorScorer


@pytest.fixture(autouse=True)
def no_real_models(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


def log_runs(store: Store, registry, machine: str, n: int, seed: int) -> None:
    """`n` varied runs of the fake pairs: drafted and plain, four task types, some timed
    before a prediction existed, some cut short."""
    rng = random.Random(seed)
    pairs = [p for p in registry.pairs.values() if p.name.startswith("fake")]
    for _ in range(n):
        pair = rng.choice(pairs)
        tokens = rng.randint(2, 200)
        drafted = rng.randint(0, tokens) if pair.drafter != "none" else 0
        store.append(RunRecord(
            ts=time.time(), machine=machine, prompt_hash="h", task=rng.choice(["qa", "math", "story", "code"]),
            prompt_chars=rng.randint(10, 900), pair=pair.name, verifier=pair.verifier, drafter=pair.drafter,
            strategy="quality", scorer=rng.choice(["onnx", "prior"]), observed_latency_s=rng.uniform(0.2, 9.0),
            ttft_s=rng.uniform(0.01, 0.2), prompt_tokens=rng.randint(20, 300), output_tokens=tokens,
            prompt_cached=rng.randint(0, 15), drafted=drafted, accepted=rng.randint(0, drafted), checked=drafted,
            finish=rng.choice(["stop", "length", "interrupted", "deadline"]),
            predicted_latency_s=rng.uniform(0.2, 9.0) if rng.random() < 0.8 else None,
            predicted_tokens=rng.uniform(5, 200) if rng.random() < 0.8 else None,
            predicted_acceptance=rng.uniform(0.2, 0.9) if drafted else None,
        ))


def started(registry, profile, store: Store) -> Router:
    """A Router that has folded the store (its first decision does)."""
    router = Router(registry, budget_s=5.0, profile=profile, scorer=PriorScorer(registry), store=store,
                    console=Console(file=io.StringIO()))
    router.decide(user_messages("hello"), max_tokens=16)
    return router


@pytest.fixture
def folds(monkeypatch):
    """The `after` of every read of the store's runs, and how many runs it returned."""
    seen: list[tuple[int, int]] = []
    tail = Store.tail

    def counting(self, limit=2000, machine=None, after=0):
        out = tail(self, limit, machine, after)
        seen.append((after, len(out)))
        return out

    monkeypatch.setattr(Store, "tail", counting)
    return seen


def test_a_start_folds_only_new_runs_and_learns_what_a_full_fold_does(fake_registry, tmp_path, folds):
    profile, path = fake_profile(fake_registry), tmp_path / "runs.db"
    store = Store(path)
    machine = started(fake_registry, profile, store).machine.key
    log_runs(store, fake_registry, machine, 80, seed=1)
    first = started(fake_registry, profile, store)  # folds all 80 and keeps them
    assert folds[-1] == (0, 80) and snapshot.snapshot_path(path).exists()

    log_runs(store, fake_registry, machine, 7, seed=2)
    folds.clear()
    later = started(fake_registry, profile, store)
    assert folds == [(80, 7)]  # only the runs after the kept ones were read
    snapshot.snapshot_path(path).unlink()
    full = started(fake_registry, profile, store)
    assert folds[-1] == (0, 87)
    assert later.online.runs == full.online.runs == 87 > first.online.runs
    assert later.online.state() == full.online.state()
    msgs = user_messages("write a story about a lighthouse")
    chose, should = later.decide(msgs, max_tokens=64), full.decide(msgs, max_tokens=64)
    assert chose.estimates == should.estimates and chose.chosen == should.chosen


def test_kept_estimates_are_ignored_when_what_they_learned_from_changed(fake_registry, tmp_path, folds):
    profile, path = fake_profile(fake_registry), tmp_path / "runs.db"
    store = Store(path)
    log_runs(store, fake_registry, started(fake_registry, profile, store).machine.key, 60, seed=3)
    started(fake_registry, profile, store)
    kept = snapshot.snapshot_path(path)
    assert kept.exists()

    recalibrated = replace(profile, models={**profile.models,
                                            "fake-big": replace(profile.models["fake-big"], decode_s=0.02)})
    folds.clear()
    started(fake_registry, recalibrated, store)
    assert folds == [(0, 60)]  # another profile: a fold from the store, kept anew for it

    kept.write_text("{ not json")
    folds.clear()
    assert started(fake_registry, recalibrated, store).online.runs == 60
    assert folds == [(0, 60)]
    assert json.loads(kept.read_text())["last_id"] > 0  # rewritten whole

    store.reset()  # the runs it learned from are gone: so is what they taught
    folds.clear()
    assert started(fake_registry, recalibrated, store).online.runs == 0
    assert folds == [(0, 0)]


def test_more_new_runs_than_a_fold_reads_start_over(fake_registry, tmp_path, folds, monkeypatch):
    monkeypatch.setattr(router_module, "ROUTING", replace(router_module.ROUTING, replay_runs=70))
    profile, path = fake_profile(fake_registry), tmp_path / "runs.db"
    store = Store(path)
    machine = started(fake_registry, profile, store).machine.key
    log_runs(store, fake_registry, machine, 60, seed=4)
    started(fake_registry, profile, store)
    log_runs(store, fake_registry, machine, 75, seed=5)
    folds.clear()
    router = started(fake_registry, profile, store)
    assert folds == [(60, 70), (0, 70)]  # a gap would be lost: the latest 70, from scratch
    assert router.online.runs == 70


def test_estimates_round_trip_through_json_exactly():
    online = OnlineEstimates()
    for i in range(12):
        online.decode.update(f"pair{i % 3}", 0.1 * i - 0.4)
        online.prefill.update("v", -0.2)
    online.remote_decode["box"] = LogFactorFilter()
    online.remote_decode["box"].update("far", 0.5)
    from qroute_cli.routing.online import BetaRate, ForgettingMean, LinearFit, LogCorrection, Residual, RunningMean

    online.acceptance[("p", "qa")] = BetaRate(3.5, 7.25)
    online.length[("v", "*")] = RunningMean(4, 310.0)
    online.length_bias[("v", "code")] = LogCorrection(mean=1.3)
    online.chars["v"] = LinearFit(3, 30, 60, 400, 800)
    online.overhead["box"] = ForgettingMean(0.3, 2.0)
    online.residuals.append(Residual("p", "v", 0.1, 0.02, 50.0, 1.4, endpoint="box", overhead_s=0.05))
    online.runs = 12
    back = OnlineEstimates.from_state(json.loads(json.dumps(online.state())))
    assert back.state() == online.state()
    assert back.decode.factor("pair1") == online.decode.factor("pair1")
    assert back.margin() == online.margin()
    assert back.residuals.maxlen == online.residuals.maxlen


def test_fingerprint_follows_what_the_fold_depends_on(fake_registry):
    profile = fake_profile(fake_registry)
    key = snapshot.fingerprint("m", profile, None, fake_registry)
    assert key == snapshot.fingerprint("m", profile, {}, fake_registry)
    assert key != snapshot.fingerprint("other", profile, None, fake_registry)
    assert key != snapshot.fingerprint("m", None, None, fake_registry)
    remote = {"far": RemoteProfile("far", "http://127.0.0.1:1 m", 0.01, 900.0, 0.02, 0.03, True, "t")}
    assert key != snapshot.fingerprint("m", profile, remote, fake_registry)
    fewer = replace(fake_registry, pairs={n: p for n, p in fake_registry.pairs.items() if n != "fake-other"})
    assert key != snapshot.fingerprint("m", profile, None, fewer)
