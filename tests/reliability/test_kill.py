"""Issue #13: `l2c run` killed with SIGKILL at 20 points across extract and transform, with the sandbox's clock
moving between runs, then run once more, ends with the same raw lake, event log and DuckDB tables as one
uninterrupted run of the same source state.

The kill points are not timings: the child interpreter counts its fsyncs of regular files (every landed page,
state file, manifest and output is fsynced before its rename) and SIGKILLs itself at the k-th, so each kill lands
between writing a file and making it durable, somewhere in extract or transform, wherever the threads happen to
be. k is drawn from a seeded generator within the fsyncs of the last run that finished (at first, of a whole
backfill): so the first kills land in the backfill, later ones (a day of changes every second run) in extract
pages, state files and the incremental transform's outputs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl

from config.tables import load_tables
from connector.lake import Lake
from tests.e2e.conftest import L2C, clean_env

KILL_AT_FSYNC = """
import atexit, os, signal, stat, sys
_at, _seen = int(os.environ["KILL_AT_FSYNC"]), [0]
_fsync = os.fsync
def fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        _seen[0] += 1
        if _seen[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL)
    _fsync(fd)
os.fsync = fsync
atexit.register(lambda: print(f"FSYNCS {_seen[0]}", file=sys.stderr))
from l2c.cli import main
sys.exit(main(["run"]))
"""
ENV = {"L2C_SANDBOX_LEADS": "300", "L2C_PAGE_SIZE": "150", "L2C_SANDBOX_SEED": "8"}
TABLES = ["event_log", "cases", "quality_issues", "quotes", "orders", "invoices", "event_resources"]


def run(data: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    env = clean_env(data.parent, **ENV, KILL_AT_FSYNC=str(kill_at))
    env["L2C_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, "-c", KILL_AT_FSYNC], cwd=data.parent, env=env, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)


def advance(data: Path, days: float) -> None:
    env = clean_env(data.parent, **ENV)
    env["L2C_DATA_DIR"] = str(data)
    done = subprocess.run([L2C, "sandbox", "advance", "--days", str(days)], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


def fsyncs(done: subprocess.CompletedProcess[str]) -> int:
    return int(done.stderr.rsplit("FSYNCS ", 1)[1].split()[0])


def tables(data: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(data / "l2c.duckdb"), read_only=True) as con:
        found = {name: con.sql(f"select * from {name}").pl() for name in TABLES}
    return {name: frame.sort(frame.columns, nulls_last=True) for name, frame in found.items()}


def test_sigkill_at_20_points_of_l2c_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    killed = tmp_path / "killed" / "data"
    killed.parent.mkdir()
    rng = random.Random(1123)
    # How many fsyncs a whole first run makes, measured on a copy that is then thrown away.
    probe = tmp_path / "probe" / "data"
    probe.parent.mkdir()
    first = run(probe, 0)
    assert first.returncode == 0, first.stderr
    whole = fsyncs(first)
    kills, bound = 0, whole
    for attempt in range(20):
        if attempt and attempt % 2 == 0:
            advance(killed, 1.0)
        done = run(killed, rng.randint(1, bound))
        if done.returncode == -9:
            kills += 1
        else:  # it finished before its kill point: later draws stay within what such a run writes
            assert done.returncode == 0, done.stderr
            bound = max(1, fsyncs(done))
    final = run(killed, 0)
    assert final.returncode == 0, final.stderr
    assert kills >= 15, kills
    leftovers = [p for p in killed.rglob("*.tmp") if "sandbox" not in p.parts]
    assert leftovers == []  # what killed runs left half-written, the next run removed
    # The reference: one uninterrupted run of the same org at the same clock, from nothing.
    reference = tmp_path / "reference" / "data"
    reference.parent.mkdir()
    shutil.copytree(killed / "sandbox", reference / "sandbox")  # the org's seed, size and clock (and its CA)
    once = run(reference, 0)
    assert once.returncode == 0, once.stderr
    assert pl.read_parquet(killed / "event_log.parquet").equals(pl.read_parquet(reference / "event_log.parquet"))
    assert pl.read_parquet(killed / "cases.parquet").equals(pl.read_parquet(reference / "cases.parquet"))
    mine, theirs = tables(killed), tables(reference)
    for name in TABLES:
        assert mine[name].equals(theirs[name]), name
    for table in [t.name for t in load_tables().table] + ["audit", "audit_details"]:
        assert Lake(killed).fingerprint(table) == Lake(reference).fingerprint(table), table
    assert os.path.getsize(killed / "l2c.duckdb") > 0
