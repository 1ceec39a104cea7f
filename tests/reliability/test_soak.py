"""Issue #13's soak: 50 consecutive incremental runs (extract + transform) with the sandbox's clock moving between
them (new leads, state changes, deletions, rework) end with the same lake state, event log, cases and DuckDB
tables as one full run of the final source state, and the log still equals the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from config.tables import load_tables
from connector.extract import extract
from connector.lake import Lake
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import in_catalogue, settings_for
from tests.transforms.test_truth import as_multiset

RUNS = 50
TABLES = ("event_log", "cases", "quality_issues", "quotes", "orders", "invoices", "event_resources", "users")


def database(data_dir: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(data_dir / "l2c.duckdb"), read_only=True) as con:
        found = {name: con.sql(f"select * from {name}").pl() for name in TABLES}
    return {name: frame.sort(frame.columns, nulls_last=True) for name, frame in found.items()}


def test_fifty_incremental_runs_equal_one_full_run(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=50, leads=250)) as sandbox:
        soaked = settings_for(sandbox, tmp_path / "soaked", L2C_PAGE_SIZE=200)
        modes = []
        for run in range(RUNS):
            if run:
                sandbox.advance(0.5 if run % 5 else 2.0)  # half-days, and now and then a longer gap
            assert extract(soaked).exit_code == 0, run
            modes.append(transform(soaked).mode)
        full = settings_for(sandbox, tmp_path / "full", L2C_PAGE_SIZE=200)
        assert extract(full).exit_code == 0
        transform(full)
        truth = in_catalogue(sandbox.org.truth)
    assert modes[0] == "full" and set(modes[1:]) <= {"incremental", "unchanged"} and "incremental" in modes
    log = pl.read_parquet(soaked.data_dir / "event_log.parquet")
    assert log.equals(pl.read_parquet(full.data_dir / "event_log.parquet"))
    assert pl.read_parquet(soaked.data_dir / "cases.parquet").equals(pl.read_parquet(full.data_dir / "cases.parquet"))
    mine, theirs = database(soaked.data_dir), database(full.data_dir)
    for name in TABLES:
        assert mine[name].equals(theirs[name]), name
    for table in [t.name for t in load_tables().table] + ["audit", "audit_details"]:
        assert Lake(soaked.data_dir).fingerprint(table) == Lake(full.data_dir).fingerprint(table), table
    assert as_multiset(log).equals(as_multiset(truth))
    assert log.filter(pl.col("activity").str.ends_with(" Deleted")).height > 0  # deletions happened on the way
