"""The real `l2c` console script in subprocesses, isolated from the developer's environment and .env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

L2C = str(Path(sys.executable).with_name("l2c"))
SCRUBBED_PREFIXES = ("DATAVERSE_", "AZURE_", "L2C_")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["L2C_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def run_l2c(tmp_path: Path, *args: str, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([L2C, *args], cwd=tmp_path, env=clean_env(tmp_path, **extra), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def l2c(tmp_path: Path):  # noqa: ANN201
    def call(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_l2c(tmp_path, *args, **extra)

    return call
