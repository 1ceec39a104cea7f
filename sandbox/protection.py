"""Dataverse service protection limits, per user, as [PD] api-limits.md describes them.

Three facets per user (the token's `oid`): the number of requests and their combined execution time in a
sliding 300-second window, and the number of concurrent requests (defaults 6000, 1,200,000 ms, 52; real orgs
quote their own, so all are configurable). A request over a limit gets HTTP 429 with `Retry-After` in whole
seconds and the doc's body, `{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit
of 6000 over time window of 300 seconds."}}` (0x80072321 execution time, with the doc's double space before
"milliseconds"; 0x80072326 concurrency). The doc says the error is returned "on subsequent requests ... until
the Retry-After duration ends", so every request inside a Retry-After window is refused too; rejected
requests never executed, so they add neither to the request count nor to the execution time (the doc counts
requests the server processes; it is silent on refused ones). Normal responses carry
`x-ms-ratelimit-burst-remaining-xrm-requests`, `x-ms-ratelimit-time-remaining-xrm-requests` ("1,200.00":
seconds left of the execution-time budget) and `x-ms-dop-hint`. An injectable throttle mode refuses a seeded
random fraction of requests for client tests. Every 429 and every request that arrived inside a Retry-After
window is recorded, so a test can assert that a client honoured Retry-After (`violations()`). The clock is
injectable (seconds, monotonic), so tests need no sleeps.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sandbox.wire import Response, json_response

REQUESTS_CODE = "0x80072322"
EXECUTION_TIME_CODE = "0x80072321"
CONCURRENCY_CODE = "0x80072326"


@dataclass(frozen=True)
class Limits:
    requests: int = 6000
    execution_ms: int = 1_200_000
    concurrent: int = 52
    window_s: int = 300
    dop_hint: int = 48  # x-ms-dop-hint, the degree of parallelism the server recommends (value seen real)
    concurrency_retry_after_s: int = 1  # the doc gives no duration for the concurrency limit: inferred

    def message(self, code: str) -> str:
        # Texts from [PD] api-limits.md, with the configured numbers in place of the defaults.
        if code == REQUESTS_CODE:
            return (
                f"Number of requests exceeded the limit of {self.requests} over time window of "
                f"{self.window_s} seconds."
            )
        if code == EXECUTION_TIME_CODE:
            return (
                f"Combined execution time of incoming requests exceeded limit of {self.execution_ms:,}  "
                f"milliseconds over time window of {self.window_s} seconds. Decrease number of concurrent "
                "requests or reduce the duration of requests and try again later."
            )
        return f"Number of concurrent requests exceeded the limit of {self.concurrent}."


@dataclass(frozen=True)
class ThrottleEvent:
    user_id: str
    at: float
    retry_after: int
    code: str
    injected: bool = False

    @property
    def until(self) -> float:
        return self.at + self.retry_after


@dataclass(frozen=True)
class Violation:
    """A request that arrived while its user was inside a Retry-After window the server had given."""

    user_id: str
    at: float
    throttle: ThrottleEvent  # the 429 whose window it ignored


class Throttled(Exception):
    def __init__(self, event: ThrottleEvent, response: Response) -> None:
        super().__init__(f"429 {event.code} for {event.user_id}: retry after {event.retry_after} s")
        self.event = event
        self.response = response


@dataclass
class _UserState:
    arrivals: deque[float] = field(default_factory=deque)  # admitted requests, by arrival time
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (finished at, ms)
    execution_ms: float = 0.0  # sum over `executions`
    in_flight: int = 0
    blocked: ThrottleEvent | None = None  # the 429 whose Retry-After window is the latest

    def prune(self, horizon: float) -> None:
        while self.arrivals and self.arrivals[0] <= horizon:
            self.arrivals.popleft()
        while self.executions and self.executions[0][0] <= horizon:
            self.execution_ms -= self.executions.popleft()[1]


class Protection:
    def __init__(
        self,
        limits: Limits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle_fraction: float = 0.0,
        throttle_retry_after: int = 5,
        seed: int | None = None,
        execution_clock: Callable[[], float] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        # What a request's execution time is measured with. [PD] api-limits.md: "the combined execution time of
        # all requests made by a user", i.e. server time spent on them; Dataverse runs a user's parallel requests
        # side by side (up to 52). This emulator runs them in one interpreter, so a request's wall time would
        # include the time it waited for the others' turn (8 requests in flight: about 8x its own time), a cost
        # Dataverse never bills. By default it is the handling thread's CPU time; an injected `clock` (tests)
        # measures execution too unless `execution_clock` says otherwise.
        self.execution_clock = execution_clock or (time.thread_time if clock is time.monotonic else clock)
        self._lock = threading.Lock()
        self._users: dict[str, _UserState] = {}
        self._events: list[ThrottleEvent] = []
        self._violations: list[Violation] = []
        self.throttle(throttle_fraction, retry_after=throttle_retry_after, seed=seed)

    def throttle(self, fraction: float, *, retry_after: int = 5, seed: int | None = None) -> None:
        """Refuse `fraction` of otherwise admissible requests with a 429 (number-of-requests code)."""
        if not 0.0 <= fraction <= 1.0 or retry_after < 1:
            raise ValueError("throttle fraction must be in [0, 1] and retry_after at least 1 s")
        with self._lock:
            self.throttle_fraction = fraction
            self.throttle_retry_after = retry_after
            self._rng = random.Random(seed)

    @contextmanager
    def admit(self, user_id: str) -> Iterator[None]:
        """Raise Throttled (carrying the 429) or run the body, recording its execution time."""
        with self._lock:
            now = self.clock()
            state = self._users.setdefault(user_id, _UserState())
            state.prune(now - self.limits.window_s)
            refusal = self._refusal(user_id, state, now)
            if refusal is not None:
                self._events.append(refusal)
                if state.blocked is None or now >= state.blocked.until:
                    state.blocked = refusal  # a refusal inside a window keeps the window it violated
                raise Throttled(refusal, self._response(refusal))
            state.arrivals.append(now)
            state.in_flight += 1
        started = self.execution_clock()
        try:
            yield
        finally:
            elapsed_ms = max(0.0, self.execution_clock() - started) * 1000
            with self._lock:
                finished = self.clock()
                state.in_flight -= 1
                state.executions.append((finished, elapsed_ms))
                state.execution_ms += elapsed_ms

    def _refusal(self, user_id: str, state: _UserState, now: float) -> ThrottleEvent | None:
        limits = self.limits
        if state.blocked is not None and now < state.blocked.until:
            self._violations.append(Violation(user_id, now, state.blocked))
            left = math.ceil(state.blocked.until - now)
            return ThrottleEvent(user_id, now, max(1, left), state.blocked.code, state.blocked.injected)
        if state.in_flight >= limits.concurrent:
            return ThrottleEvent(user_id, now, limits.concurrency_retry_after_s, CONCURRENCY_CODE)
        if len(state.arrivals) >= limits.requests:
            # Retry-After is "the duration before any new requests from the user can be processed" ([PD]
            # api-limits.md, "Retry operations"): until enough arrivals leave the window for one more to fit.
            oldest = state.arrivals[len(state.arrivals) - limits.requests]
            return ThrottleEvent(user_id, now, _seconds(oldest + limits.window_s - now), REQUESTS_CODE)
        if state.execution_ms >= limits.execution_ms:
            excess, free_at = state.execution_ms - limits.execution_ms, now
            for finished, ms in state.executions:
                excess -= ms
                free_at = finished + limits.window_s
                if excess < 0:
                    break
            return ThrottleEvent(user_id, now, _seconds(free_at - now), EXECUTION_TIME_CODE)
        if self.throttle_fraction and self._rng.random() < self.throttle_fraction:
            return ThrottleEvent(user_id, now, self.throttle_retry_after, REQUESTS_CODE, injected=True)
        return None

    def _response(self, event: ThrottleEvent) -> Response:
        body = {"error": {"code": event.code, "message": self.limits.message(event.code)}}
        headers = [("Retry-After", str(event.retry_after))]
        return json_response(429, body, headers, content_type="application/json; charset=utf-8")

    def headers(self, user_id: str) -> list[tuple[str, str]]:
        """The rate-limit headers of a normal response (the request being answered already counted)."""
        with self._lock:
            state = self._users.get(user_id) or _UserState()
            state.prune(self.clock() - self.limits.window_s)
            burst = max(0, self.limits.requests - len(state.arrivals))
            time_left_s = max(0.0, self.limits.execution_ms - state.execution_ms) / 1000
        return [
            ("x-ms-ratelimit-burst-remaining-xrm-requests", str(burst)),
            ("x-ms-ratelimit-time-remaining-xrm-requests", f"{time_left_s:,.2f}"),
            ("x-ms-dop-hint", str(self.limits.dop_hint)),
        ]

    def throttle_events(self, user_id: str | None = None) -> list[ThrottleEvent]:
        """Every 429 sent, in order, with its Retry-After."""
        with self._lock:
            return [e for e in self._events if user_id is None or e.user_id == user_id]

    def violations(self, user_id: str | None = None, *, grace_s: float = 0.0) -> list[Violation]:
        """Requests that arrived inside a Retry-After window. `grace_s` forgives requests a concurrent client
        had already sent when the 429 was issued (arrived within `grace_s` of it)."""
        with self._lock:
            return [
                v
                for v in self._violations
                if (user_id is None or v.user_id == user_id) and v.at - v.throttle.at >= grace_s
            ]


def _seconds(delta: float) -> int:
    """Retry-After in whole seconds, rounded up so a client that waits exactly that long is admitted."""
    return max(1, math.ceil(delta - 1e-9))
