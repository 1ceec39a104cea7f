"""Faults of the machine made for real: a small tmpfs that fills up, a read-only mount, an immutable folder. They
need root (CI runs as root); where the machine refuses, a test skips saying why, and fails instead under CI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip with `reason`; under CI (the `CI` variable set) fail instead: CI runs as root and must run it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must run this test")
    pytest.skip(reason)


class Machine:
    """Mounts and attributes made for one test, undone (in reverse) when it ends, whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._undo: list[list[str]] = []

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            unavailable(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.returncode} (needs root)")

    def tmpfs(self, size: str, name: str = "tmpfs") -> Path:
        """A fresh folder that is a tmpfs of `size` (e.g. "64k"): a disk that fills up for real."""
        where = self.root / name
        where.mkdir(parents=True)
        self._run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
        self._undo.append(["umount", str(where)])
        return where

    def remount(self, where: Path, options: str) -> None:
        """Change a mount made here, e.g. "size=64m" (space freed) or "ro"."""
        self._run("mount", "-o", f"remount,{options}", str(where))

    def read_only(self, folder: Path) -> Path:
        """`folder` (made if missing) as a read-only bind mount of itself."""
        folder.mkdir(parents=True, exist_ok=True)
        self._run("mount", "--bind", str(folder), str(folder))
        self._undo.append(["umount", str(folder)])
        self._run("mount", "-o", "remount,ro,bind", str(folder))
        return folder

    def immutable(self, path: Path) -> Path:
        """`chattr +i path`: not even root may create, replace or remove anything in it."""
        self._run("chattr", "+i", str(path))
        self._undo.append(["chattr", "-i", str(path)])
        return path

    def undo(self) -> None:
        for command in reversed(self._undo):
            subprocess.run(command, capture_output=True)
        self._undo.clear()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    """Faults of the machine under this test's own tmp_path (unique per test, so xdist workers never share one)."""
    faults = Machine(tmp_path / "machine")
    try:
        yield faults
    finally:
        faults.undo()
