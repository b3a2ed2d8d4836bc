"""Threads follow the machine's load: /proc readings, the choice, and the pool applying it."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time

import pytest

from qroute_cli import cpuload
from qroute_cli.cpuload import CpuLoad, others_cores, threads_for

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


@linux_only
def test_a_busy_process_is_seen_and_its_core_left_to_it():
    """The real /proc readings: a spinning child process shows up as about one core."""
    quiet = CpuLoad(sample_s=0.3).others()
    assert quiet is not None and quiet >= 0.0
    child = multiprocessing.Process(target=_spin, args=(3.0,))
    child.start()
    try:
        time.sleep(0.3)
        busy = CpuLoad(sample_s=0.5).others()
    finally:
        child.terminate()
        child.join()
    assert busy > quiet + 0.5, (quiet, busy)
    assert threads_for(2, busy) == 1


@linux_only
def test_own_work_is_not_counted_as_others():
    load = CpuLoad(sample_s=0.3)
    background = load.others()  # whatever else the machine is doing
    _spin(0.5)  # this process keeps a core busy between two readings
    assert load.others() < background + 0.5


class _Threaded:
    def __init__(self):
        self.threads = 2

    def set_threads(self, n):
        self.threads = n


class _Busy:
    def others(self):
        return 1.0


def test_pool_applies_threads_only_when_they_are_its_choice(fake_registry, monkeypatch):
    from qroute_cli.pool import ModelPool

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    pool = ModelPool(fake_registry)
    pool._cpu_load = _Busy()
    verifier, drafter = _Threaded(), _Threaded()
    assert pool.fit_threads([verifier, drafter, None]) == 1
    assert verifier.threads == drafter.threads == 1 and pool.last_threads == 1
    fixed = ModelPool(fake_registry, n_threads=2)
    fixed._cpu_load = _Busy()
    other = _Threaded()
    assert fixed.fit_threads([other]) is None and other.threads == 2  # --threads wins
