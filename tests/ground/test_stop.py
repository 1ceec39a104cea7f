"""ground/stop.py: a stop request ends every wait at once and is raised where the run checks for it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from ground import stop


@pytest.fixture(autouse=True)
def cleared() -> Iterator[None]:
    stop.clear()
    yield
    stop.clear()


def test_a_request_is_raised_with_the_exit_code_of_its_signal() -> None:
    stop.check()  # nothing asked
    assert stop.request(signal.SIGINT) and not stop.request(signal.SIGTERM)  # the first signal counts
    with pytest.raises(stop.Interrupted) as info:
        stop.check()
    assert (info.value.exit_code, str(info.value)) == (130, "interrupted by SIGINT")
    stop.clear()
    stop.request(signal.SIGTERM)
    with pytest.raises(stop.Interrupted) as info:
        stop.check()
    assert info.value.exit_code == 143 and not isinstance(info.value, Exception)  # no `except Exception` eats it


def test_a_sleep_ends_when_another_thread_asks() -> None:
    threading.Timer(0.2, stop.request, [signal.SIGTERM]).start()
    started = time.monotonic()
    with pytest.raises(stop.Interrupted):
        stop.sleep(30)
    assert time.monotonic() - started < 5


def test_inside_polled_a_signal_only_asks_and_the_way_out_raises() -> None:
    assert stop.raises_now()
    with pytest.raises(stop.Interrupted):
        with stop.polled():
            assert not stop.raises_now()
            stop.request(signal.SIGINT)
    assert stop.raises_now()
