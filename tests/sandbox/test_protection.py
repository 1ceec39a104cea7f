"""Service protection limits with a fake clock: limits, the 429 shape, Retry-After, headers, violations."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack

import pytest

from sandbox.protection import Limits, Protection, Throttled
from sandbox.wire import Response
from tests.sandbox.conftest import FakeClock as Clock

USER = "9f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0"
OTHER = "11111111-2222-3333-4444-555555555555"




@pytest.fixture
def clock() -> Clock:
    return Clock()


def run(protection: Protection, user: str = USER, clock: Clock | None = None, seconds: float = 0.0) -> None:
    with protection.admit(user):
        if clock is not None:
            clock.advance(seconds)


def refused(protection: Protection, user: str = USER) -> Throttled:
    with pytest.raises(Throttled) as info:
        run(protection, user)
    return info.value


def body(response: Response) -> dict[str, str]:
    return json.loads(response.body)["error"]  # type: ignore[no-any-return]


def test_default_messages_are_the_documented_texts() -> None:
    limits = Limits()
    assert limits.message("0x80072322") == (
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
    )
    assert limits.message("0x80072321") == (
        "Combined execution time of incoming requests exceeded limit of 1,200,000  milliseconds over "
        "time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of "
        "requests and try again later."
    )
    assert limits.message("0x80072326") == "Number of concurrent requests exceeded the limit of 52."


def test_request_count_limit(clock: Clock) -> None:
    protection = Protection(Limits(requests=5), clock=clock)
    for _ in range(5):
        run(protection)
        clock.advance(10)
    throttled = refused(protection)
    response = throttled.response
    assert response.status == 429
    assert (response.header("Content-Type") or "").startswith("application/json")
    assert body(response) == {
        "code": "0x80072322",
        "message": "Number of requests exceeded the limit of 5 over time window of 300 seconds.",
    }
    # The first request (t=1000) leaves the window at t=1300; now is t=1050.
    assert response.header("Retry-After") == "250"
    assert throttled.event.retry_after == 250


def test_retry_after_is_until_the_oldest_request_still_counted_leaves_the_window(clock: Clock) -> None:
    """[PD] api-limits.md: the 429 gives "the duration before any new requests from the user can be processed".
    For the request count that is when the oldest request still inside the sliding 300 s window leaves it: not
    the whole window, and not counted from a request that already left."""
    protection = Protection(Limits(requests=3), clock=clock)
    for _ in range(3):  # t = 1000, 1100, 1200
        run(protection)
        clock.advance(100)
    clock.advance(1)  # t = 1301: the request of t = 1000 has left the window
    run(protection)  # counted: 1100, 1200, 1301
    clock.advance(1)  # t = 1302
    assert refused(protection).event.retry_after == 98  # 1100 + 300 - 1302
    clock.advance(98)
    run(protection)  # admitted the moment 1100 leaves


def test_retry_after_is_whole_seconds_rounded_up(clock: Clock) -> None:
    protection = Protection(Limits(requests=1), clock=clock)
    run(protection)
    clock.advance(0.4)
    assert refused(protection).response.header("Retry-After") == "300"  # 299.6 s left


def test_waiting_retry_after_is_enough_and_refusals_do_not_count(clock: Clock) -> None:
    protection = Protection(Limits(requests=3), clock=clock)
    for _ in range(3):
        run(protection)
    clock.advance(1)
    retry_after = refused(protection).event.retry_after
    assert retry_after == 299
    clock.advance(retry_after)
    run(protection)  # admitted exactly at the end of the window
    # 3 admitted at t0 left the window; the refused one was never counted: 1 of 3 used.
    assert dict(protection.headers(USER))["x-ms-ratelimit-burst-remaining-xrm-requests"] == "2"


def test_execution_time_limit(clock: Clock) -> None:
    protection = Protection(Limits(execution_ms=1000), clock=clock)
    run(protection, clock=clock, seconds=0.6)
    clock.advance(10)
    run(protection, clock=clock, seconds=0.6)
    throttled = refused(protection)
    assert body(throttled.response) == {
        "code": "0x80072321",
        "message": "Combined execution time of incoming requests exceeded limit of 1,000  milliseconds "
        "over time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of "
        "requests and try again later.",
    }
    # Dropping the first execution (finished at t=1000.6) is enough: it leaves the window at t=1300.6.
    assert throttled.event.retry_after == 290
    clock.advance(290)
    run(protection)


def test_concurrency_limit(clock: Clock) -> None:
    protection = Protection(Limits(concurrent=2), clock=clock)
    with ExitStack() as stack:
        stack.enter_context(protection.admit(USER))
        stack.enter_context(protection.admit(USER))
        throttled = refused(protection)
        assert body(throttled.response) == {
            "code": "0x80072326",
            "message": "Number of concurrent requests exceeded the limit of 2.",
        }
        assert throttled.response.header("Retry-After") == "1"
        run(protection, OTHER)  # limits are per user
    clock.advance(1)
    run(protection)


def test_requests_inside_a_retry_after_window_are_refused_and_recorded(clock: Clock) -> None:
    protection = Protection(Limits(requests=2), clock=clock)
    run(protection)
    run(protection)
    first = refused(protection)
    clock.advance(100)
    second = refused(protection)  # a client that ignored Retry-After
    assert second.event.retry_after == first.event.retry_after - 100
    run(protection, OTHER)  # another user is not affected
    clock.advance(second.event.retry_after)
    run(protection)
    events = protection.throttle_events(USER)
    assert [(e.at, e.retry_after) for e in events] == [(1000.0, 300), (1100.0, 200)]
    violations = protection.violations()
    assert len(violations) == 1
    assert violations[0].at == 1100.0 and violations[0].throttle == first.event
    assert protection.violations(OTHER) == []


def test_violation_grace_forgives_requests_already_in_flight(clock: Clock) -> None:
    protection = Protection(Limits(requests=1), clock=clock)
    run(protection)
    refused(protection)
    clock.advance(0.05)
    refused(protection)  # sent before the client could have seen the first 429
    clock.advance(5)
    refused(protection)
    assert len(protection.violations()) == 2
    assert [v.at for v in protection.violations(grace_s=0.5)] == [pytest.approx(1005.05)]


def test_sliding_window_forgets_old_requests(clock: Clock) -> None:
    protection = Protection(Limits(requests=2), clock=clock)
    run(protection)
    clock.advance(200)
    run(protection)
    clock.advance(100)  # the first request is now exactly 300 s old
    run(protection)
    refused(protection)


def test_normal_response_headers(clock: Clock) -> None:
    protection = Protection(clock=clock)
    with protection.admit(USER):
        assert protection.headers(USER) == [
            ("x-ms-ratelimit-burst-remaining-xrm-requests", "5999"),
            ("x-ms-ratelimit-time-remaining-xrm-requests", "1,200.00"),
            ("x-ms-dop-hint", "48"),
        ]
        clock.advance(1.5)
    headers = dict(protection.headers(USER))
    assert headers["x-ms-ratelimit-time-remaining-xrm-requests"] == "1,198.50"
    clock.advance(301.5)
    assert dict(protection.headers(USER))["x-ms-ratelimit-burst-remaining-xrm-requests"] == "6000"


def test_injected_throttle_refuses_a_seeded_fraction(clock: Clock) -> None:
    def pattern(seed: int) -> list[bool]:
        protection = Protection(
            Limits(requests=10**6), clock=clock, throttle_fraction=0.3, throttle_retry_after=7, seed=seed
        )
        outcome = []
        for _ in range(1000):
            try:
                run(protection)
                outcome.append(False)
            except Throttled as exc:
                assert exc.response.header("Retry-After") == "7" and exc.event.injected
                outcome.append(True)
                clock.advance(7)  # a well-behaved client
            clock.advance(0.01)
        assert protection.violations() == []
        return outcome

    first = pattern(seed=3)
    assert 230 <= sum(first) <= 370
    assert pattern(seed=3) == first
    assert pattern(seed=4) != first


def test_throttle_mode_can_be_switched(clock: Clock) -> None:
    protection = Protection(clock=clock)
    protection.throttle(1.0, retry_after=2)
    assert refused(protection).event.retry_after == 2
    clock.advance(2)
    protection.throttle(0.0)
    run(protection)
    with pytest.raises(ValueError):
        protection.throttle(1.5)


def test_execution_time_is_recorded_even_when_the_body_raises(clock: Clock) -> None:
    protection = Protection(Limits(execution_ms=500, concurrent=1), clock=clock)
    with pytest.raises(RuntimeError), protection.admit(USER):
        clock.advance(0.5)
        raise RuntimeError("handler failed")
    assert refused(protection).event.code == "0x80072321"  # and the concurrency slot was released


def test_execution_time_is_the_requests_own_cpu_time_not_its_wait() -> None:
    """Dataverse bills the time a server spends on a request; this one-interpreter emulator must not bill the
    time a request waits for another's turn (or anything else), so by default execution is thread CPU time."""
    waiter, worker = Protection(), Protection()
    with waiter.admit(USER):
        threading.Event().wait(0.3)  # waiting: no CPU spent
    with worker.admit(USER):
        spin_until = time.thread_time() + 0.3
        while time.thread_time() < spin_until:  # working: 0.3 s of this thread's CPU
            pass
    time_left = {name: float(dict(p.headers(USER))["x-ms-ratelimit-time-remaining-xrm-requests"].replace(",", ""))
                 for name, p in (("waiter", waiter), ("worker", worker))}
    assert time_left["waiter"] > 1199.9
    assert 1199.0 < time_left["worker"] <= 1199.7
