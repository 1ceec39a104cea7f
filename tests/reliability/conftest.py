"""Faults made for real on this machine. `tmpfs`: small RAM file systems that fill up (a full disk), mounted
under the test's own tmp_path (unique under xdist) and unmounted at teardown. Mounting needs root: without it
the test is skipped, saying why, except under CI (the CI variable set), where it fails: CI runs as root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def unavailable(reason: str) -> None:
    """Skip a test the machine cannot fault for real; under CI, fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run this test (it runs as root)")
    pytest.skip(reason)


class Tmpfs:
    """`mount(size)` gives the mount point of a new tmpfs of `size` bytes; `resize` grows or shrinks one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []

    def mount(self, size: int) -> Path:
        point = self.root / f"tmpfs-{len(self.mounted)}"
        point.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "l2c-test", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            unavailable(f"cannot mount a tmpfs ({done.stderr.strip() or done.returncode})")
        self.mounted.append(point)
        return point

    def resize(self, point: Path, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for point in reversed(self.mounted):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)  # still busy: detach it
        self.mounted.clear()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs (a disk that fills up) needs root")
    mounts = Tmpfs(tmp_path)
    try:
        yield mounts
    finally:
        mounts.unmount_all()
