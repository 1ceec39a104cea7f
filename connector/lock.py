"""One run per data directory: an exclusive `flock` on `<data_dir>/.l2c.lock`, held for the whole run.

The kernel owns the lock, not the file: it is released when the holding process exits for any reason,
SIGKILL included, so a lock "left" by a killed run is simply free again and the next run takes it without
anyone deleting anything (the file itself is never removed: unlinking a lock file races with a process
that has just opened it). The holder writes its pid, host and start time into the file so the second run can
say who holds the directory since when (RunLocked, exit 5); whatever a crashed holder left there is kept in
`RunLock.recovered` for the caller to log. flock is per open file, so two RunLocks in one process exclude each
other too. It does not work across hosts on NFS; the data directory is expected to be local.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ground.errors import RunLocked, local_error
from ground.files import machine_errors

LOCK_NAME = ".l2c.lock"


class RunLock:
    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.recovered: dict[str, Any] | None = None  # the holder info a run that died without releasing left
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError("this RunLock is already held")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # the first file a run touches: a data directory of another user, or read-only
            local = local_error(exc, doing="open", tree=self.path.parent)
            if local is None:
                raise
            raise local from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"another l2c run holds the data directory {self.path.parent}",
                hint="wait for it to finish, or stop that process; the lock frees itself when it exits",
                pid=holder.get("pid", "unknown"), host=holder.get("host"), since=holder.get("started_at"),
            ) from None
        except OSError:
            os.close(fd)  # e.g. ENOLCK: no lock support on this file system
            raise
        try:
            self.recovered = _read_holder(fd) or None  # a clean release leaves the file empty
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": datetime.now(UTC).isoformat()}
            with machine_errors(self.path):  # a full disk: the OSError of a write on a descriptor names no file
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
                os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # empty = released cleanly; only a crashed holder leaves its details behind
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote; {} if nothing yet (it may be between flock and write) or unreadable."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
