"""Issue #13's concurrency: while one run holds a data directory, `l2c run`, `extract` and `transform` exit 5 with one
line naming the holder and change no byte there; once the holder is SIGKILLed, the lock it left is simply free and
the next run completes."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from connector.lock import LOCK_NAME
from tests.e2e.conftest import run_l2c

SMALL = {"L2C_SANDBOX_LEADS": "150", "L2C_SANDBOX_SEED": "5"}
REPO = Path(__file__).resolve().parents[2]


def contents(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def test_a_second_run_exits_5_and_changes_nothing_then_a_killed_holder_frees_the_directory(tmp_path: Path) -> None:
    first = run_l2c(tmp_path, "run", **SMALL)
    assert first.returncode == 0, first.stderr
    data = tmp_path / "data"
    before = contents(data)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from connector.lock import RunLock
        with RunLock({str(data)!r}):
            print("LOCKED", flush=True)
            sys.stdin.read()
    """)], cwd=REPO, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "LOCKED\n"
        for command in ("run", "extract", "transform"):
            refused = run_l2c(tmp_path, command, **SMALL)
            assert refused.returncode == 5, (command, refused.stderr)
            errors = [line for line in refused.stderr.splitlines() if line.startswith("l2c: error:")]
            assert len(errors) == 1 and f"pid={holder.pid}" in errors[0], refused.stderr
        assert contents(data) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate()
    after = run_l2c(tmp_path, "run", **SMALL)
    assert after.returncode == 0, after.stderr
