"""Calibration measures through the Backend protocol: a timed fake, the fake pool, and smollm2."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from rich.console import Console

from conftest import fake_profile, require_model
from qroute_cli.generation.backends.fake import FakeBackend
from qroute_cli.routing.calibrate import Plan, calibrate, measure_model
from qroute_cli.routing.latency import current_machine
from qroute_cli.generation.pool import ModelPool
from qroute_cli.types import Message


class VirtualClock:
    """Time that moves only when the fake model 'computes': exact, whatever the machine load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TimedFake(FakeBackend):
    """A fake whose eval costs `call_s` per call plus `token_s` per token on its own clock
    (calibration reads `backend.clock`): known ground truth."""

    def __init__(self, call_s: float, token_s: float, **kw) -> None:
        super().__init__(step_ms=call_s * 1000, token_ms=token_s * 1000, **kw)
        self.clock = VirtualClock()


def test_measurements_recover_known_costs():
    backend = TimedFake(call_s=0.004, token_s=0.0005, name="timed")
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


class BusySpellFake(TimedFake):
    """A TimedFake whose evals number `first .. first + length - 1` take 5x as long: another
    process took the core for a moment."""

    def __init__(self, first: int, length: int, **kw) -> None:
        super().__init__(**kw)
        self.spell = range(first, first + length)
        self.calls = 0

    def eval(self, tokens, logits="last"):
        self.calls += 1
        t0 = self.clock.now
        out = super().eval(tokens, logits)
        if self.calls in self.spell:
            self.clock.advance(4 * (self.clock.now - t0))
        return out


@pytest.mark.parametrize("first", range(8, 37, 2))  # after the warm-up and six prefills
def test_a_busy_spell_does_not_bend_the_verify_curve(first):
    """Batch sizes are timed in rounds, so two slow calls in a row touch two sizes once each
    and the median of three rounds ignores them; timing one size's repeats back to back would
    let the spell set that size's cost."""
    backend = BusySpellFake(first, 2, call_s=0.004, token_s=0.0005, name="busy")
    prof = measure_model(backend, "busy", "id", Plan(prefill_sizes=(16, 64), reps=3, decode_steps=6), drafter=False)
    for k in range(1, 9):
        assert prof.verify(k) == pytest.approx(0.004 + (k + 1) * 0.0005, rel=0.05)
    assert prof.decode_s == pytest.approx(0.0045, rel=0.05)


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


def test_a_drafter_placed_apart_is_a_second_copy_measured_and_drafted_by(fake_registry):
    """--draft-gpu-layers: the pool loads a drafting copy of the drafter (the verifier keeps
    its own), calibration measures both, and the pair's cost curve reads the drafting copy."""
    from dataclasses import replace

    from qroute_cli.routing.calibrate import QUICK, calibration_steps
    from qroute_cli.routing.latency import Profile, cost_curve, draft_prefill, missing_models

    pair = fake_registry.pair("fake-big+small")
    with ModelPool(fake_registry) as pool:
        assert pool.get("fake-small", draft=True) is pool.get("fake-small")  # placed alike: one copy
    machine = current_machine(gpu_layers=4, draft_gpu_layers=0)
    assert machine.key != current_machine(gpu_layers=4).key == current_machine(gpu_layers=4, draft_gpu_layers=4).key
    with ModelPool(fake_registry, n_gpu_layers=4, draft_gpu_layers=0) as pool:
        assert pool.get("fake-small", draft=True) is not pool.get("fake-small")
        assert sorted(pool.loaded()) == ["fake-small", "fake-small (draft)"]
        done = []
        names = ["fake-big", "fake-small"]
        prof = calibrate(pool, names, machine, quick=True, on_model=done.append)
    assert done == ["fake-big", "fake-small", "fake-small (draft)"]
    assert calibration_steps(fake_registry, names, machine, QUICK) == 3 * QUICK.steps
    assert calibration_steps(fake_registry, names, current_machine(), QUICK) == 2 * QUICK.steps
    assert prof.models["fake-small (draft)"].draft_token_s is not None
    assert missing_models(prof, fake_registry, [pair]) == []
    assert missing_models(prof.only(["fake-big", "fake-small"]), fake_registry, [pair]) == []  # copies kept
    without_copy = Profile(machine, {n: m for n, m in prof.models.items() if n != "fake-small (draft)"})
    assert missing_models(without_copy, fake_registry, [pair]) == ["fake-small"]
    # The drafting copy's costs are the ones the pair drafts by.
    slow = replace(prof.models["fake-small (draft)"], draft_token_s=0.5, prefill_base_s=2.0)
    prof.models["fake-small (draft)"] = slow
    assert cost_curve(prof, pair).draft_s == 0.5
    assert draft_prefill(prof, pair, 10) == pytest.approx(slow.prefill(10))
    same_place = Profile(current_machine(), prof.models)  # drafters placed alike: the model itself
    assert cost_curve(same_place, pair).draft_s == prof.models["fake-small"].draft_token_s
    again = Profile.from_json(json.loads(json.dumps(prof.to_json())))
    assert again.machine == machine and again.models["fake-small (draft)"] == slow


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


