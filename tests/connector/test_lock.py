"""connector/lock.py: one run per data directory across processes, exit 5 naming the holder, and a lock whose
holder was SIGKILLed taken over by the next run."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.lock import LOCK_NAME, RunLock
from ground.errors import RunLocked

REPO = Path(__file__).resolve().parents[2]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that holds the lock on tmp_path until it is killed (it waits on stdin)."""
    child = subprocess.Popen(python(f"""
        import sys
        from connector.lock import RunLock
        with RunLock({str(tmp_path)!r}):
            print("LOCKED", flush=True)
            sys.stdin.read()
    """), cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == "LOCKED\n", child.communicate()[1]
    yield child
    if child.poll() is None:
        child.kill()
    child.communicate()


def test_second_run_in_another_process_exits_5(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        done = subprocess.run(python(f"""
            import sys
            from connector.lock import RunLock
            from ground.errors import L2CError
            try:
                RunLock({str(tmp_path)!r}).acquire()
            except L2CError as err:
                print(err)
                sys.exit(err.exit_code)
        """), cwd=REPO, text=True, capture_output=True, timeout=60)
    assert done.returncode == 5, done.stderr
    assert f"pid={os.getpid()}" in done.stdout and "since=" in done.stdout
    assert str(tmp_path) in done.stdout


def test_holder_is_named_then_sigkill_frees_the_lock(tmp_path: Path, lock_holder: subprocess.Popen[str]) -> None:
    with pytest.raises(RunLocked) as err:
        RunLock(tmp_path).acquire()
    assert err.value.exit_code == 5
    assert err.value.context["pid"] == lock_holder.pid and err.value.context["since"]
    lock_holder.send_signal(signal.SIGKILL)
    assert lock_holder.wait() == -signal.SIGKILL
    with RunLock(tmp_path) as lock:  # no manual cleanup: the kernel released the dead process's flock
        assert lock.recovered is not None and lock.recovered["pid"] == lock_holder.pid
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_two_locks_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunLocked, match="another l2c run holds the data directory"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path) as again:
        assert again.held and again.recovered is None  # a clean release leaves nothing to recover
    assert not again.held and (tmp_path / LOCK_NAME).read_text() == ""


def test_lock_file_is_private_and_names_its_holder(tmp_path: Path) -> None:
    with RunLock(tmp_path / "new" / "dir"):
        path = tmp_path / "new" / "dir" / LOCK_NAME
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started_at"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_lock_is_released_when_the_run_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyError), RunLock(tmp_path):
        raise KeyError("boom")
    with RunLock(tmp_path):
        pass
