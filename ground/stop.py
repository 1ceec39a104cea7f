"""A request to stop the run, for the whole process: the CLI's SIGINT/SIGTERM handler sets it (l2c/cli.py), and
every loop and wait of a run checks it instead of being killed: the table and audit streams before each page
they land (connector/odata.py `pages`), the audit details before each batch, the HTTP client before each request
and in every sleep (retry backoff, Retry-After, a free request slot). A stream that sees it raises `Interrupted`
between two pages, so a page lands whole or not at all and its state only ever points at durable pages; the
run then marks its manifest and frees its lock. `Interrupted` is a BaseException, as KeyboardInterrupt is: no
`except Exception` (nor a retry policy) swallows it. Outside `polled()` code (the transform, the load), the
handler raises it in the main thread at once, as Python does with KeyboardInterrupt, and the all-or-nothing
writes of ground/files.py leave the previous outputs. Imports nothing of the project.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()
_signal = [0]
_polled = [0]  # how many `polled()` blocks the main thread is in


class Interrupted(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """The run was asked to stop by a signal: exit 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def __str__(self) -> str:
        return f"interrupted by {self.name}"


def request(signum: int) -> bool:
    """Ask every loop of the run to stop; True the first time (a later signal changes nothing)."""
    if _requested.is_set():
        return False
    _signal[0] = signum
    _requested.set()
    return True


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise Interrupted if the run was asked to stop."""
    if _requested.is_set():
        raise Interrupted(_signal[0])


def sleep(seconds: float) -> None:
    """time.sleep that ends as soon as the run is asked to stop (and then raises Interrupted)."""
    if seconds > 0:
        _requested.wait(seconds)
    check()


def raises_now() -> bool:
    """Whether a signal handler should raise Interrupted in the main thread at once (as SIGINT's default does),
    rather than only ask: False inside `polled()`."""
    return _polled[0] == 0


@contextmanager
def polled() -> Iterator[None]:
    """Code that checks for a stop request itself, where it is safe to stop (the extract: its streams between
    pages, its main thread once they have ended): a signal only asks. On the way out, a request raises."""
    _polled[0] += 1
    try:
        yield
    finally:
        _polled[0] -= 1
    check()


def clear() -> None:
    """Forget a request (a new command starts; tests that run several in one process)."""
    _requested.clear()
    _signal[0] = 0
