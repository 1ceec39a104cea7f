"""Issue 25, crash safety of the Link source: `l2c run` with L2C_SOURCE=link SIGKILLed at 12 points (as in
test_kill.py: at the k-th fsync of a regular file, so between writing a file and making it durable, in the
extract's pages and checkpoints or in the transform), with the export growing between runs (sandbox advance, then
the Link export continued in the same folder), then run once more, ends with the same event log, cases and raw
lake as one uninterrupted run over the final export.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import polars as pl

from config.tables import load_tables
from connector.lake import Lake
from tests.e2e.conftest import L2C, clean_env
from tests.reliability.test_kill import KILL_AT_FSYNC, fsyncs

ORG = {"L2C_SANDBOX_LEADS": "300", "L2C_SANDBOX_SEED": "8"}


def l2c(org: Path, *args: str) -> None:
    env = clean_env(org.parent, **ORG)
    env["L2C_DATA_DIR"] = str(org)
    done = subprocess.run([L2C, *args], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


def run(data: Path, export: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    env = clean_env(data.parent, KILL_AT_FSYNC=str(kill_at), L2C_SOURCE="link", L2C_LINK_URL=str(export))
    env["L2C_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, "-c", KILL_AT_FSYNC], cwd=data.parent, env=env, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)


def test_sigkill_at_12_points_of_a_link_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    org, export = tmp_path / "org", tmp_path / "export"
    l2c(org, "sandbox", "export-link", "--format", "csv", "--out", str(export))
    killed = tmp_path / "killed" / "data"
    killed.parent.mkdir()
    probe = tmp_path / "probe" / "data"
    probe.parent.mkdir()
    first = run(probe, export, 0)
    assert first.returncode == 0, first.stderr
    rng, bound, kills = random.Random(2512), fsyncs(first), 0
    for attempt in range(12):
        if attempt and attempt % 3 == 0:  # the Link kept writing: new rows appended, new files
            l2c(org, "sandbox", "advance", "--days", "2")
            l2c(org, "sandbox", "export-link", "--format", "csv", "--out", str(export))
        done = run(killed, export, rng.randint(1, bound))
        if done.returncode == -9:
            kills += 1
        else:  # finished before its kill point: later draws stay within what such a run writes
            assert done.returncode == 0, done.stderr
            bound = max(1, fsyncs(done))
    final = run(killed, export, 0)
    assert final.returncode == 0, final.stderr
    assert kills >= 8, kills
    reference = tmp_path / "reference" / "data"
    reference.parent.mkdir()
    once = run(reference, export, 0)
    assert once.returncode == 0, once.stderr
    for output in ("event_log.parquet", "cases.parquet"):
        assert pl.read_parquet(killed / output).equals(pl.read_parquet(reference / output)), output
    for table in [t.name for t in load_tables().table]:
        assert Lake(killed).fingerprint(table) == Lake(reference).fingerprint(table), table