# -- where profiles are kept ------------------------------------------------------------


def _profile(machine, decode_s: float = 0.01):
    from qroute_cli.routing.latency import ModelProfile, Profile

    return Profile(machine, {"m": ModelProfile("m", "m", 0.01, 500.0, decode_s, (0.02,) * 8)})


def test_one_profile_per_setup_and_switching_back_finds_it(fake_registry):
    """Calibrating with other --threads or --gpu-layers never replaces another setup's profile."""
    from qroute_cli.routing.latency import current_machine, load_profile, save_profile, saved_profiles
    from qroute_cli.routing.router import Router

    setups = [current_machine(1), current_machine(2), current_machine(2, gpu_layers=8)]
    for i, m in enumerate(setups):
        save_profile(_profile(m, decode_s=0.01 * (i + 1)))
    assert len(saved_profiles()) == 3
    for i, m in enumerate(setups):
        assert load_profile(machine=m).models["m"].decode_s == pytest.approx(0.01 * (i + 1))

    # A router on 1 thread measures what its profile lacks; the 2-thread profiles stay as they were.
    before = {p: p.read_bytes() for p in saved_profiles() if load_profile(p).machine != setups[0]}
    with ModelPool(fake_registry, n_threads=1) as pool:
        router = Router(fake_registry, budget_s=5.0, pool=pool, console=Console(file=io.StringIO()))
        router.decide([Message("user", "hi")], max_tokens=5)
        router.close()
    assert {p: p.read_bytes() for p in before} == before
    assert set(load_profile(machine=setups[0]).models) == {"fake-big", "fake-small", "fake-other"}


def test_a_profile_measured_on_one_gpu_is_not_used_on_another(monkeypatch, tmp_path):
    """Two cloud machines can share a CPU model behind different GPUs: where layers are offloaded,
    the GPU's model is part of the setup. A CPU-only profile is written as before, without it."""
    from qroute_cli.routing import latency

    for i, model in enumerate(["NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"]):
        info = tmp_path / "gpus" / f"0000:0{i}:00.0" / "information"
        info.parent.mkdir(parents=True)
        info.write_text(f"Model: \t\t {model}\nIRQ:   33\nBus Type:\t PCIe\n")
    assert latency.gpu_model(tmp_path / "gpus") == "2x NVIDIA A100-SXM4-80GB, NVIDIA H200"
    assert latency.gpu_model(tmp_path / "none") == ""

    profiles = {}
    for gpu in ("NVIDIA H200", "NVIDIA L4"):
        monkeypatch.setattr(latency, "gpu_model", lambda gpu=gpu: gpu)
        machine = latency.current_machine(2, gpu_layers=-1)
        assert machine.gpu == gpu and gpu in machine.key
        profiles[gpu] = latency.save_profile(_profile(machine, decode_s=0.004 if "H200" in gpu else 0.02))
        assert latency.load_profile(machine=latency.current_machine(2, gpu_layers=-1)).machine.gpu == gpu
        cpu = latency.current_machine(2)
        assert cpu.gpu == "" and cpu == latency.current_machine(2)  # no offload: the GPU plays no part
    assert len(set(profiles.values())) == 2
    monkeypatch.setattr(latency, "gpu_model", lambda: "NVIDIA H200")
    assert latency.load_profile(machine=latency.current_machine(2, gpu_layers=-1)).models["m"].decode_s == 0.004
    assert "gpu" not in _profile(latency.current_machine(2)).to_json()["machine"]


def test_cpu_detail_tells_apart_cpus_of_one_name(tmp_path):
    from qroute_cli.routing.latency import cpu_detail

    block = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
             "model name\t: AMD EPYC\nstepping\t: 1\ncache size\t: {cache} KB\n\n")
    milan, genoa = tmp_path / "milan", tmp_path / "genoa"
    milan.write_text(block.format(n=0, model=1, cache=512) + block.format(n=1, model=1, cache=512))
    genoa.write_text(block.format(n=0, model=17, cache=1024))
    assert cpu_detail(milan) == "family 25 model 1 stepping 1, 512 KB cache"
    assert cpu_detail(genoa) == "family 25 model 17 stepping 1, 1024 KB cache"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\nCPU implementer\t: 0x41\n\n")
    assert cpu_detail(arm) == "" and cpu_detail(tmp_path / "missing") == ""


