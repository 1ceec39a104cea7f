"""Service protection, shared by every thread of one client: Dataverse limits are per user ([PD] api-limits.md),
so a 429 any thread receives pauses them all until its Retry-After has passed (`RetryAfterGate`), and an AIMD
limiter (`AdaptiveLimiter`) halves the concurrency once per storm, grows it back one slot at a time after
successes, and never exceeds the configured ceiling or the server's x-ms-dop-hint. `retry_after` reads a 429's
delay. Pure bookkeeping over clocks and locks: no I/O, so nothing here raises a foreign error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from config.settings import MAX_CONCURRENCY

SLOT_POLL_S = 0.2  # how often a thread waiting for a slot checks whether the run was asked to stop


def retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        seconds = float(headers.get("Retry-After") or "")
    except ValueError:  # the HTTP-date form: Dataverse sends whole seconds ([PD] api-limits.md)
        return None
    return seconds if seconds >= 0 else None


class RetryAfterGate:
    """The moment before which no thread of the client may send: set by a 429's Retry-After, never moved back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock, self._sleep = clock, sleep
        self._until = 0.0
        self._lock = threading.Lock()

    def block(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())

    def wait(self) -> None:
        while (left := self.remaining()) > 0:  # another 429 may move the moment while we sleep
            self._sleep(left)


class AdaptiveLimiter:
    """AIMD concurrency shared by all threads: halves on a 429 (once per Retry-After window), grows by one after
    as many successes in a row as the current limit; never above 52, max_concurrency or the x-ms-dop-hint."""

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic,
                 check: Callable[[], None] = lambda: None) -> None:
        self._configured = max(1, min(ceiling, MAX_CONCURRENCY))
        self._check = check  # called while a thread waits for a slot: raises to end the wait (a stop request)
        self.ceiling = self.limit = self._configured
        self._clock = clock
        self._in_use = self._successes = 0
        self._calm_at = 0.0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self._in_use >= self.limit:
                self._check()
                self._cond.wait(SLOT_POLL_S)
            self._in_use += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= 1
                self._cond.notify()

    def hint(self, dop: int) -> None:
        with self._cond:
            self.ceiling = max(1, min(self._configured, dop))
            self.limit = min(self.limit, self.ceiling)

    def succeeded(self) -> None:
        with self._cond:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.ceiling:
                self.limit += 1
                self._successes = 0
                self._cond.notify()

    def throttled(self, window_s: float) -> None:
        with self._cond:
            self._successes = 0
            now = self._clock()
            if now >= self._calm_at:  # the other 429s of the same window are the same storm
                self.limit = max(1, self.limit // 2)
                self._calm_at = now + max(window_s, 1.0)
