"""How busy the other processes keep the CPU, and how many llama.cpp threads that leaves.

llama.cpp's CPU threads wait for each other at every step by spinning. When another process
holds one of the cores, a thread that is not scheduled stalls the others, and decoding with
as many threads as cores becomes far slower than with one thread fewer. Measured with
bench/decode_speed.py on the 2-core machine (smollm2-135m, generation tokens/s):

    quiet machine:      2 threads 65.9   1 thread 41.1
    one core busy:      2 threads  2.5   1 thread 43.5
    (OMP_WAIT_POLICY=PASSIVE: 36.3 busy, but 24.4 quiet, so it is no fix)

So before each answer qroute looks at what other processes used since it last looked
(/proc/stat minus its own time from /proc/self/stat) and leaves their cores to them. Only
when the thread count is qroute's own choice: --threads fixes it. Linux only; elsewhere
every core is used.
"""

from __future__ import annotations

import os
import time
from typing import Callable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_FRESH_S = 5.0  # a reading older than this says little about now: take a short new one
_SAMPLE_S = 0.05


def busy_ticks(proc_stat: str) -> int | None:
    """CPU ticks spent busy on all cores since boot, from the text of /proc/stat."""
    fields = proc_stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return None
    try:
        values = [int(x) for x in fields[1:]]
    except ValueError:
        return None
    if len(values) < 4:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


def process_ticks(pid_stat: str) -> int | None:
    """A process's user + system ticks (all threads), from the text of /proc/PID/stat."""
    rest = pid_stat.rsplit(")", 1)[-1].split()  # the name in parentheses may contain spaces
    try:
        return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    except (IndexError, ValueError):
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def proc_ticks() -> tuple[int, int] | None:
    """(busy ticks of the machine, ticks of this process) now; None where /proc is missing."""
    stat, own = _read("/proc/stat"), _read("/proc/self/stat")
    if stat is None or own is None:
        return None
    busy, mine = busy_ticks(stat), process_ticks(own)
    return None if busy is None or mine is None else (busy, mine)


class CpuLoad:
    """Cores used by other processes, from the interval since the last reading.

    `clock`, `sleep` and `read` (which returns (busy ticks, own ticks)) are injectable, so
    the arithmetic can be checked on exact readings.
    """

    def __init__(self, sample_s: float = _SAMPLE_S, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 read: Callable[[], tuple[int, int] | None] = proc_ticks) -> None:
        self.sample_s = sample_s
        self._clock, self._sleep, self._read_ticks = clock, sleep, read
        self._last: tuple[float, int, int] | None = None

    def _read(self) -> tuple[float, int, int] | None:
        ticks = self._read_ticks()
        if ticks is None:
            return None
        return (self._clock(), *ticks)

    def others(self) -> float | None:
        """Average cores the rest of the machine kept busy lately; None when unknown."""
        now = self._read()
        if now is None:
            return None
        last = self._last
        if last is None or now[0] - last[0] > _FRESH_S or now[0] - last[0] < self.sample_s:
            last = now
            self._sleep(self.sample_s)
            now = self._read()
            if now is None:
                return None
        self._last = now
        return others_cores(last, now)


def others_cores(before: tuple[float, int, int], after: tuple[float, int, int]) -> float:
    """Cores other processes used between two readings of (seconds, busy ticks, own ticks)."""
    seconds = after[0] - before[0]
    if seconds <= 0:
        return 0.0
    other_ticks = (after[1] - before[1]) - (after[2] - before[2])
    return max(other_ticks / _TICK / seconds, 0.0)


def threads_for(cores: int, others: float | None) -> int:
    """Threads to run with: every core the other processes leave (a core counts as taken from
    0.6 of it busy), and at least one."""
    if others is None:
        return cores
    return max(1, cores - int(others + 0.4))