def test_a_profile_of_an_older_qroute_moves_to_its_setup():
    from qroute_cli import paths
    from qroute_cli.routing.latency import current_machine, load_profile

    legacy = paths.data_dir() / "profile.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(_profile(current_machine(3)).to_json()))
    other = paths.data_dir() / "profile.other-machine.json"
    other.write_text(json.dumps(_profile(current_machine(5)).to_json()))
    assert load_profile(machine=current_machine(3)) == _profile(current_machine(3))
    assert load_profile(machine=current_machine(5)) == _profile(current_machine(5))
    assert not legacy.exists() and not other.exists()


BAD_PROFILES = {
    "null": "null",
    "a list": "[]",
    "models as a list": '{"version": 1, "machine": {"cpu": "x", "threads": 1, "llama_cpp": "0"}, "models": []}',
    "no version": '{"models": []}',
    "zero speed": None,  # a real profile with prefill_tps = 0
    "not UTF-8": b"\xff\xfe{",
}


@pytest.mark.parametrize("case,where", [(case, "profile.json") for case in BAD_PROFILES]
                         + [("null", "this setup"), ("zero speed", "this setup")])
def test_a_bad_profile_is_one_warning_kept_aside_never_a_crash_loop(case, where, fake_registry):
    """Every later run used to crash until the file was deleted by hand."""
    import subprocess
    import sys

    from conftest import FAKE_CONFIG, ROOT
    from qroute_cli import paths
    from qroute_cli.routing.latency import current_machine, profile_path

    # profile.json: where qroute kept its one profile before profiles were kept per setup.
    path = paths.data_dir() / "profile.json" if where == "profile.json" else profile_path(current_machine())
    path.parent.mkdir(parents=True)
    content = BAD_PROFILES[case]
    if content is None:
        data = fake_profile(fake_registry).to_json()
        data["models"]["fake-big"]["prefill_tps"] = 0  # the router would divide by it
        content = json.dumps(data)
    raw = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(raw)
    env = dict(os.environ, QROUTE_MODELS=str(paths.data_dir().parent / "no-models"))
    cmd = [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "run", "hello", "-n", "5"]
    for attempt in range(2):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "Internal error" not in r.stderr
        assert ("cannot be used" in r.stderr) == (attempt == 0)  # said once, then measured anew
    kept = list(path.parent.glob(path.name + ".unusable-*"))
    assert [k.read_bytes() for k in kept] == [raw]  # the user's file is kept, byte for byte


def test_calibrate_keeps_a_profile_per_gpu_setup(tmp_path):
    import subprocess
    import sys

    from conftest import FAKE_CONFIG, ROOT

    env = dict(os.environ, QROUTE_MODELS=str(tmp_path / "no-models"))

    def qroute(*args):
        cmd = [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "calibrate", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)

    for setup in (["--threads", "1"], ["--threads", "1", "--gpu-layers", "4"]):
        assert qroute("--quick", "-m", "fake-big", *setup).returncode == 0
    shown = json.loads(qroute("--show", "--json", "--threads", "1", "--gpu-layers", "4").stdout)
    assert shown["machine"]["gpu_layers"] == 4 and shown["machine"]["threads"] == 1
    assert json.loads(qroute("--show", "--json", "--threads", "1").stdout)["machine"]["gpu_layers"] == 0
    r = qroute("--show", "--threads", "3")
    assert r.returncode == 1 and "2 for other setups" in r.stderr
    # Drafters placed apart: a profile of its own, with the drafter's drafting copy measured.
    r = qroute("--quick", "-m", "fake-small", "--threads", "1", "--gpu-layers", "4", "--draft-gpu-layers", "0")
    assert r.returncode == 0, r.stderr
    shown = json.loads(qroute("--show", "--json", "--threads", "1", "--gpu-layers", "4", "--draft-gpu-layers", "0").stdout)
    assert shown["machine"]["draft_gpu_layers"] == 0 and set(shown["models"]) == {"fake-small", "fake-small (draft)"}
    alike = json.loads(qroute("--show", "--json", "--threads", "1", "--gpu-layers", "4", "--draft-gpu-layers", "4").stdout)
    assert alike["machine"]["draft_gpu_layers"] is None and set(alike["models"]) == {"fake-big"}
