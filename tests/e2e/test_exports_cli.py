"""Issue #12 from a user's seat: after `l2c run`, every `l2c export` format and `l2c report` work through the real
console script, and pm4py (a test-only consumer) reads each export with the event log's counts."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pm4py
import polars as pl

from tests.e2e.conftest import run_l2c

SMALL = {"L2C_SANDBOX_LEADS": "200", "L2C_SANDBOX_SEED": "31"}


def test_every_export_and_the_report_after_a_run(tmp_path: Path) -> None:
    done = run_l2c(tmp_path, "run", **SMALL)
    assert done.returncode == 0, done.stderr
    log = pl.read_parquet(tmp_path / "data" / "event_log.parquet")
    events, cases = log.height, log.get_column("case_id").n_unique()
    out = tmp_path / "out"
    for fmt, name in [("xes", "log.xes"), ("csv", "log.csv"), ("ocel2-sqlite", "log.sqlite"),
                      ("ocel2-json", "log.jsonocel"), ("pa-incremental", "pa")]:
        exported = run_l2c(tmp_path, "export", "--format", fmt, "--out", str(out / name), **SMALL)
        assert exported.returncode == 0, (fmt, exported.stderr)
        assert re.search(rf"^export {fmt}: {events} events", exported.stdout, flags=re.M), exported.stdout
    xes = pm4py.read_xes(str(out / "log.xes"))
    assert (len(xes), xes["case:concept:name"].nunique()) == (events, cases)
    frame = pm4py.format_dataframe(pd.read_csv(out / "log.csv"), case_id="Case ID", activity_key="Activity",
                                   timestamp_key="Start Timestamp")
    assert (len(frame), frame["case:concept:name"].nunique()) == (events, cases)
    assert len(pm4py.discover_dfg(frame)[0]) > 0
    for ocel in (pm4py.read_ocel2_sqlite(str(out / "log.sqlite")), pm4py.read_ocel2_json(str(out / "log.jsonocel"))):
        assert len(ocel.events) == events
    increments = sorted((out / "pa").glob("*.csv"))
    assert len(increments) == 1 and re.fullmatch(r"\d{14}\.csv", increments[0].name)
    again = run_l2c(tmp_path, "export", "--format", "pa-incremental", "--out", str(out / "pa"), **SMALL)
    assert again.returncode == 0 and "nothing new since the last export" in again.stdout
    report = run_l2c(tmp_path, "report", "--out", str(out / "report.html"), **SMALL)
    assert report.returncode == 0, report.stderr
    assert 'id="process-map"' in (out / "report.html").read_text("utf-8")


def test_export_before_any_run_says_what_to_do(tmp_path: Path) -> None:
    done = run_l2c(tmp_path, "export", "--format", "xes", "--out", str(tmp_path / "log.xes"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "run `l2c run`" in done.stderr, done.stderr
