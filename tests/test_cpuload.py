"""Threads follow the machine's load: /proc readings, the choice, and the pool applying it."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from qroute_cli.generation import threads as cpuload
from qroute_cli.generation.threads import CpuLoad, others_cores, threads_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_others_cores_subtracts_own_time():
    tick = cpuload._TICK
    # 2 s apart: the machine was busy 3 s worth of ticks, this process 1 s of them.
    assert others_cores((0.0, 0, 0), (2.0, 3 * tick, 1 * tick)) == pytest.approx(1.0)
    assert others_cores((0.0, 0, 0), (2.0, tick, tick)) == 0.0
    assert others_cores((1.0, 0, 0), (1.0, tick, 0)) == 0.0  # no time passed


def test_threads_for_leaves_busy_cores():
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.3) == 2  # a little background noise keeps every core
    assert threads_for(2, 0.7) == 1
    assert threads_for(2, 3.0) == 1  # never below one
    assert threads_for(8, 2.2) == 6
    assert threads_for(4, None) == 4  # unknown load: every core


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _stat(user: int, system: int, idle: int, iowait: int = 0) -> str:
    return f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4\n"


def _pid_stat(utime: int, stime: int, name: str = "qroute (worker) x") -> str:
    return f"4242 ({name}) R 1 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} 0 0 20 0 3 0 100 0 0\n"


def test_proc_text_is_parsed_exactly():
    assert cpuload.busy_ticks(_stat(user=300, system=50, idle=1000, iowait=20)) == 350
    assert cpuload.busy_ticks("intr 1 2 3\n") is None
    assert cpuload.busy_ticks("") is None
    # A process name with spaces and parentheses does not shift the fields.
    assert cpuload.process_ticks(_pid_stat(utime=120, stime=30)) == 150
    assert cpuload.process_ticks("garbage") is None


class _Readings:
    """Scripted (clock, busy ticks, own ticks) readings: what /proc would have said."""

    def __init__(self, *readings):
        self.readings = list(readings)
        self.now = 0.0
        self.slept: list[float] = []

    def read(self):
        t, busy, own = self.readings.pop(0)
        self.now = t
        return busy, own

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)


def test_own_work_is_not_counted_as_others():
    tick = cpuload._TICK
    # Between the first answer and the next, this process used 1.5 cores for 2 s and the
    # machine's busy time grew by exactly that: nobody else ran.
    r = _Readings((0.0, 0, 0), (0.3, 0, 0), (2.3, 3 * tick, 3 * tick))
    load = CpuLoad(sample_s=0.3, clock=r.clock, sleep=r.sleep, read=r.read)
    assert load.others() == 0.0  # first call: a short sample of its own
    assert load.others() == 0.0  # own work between the calls is not the others'
    assert r.slept == [0.3]  # the second reading was fresh: no new sample needed


def test_others_are_measured_over_the_interval_since_the_last_reading():
    tick = cpuload._TICK
    r = _Readings((0.0, 0, 0), (0.5, tick // 2, 0),  # first sample: another process, one core
                  (2.5, 3 * tick, tick),  # 2 s later: 2.5 s busy, 1 s of it ours -> 0.75 cores
                  (60.0, 3 * tick, tick), (60.5, 3 * tick, tick))  # stale: sample again
    load = CpuLoad(sample_s=0.5, clock=r.clock, sleep=r.sleep, read=r.read)
    assert load.others() == pytest.approx(1.0)
    assert load.others() == pytest.approx(0.75)
    assert load.others() == 0.0 and r.slept == [0.5, 0.5]


def test_no_proc_means_unknown_load_and_every_core():
    load = CpuLoad(read=lambda: None, sleep=lambda s: None)
    assert load.others() is None
    assert threads_for(4, load.others()) == 4


@linux_only
def test_real_readings_count_this_process_exactly():
    """On the real /proc: the own-time reading is this process's CPU time, which no other
    process can change, and the machine was busy at least that long."""
    before, cpu0 = cpuload.proc_ticks(), time.process_time()
    _spin(0.4)
    after, cpu1 = cpuload.proc_ticks(), time.process_time()
    tick = cpuload._TICK
    own_s = (after[1] - before[1]) / tick
    assert own_s == pytest.approx(cpu1 - cpu0, abs=3 / tick + 0.02)
    assert after[0] - before[0] >= after[1] - before[1] - 3 * len(os.sched_getaffinity(0))


@linux_only
def test_a_busy_process_is_seen_and_its_core_left_to_it():
    """The real /proc readings: whatever share of a core a spinning child gets is counted."""
    child = multiprocessing.Process(target=_spin, args=(3.0,))
    child.start()
    try:
        time.sleep(0.2)
        load = CpuLoad(sample_s=0.6)
        child_before = cpuload.process_ticks(open(f"/proc/{child.pid}/stat").read())
        t0 = time.monotonic()
        others = load.others()
        seconds = time.monotonic() - t0
        child_after = cpuload.process_ticks(open(f"/proc/{child.pid}/stat").read())
    finally:
        child.terminate()
        child.join()
    child_cores = (child_after - child_before) / cpuload._TICK / seconds
    assert child_cores > 0.05, child_cores  # it ran
    assert others >= child_cores - 0.15, (others, child_cores)
    if child_cores > 0.8:  # it had a core of its own
        assert threads_for(2, others) == 1


class _Threaded:
    def __init__(self):
        self.threads = 2

    def set_threads(self, n):
        self.threads = n


class _Busy:
    def others(self):
        return 1.0


def test_pool_applies_threads_only_when_they_are_its_choice(fake_registry, monkeypatch):
    from qroute_cli.generation.pool import ModelPool

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    pool = ModelPool(fake_registry, cpu_load=_Busy())
    verifier, drafter = _Threaded(), _Threaded()
    assert pool.fit_threads([verifier, drafter, None]) == 1
    assert verifier.threads == drafter.threads == 1 and pool.last_threads == 1
    fixed = ModelPool(fake_registry, n_threads=2, cpu_load=_Busy())
    other = _Threaded()
    assert fixed.fit_threads([other]) is None and other.threads == 2  # --threads wins


@pytest.mark.parametrize("gpu_layers", [-1, 12])
def test_gpu_offload_keeps_automatic_threads(fake_registry, monkeypatch, gpu_layers):
    """Layers left on the CPU, and the sampling, still spin a thread per core: a busy core is
    left to its process with --gpu-layers too."""
    from qroute_cli.generation.pool import ModelPool

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    pool = ModelPool(fake_registry, n_gpu_layers=gpu_layers, cpu_load=_Busy())
    backend = _Threaded()
    assert pool.adaptive_threads and pool.fit_threads([backend]) == 1 and backend.threads == 1
