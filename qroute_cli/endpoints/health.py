"""Which endpoints failed lately, in this process: a failed endpoint's pairs are left out of
routing for its `down_for` seconds, then tried again (the next failure marks it down again).

Nothing is saved: another process, or this one after a restart, finds out for itself with one
failed connection, which costs at most the endpoint's connect timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Down:
    reason: str  # the one-line error that marked it down
    until: float  # clock time when it is tried again


class Health:
    """Down marks per endpoint; `clock` is monotonic seconds (tests pass their own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._down: dict[str, Down] = {}
        self._lock = threading.Lock()  # the server's request threads read, its worker writes

    def mark_down(self, name: str, reason: str, for_s: float) -> None:
        with self._lock:
            self._down[name] = Down(reason, self.clock() + for_s)

    def mark_up(self, name: str) -> None:
        with self._lock:
            self._down.pop(name, None)

    def down(self, name: str) -> Down | None:
        """The mark of an endpoint that is still down, else None (an expired mark is dropped)."""
        with self._lock:
            mark = self._down.get(name)
            if mark is not None and self.clock() >= mark.until:
                del self._down[name]
                return None
            return mark

    def is_down(self, name: str | None) -> bool:
        return name is not None and self.down(name) is not None
