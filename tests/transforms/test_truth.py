"""The event log equals the sandbox's ground truth (the simulator's own record, independent of transforms/):
same cases, activities, timestamps, resources and objects, for several seeds and sizes, after one full run
and after a sequence of incremental runs; and incremental equals full, and a rerun changes nothing. l2c's default
config extracts the default catalogue, so the truth compared is that catalogue's events (`in_catalogue`)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest

from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import in_catalogue, settings_for

KEY = ["case_id", "case_type", "activity", "timestamp", "resource", "object_type", "object_id"]


def as_multiset(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(KEY).group_by(KEY).len().sort(KEY)




@pytest.mark.parametrize(("seed", "leads"), [(3, 300), (5, 1200), (21, 2500)])
def test_event_log_equals_ground_truth(tmp_path: Path, seed: int, leads: int) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=seed, leads=leads)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        result = transform(settings)
        truth = in_catalogue(sandbox.org.truth)
    log = pl.read_parquet(result.event_log)
    assert result.orphans == 0
    assert as_multiset(log).equals(as_multiset(truth))
    assert log.get_column("event_id").n_unique() == log.height
    assert log.equals(log.sort(["case_id", "timestamp", "activity", "event_id"]))
    with duckdb.connect(str(result.database), read_only=True) as con:
        assert con.execute("select count(*) from event_log").fetchone() == (log.height,)
        assert con.execute("select count(distinct \"case:concept:name\") from event_log_pm4py").fetchone() == (
            truth.get_column("case_id").n_unique(),)
        assert con.execute("select typeof(\"timestamp\") from event_log limit 1").fetchone() == (
            "TIMESTAMP WITH TIME ZONE",)


def test_incremental_runs_equal_one_full_run_and_the_truth(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=13, leads=800)) as sandbox:
        incremental = settings_for(sandbox, tmp_path / "incremental")
        assert extract(incremental).exit_code == 0
        for days in (2, 5, 1):
            sandbox.advance(days)
            assert extract(incremental).exit_code == 0
        first = transform(incremental)
        log = pl.read_parquet(first.event_log)
        again = pl.read_parquet(transform(incremental).event_log)
        full = settings_for(sandbox, tmp_path / "full")
        assert extract(full).exit_code == 0
        full_log = pl.read_parquet(transform(full).event_log)
        truth = in_catalogue(sandbox.org.truth)
    assert log.equals(again)  # idempotent
    assert log.equals(full_log)  # incremental equals full
    assert as_multiset(log).equals(as_multiset(truth))
