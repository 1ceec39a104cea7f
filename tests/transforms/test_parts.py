"""Issue #14: a full transform works through a bounded number of cases at a time (its memory is bounded by a
part, not by the lake) and gives exactly what one pass over everything gives: the event log and cases in the
same order, every database table, the data-quality report and the state an incremental build continues from."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import polars as pl
import pytest

from connector.extract import extract
from sandbox import corrupt
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms import build as build_module
from transforms.build_state import FRAMES, TransformState
from transforms.eventlog import EventLog

TABLES = ("event_log", "cases", "event_resources", "quality_issues", "accounts", "users", "quotes", "orders",
          "invoices")


def everything(data_dir: Path) -> dict[str, pl.DataFrame]:
    """The outputs as written (files in their order, database tables in insertion order) and the state frames."""
    frames = {name: pl.read_parquet(data_dir / name) for name in ("event_log.parquet", "cases.parquet")}
    with duckdb.connect(str(data_dir / "l2c.duckdb"), read_only=True) as con:
        for table in TABLES:
            frames[f"duckdb.{table}"] = con.sql(f"select * from {table}").pl()
    state = TransformState.load(data_dir)
    assert state is not None
    for name in FRAMES:
        frames[f"state.{name}"] = state.frame(data_dir, name)
    return frames


def test_a_full_build_in_parts_equals_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every kind of malformed record too: quarantined leads leave records of no case (orphans), and null times.
    with Sandbox(tmp_path / "sb", OrgState(seed=11, leads=600), SandboxOptions(corrupt=frozenset(corrupt.KINDS))) as sb:
        settings = settings_for(sb, tmp_path / "data")
        assert extract(settings).exit_code == 0
        sb.advance(4.0)  # a second run: row versions to diff, deletions, records that moved between cases
        assert extract(settings).exit_code == 0
    whole = transform(settings, full=True)
    one_pass = everything(settings.data_dir)

    per_part: list[tuple[int, int]] = []  # (cases in the part's log, orphan events) of each part built
    real_build = build_module.build

    def spied(*args: object, **kwargs: object) -> EventLog:
        built = real_build(*args, **kwargs)  # type: ignore[arg-type]
        per_part.append((built.log.get_column("case_id").n_unique(), built.orphans.height))
        return built

    size = 47
    monkeypatch.setattr(build_module, "build", spied)
    parted = transform(settings, full=True, cases_per_part=size)
    assert (parted.events, parted.cases, parted.orphans) == (whole.events, whole.cases, whole.orphans)
    # Parts of `size` cases; the last one also has the records of no case (this org has orphans).
    assert whole.cases > 4 * size and whole.orphans > 0
    assert len(per_part) == math.ceil(whole.cases / size)
    assert all(cases == size and orphans == 0 for cases, orphans in per_part[:-1])
    assert per_part[-1] == (whole.cases - size * (len(per_part) - 1), whole.orphans)
    in_parts = everything(settings.data_dir)
    for name, frame in one_pass.items():
        got = in_parts[name]
        if name in ("state.orphans", "state.case_map"):  # sets of rows, in no promised order
            got, frame = got.sort(got.columns, nulls_last=True), frame.sort(frame.columns, nulls_last=True)
        assert got.equals(frame), name
