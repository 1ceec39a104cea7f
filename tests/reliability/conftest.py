"""Faults of the machine made for real: `machine.tmpfs(size)` is a small RAM file system that fills up (a full
disk), `machine.remount(where, "size=...")` gives it room again. Everything is made under the test's own tmp_path
(unique under xdist) and undone when the test ends. Mounting needs root: without it the test is skipped, saying
why, except under CI (the `CI` variable set), where it fails: CI runs as root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip a test the machine cannot fault for real; under CI, fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must run this test")
    pytest.skip(reason)


class Machine:
    """Mounts made for one test, undone (in reverse) when it ends, whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._undo: list[list[str]] = []

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            unavailable(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.returncode} (needs root)")

    def tmpfs(self, size: str, name: str = "tmpfs") -> Path:
        """A fresh folder that is a tmpfs of `size` (bytes, or e.g. "64k")."""
        where = self.root / name
        where.mkdir(parents=True)
        self._run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
        self._undo.append(["umount", str(where)])
        return where

    def remount(self, where: Path, options: str) -> None:
        """Change a mount made here, e.g. "size=64m" (space freed)."""
        self._run("mount", "-o", f"remount,{options}", str(where))

    def undo(self) -> None:
        for command in reversed(self._undo):
            if subprocess.run(command, capture_output=True).returncode != 0:
                subprocess.run([*command[:1], "-l", *command[1:]], capture_output=True)  # busy: detach it
        self._undo.clear()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs (a disk that fills up) needs root")
    faults = Machine(tmp_path / "machine")
    try:
        yield faults
    finally:
        faults.undo()
