"""Calibration measures through the Backend protocol: a timed fake, the fake pool, and smollm2."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pytest

from conftest import require_model
from qroute_cli.backends.fake import FakeBackend
from qroute_cli.calibrate import Plan, calibrate, measure_model
from qroute_cli.latency import current_machine
from qroute_cli.pool import ModelPool


class VirtualClock:
    """Time that moves only when the fake model 'computes': exact, whatever the machine load."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TimedFake(FakeBackend):
    """A fake whose eval costs `call_s` per call plus `token_s` per token: known ground truth."""

    def __init__(self, call_s: float, token_s: float, clock: VirtualClock | None = None, **kw) -> None:
        super().__init__(**kw)
        self.call_s, self.token_s, self.clock = call_s, token_s, clock

    def eval(self, tokens: Sequence[int], logits: str = "last") -> np.ndarray:
        cost = self.call_s + self.token_s * len(tokens)
        if self.clock is not None:
            self.clock.now += cost
        else:
            time.sleep(cost)
        return super().eval(tokens, logits)


def test_measurements_recover_known_costs(monkeypatch):
    import qroute_cli.calibrate as cal

    clock = VirtualClock()
    monkeypatch.setattr(cal.time, "perf_counter", clock.perf_counter)
    backend = TimedFake(call_s=0.004, token_s=0.0005, clock=clock, name="timed")
    plan = Plan(prefill_sizes=(16, 160), reps=2, decode_steps=5)
    calls = []
    prof = measure_model(backend, "timed", "id", plan, drafter=True, advance=calls.append)
    assert sum(calls) == plan.steps  # the progress bar ends exactly full
    assert 1 / prof.prefill_tps == pytest.approx(0.0005, rel=0.3)
    assert prof.prefill_base_s == pytest.approx(0.004, abs=0.003)
    assert prof.decode_s == pytest.approx(0.0045, rel=0.3)
    assert len(prof.verify_s) == 8
    assert prof.verify(1) == pytest.approx(0.004 + 2 * 0.0005, rel=0.3)
    assert prof.verify(8) == pytest.approx(0.004 + 9 * 0.0005, rel=0.3)
    assert prof.draft_token_s == pytest.approx(0.0045, rel=0.3)
    assert backend.tokens == []  # leaves the KV cache empty for the next user


def test_calibrate_through_pool_marks_drafters(fake_registry):
    with ModelPool(fake_registry) as pool:
        names = ["fake-big", "fake-small", "fake-other"]
        done = []
        prof = calibrate(pool, names, current_machine(), quick=True, on_model=done.append)
    assert done == names
    assert set(prof.models) == set(names)
    assert prof.models["fake-small"].draft_token_s is not None  # drafts for fake-big+small
    assert prof.models["fake-big"].draft_token_s is None
    assert all(m.quick and m.decode_s > 0 and m.prefill_tps > 0 for m in prof.models.values())
    assert prof.models["fake-big"].identity == "fake://seed=1"
    assert prof.ngram_s > 0


def test_quick_calibration_of_fakes_is_fast(fake_registry):
    t0 = time.perf_counter()
    with ModelPool(fake_registry) as pool:
        calibrate(pool, ["fake-big", "fake-small", "fake-other"], current_machine(), quick=True)
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.real
def test_real_model_calibration(smollm_pool):
    """A small plan on smollm2: real timings are sane and the cache is left empty."""
    require_model("smollm2-135m")
    backend = smollm_pool.get("smollm2-135m")
    plan = Plan(prefill_sizes=(8, 64), reps=1, decode_steps=4)
    prof = measure_model(backend, "smollm2-135m", "id", plan, drafter=True)
    assert 0.5 < 1 / prof.decode_s < 5000  # tokens/s of a 135M model on a (possibly busy) CPU
    assert prof.prefill_tps > 0 and prof.prefill_base_s >= 0
    assert all(v > 0 for v in prof.verify_s) and len(prof.verify_s) == 8
    assert prof.draft_token_s is not None and prof.draft_token_s > 0
    assert backend.tokens == []
