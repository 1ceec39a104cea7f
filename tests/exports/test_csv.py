"""`l2c export --format csv`: the header tools map on their own, every event with its exact times (UTC, ISO 8601),
amounts and UTF-8 names; pm4py reads the CSV and the Parquet event log through `format_dataframe` and discovers
the DFG counted from the log, with the log's event and case counts; the file is replaced all or nothing.

Expected values come from `built.log` (or a frame written here), never from the exporter.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pm4py
import polars as pl
import pytest

from exports import tabular
from tests.exports.conftest import ORDER, Built, data_dir_with, log_dfg, synthetic_log

# What Power Automate, Disco, ProcessMind and Celonis map without help (see exports/tabular.py for the sources).
MAPPED = ["Case ID", "Activity", "Start Timestamp", "End Timestamp", "Resource"]
# The log's columns, under the names users see.
NAMES = {
    "case_id": "Case ID", "activity": "Activity", "timestamp": "Start Timestamp", "end_timestamp": "End Timestamp",
    "resource": "Resource", "event_id": "Event ID", "object_type": "Object Type", "object_id": "Object ID",
    "source": "Source", "case_type": "Case Type", "owner": "Owner", "outcome": "Outcome", "amount": "Amount",
    "currency": "Currency", "lead_source": "Lead Source", "stage": "Stage", "account": "Account", "region": "Region",
}
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}$"  # Power Automate's YYYY-MM-DDTHH:MM:SS.sss


@pytest.fixture(scope="module")
def exported(built: Built, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("csv") / "events.csv"
    return out, tabular.export(built.settings, out)


def read_back(path: Path) -> pl.DataFrame:
    """The CSV as the log's columns and types: strings kept verbatim, times parsed as UTC, amounts as Decimal."""
    raw = pl.read_csv(path, infer_schema=False)
    return raw.select(
        pl.col(NAMES["timestamp"]).str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f", time_zone="UTC", time_unit="us")
        .alias("timestamp"),
        pl.col(NAMES["end_timestamp"]).str.to_datetime("%Y-%m-%dT%H:%M:%S%.3f", time_zone="UTC", time_unit="us")
        .alias("end_timestamp"),
        pl.col(NAMES["amount"]).cast(pl.Decimal(38, 4)).alias("amount"),
        *(pl.col(name).alias(column) for column, name in NAMES.items()
          if column not in ("timestamp", "end_timestamp", "amount")),
    )


def test_header_is_what_mining_tools_map(exported: tuple[Path, Any]) -> None:
    raw = exported[0].read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # no BOM: it would become part of "Case ID" for some readers
    raw.decode("utf-8")  # strict
    header = raw.split(b"\n", 1)[0].decode()
    assert header.split(",")[:5] == MAPPED
    assert header.split(",") == list(NAMES.values())


def test_every_event_round_trips_exactly(built: Built, exported: tuple[Path, Any]) -> None:
    path, done = exported
    # Dataverse keeps whole seconds, so the CSV's milliseconds lose nothing; if that ever changes the export
    # warns (test_sub_millisecond_times_are_reported) and this equality would fail loudly
    assert (built.log.get_column("timestamp").dt.microsecond() % 1000 == 0).all()
    assert (done.events, done.cases) == (built.log.height, built.log.get_column("case_id").n_unique())
    raw = pl.read_csv(path, infer_schema=False)
    assert raw.get_column("Start Timestamp").str.contains(TIME_PATTERN).all()
    back = read_back(path).select(built.log.columns)
    assert back.equals(built.log)  # same rows, same order, nulls as nulls, names byte for byte
    non_ascii = built.log.filter(pl.col("resource").str.contains(r"[^\x00-\x7f]") |
                                 pl.col("account").str.contains(r"[^\x00-\x7f]"))
    assert non_ascii.height > 0  # the org has names like "Zoë Ångström" and "Ελληνικά Α.Ε."; they survived above


def test_pm4py_discovers_the_logs_dfg_from_the_csv(built: Built, exported: tuple[Path, Any]) -> None:
    frame = pm4py.format_dataframe(pd.read_csv(exported[0], encoding="utf-8"), case_id="Case ID",
                                   activity_key="Activity", timestamp_key="Start Timestamp")
    assert len(frame) == built.log.height
    assert frame["case:concept:name"].nunique() == built.log.get_column("case_id").n_unique()
    ordered = pl.from_pandas(frame.sort_values(["case:concept:name", "time:timestamp", "concept:name", "Event ID"])
                             [["Event ID", "time:timestamp"]])
    assert ordered.select(
        pl.col("Event ID").alias("event_id"),
        pl.col("time:timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias("timestamp"),
    ).equals(built.log.sort(ORDER).select("event_id", "timestamp"))
    dfg, starts, ends = pm4py.discover_dfg(frame)
    assert (dict(dfg), dict(starts), dict(ends)) == log_dfg(built.log)


def test_pm4py_discovers_the_same_dfg_from_the_parquet_log(built: Built) -> None:
    frame = pm4py.format_dataframe(pd.read_parquet(built.data_dir / "event_log.parquet"), case_id="case_id",
                                   activity_key="activity", timestamp_key="timestamp")
    assert len(frame) == built.log.height
    assert frame["case:concept:name"].nunique() == built.cases.height == built.log.get_column("case_id").n_unique()
    dfg, starts, ends = pm4py.discover_dfg(frame)
    assert (dict(dfg), dict(starts), dict(ends)) == log_dfg(built.log)


def test_small_batches_give_the_same_file(built: Built, exported: tuple[Path, Any], tmp_path: Path) -> None:
    batch = 97
    cases = built.log.get_column("case_id")
    assert any(cases[i - 1] == cases[i] for i in range(batch, built.log.height, batch))  # a case spans batches
    done = tabular.export(built.settings, tmp_path / "small.csv", batch_size=batch)
    assert (tmp_path / "small.csv").read_bytes() == exported[0].read_bytes()
    assert (done.events, done.cases) == (exported[1].events, exported[1].cases)


def test_quotes_commas_newlines_and_amounts(built: Built, tmp_path: Path) -> None:
    t0 = datetime(2025, 3, 1, 9, 30, 15, tzinfo=UTC)
    rows = [{"event_id": "e1", "case_id": 'c,"1"', "case_type": "lead", "activity": "Lead Captured",
             "timestamp": t0, "resource": "O'Brien, \"Bob\"\nline two", "account": "Ελληνικά Α.Ε.",
             "amount": Decimal("1234567890123456789012.3456")}]
    log = synthetic_log(built.log.schema, rows)
    settings = data_dir_with(tmp_path / "data", log, built.settings)
    out = tmp_path / "out.csv"
    tabular.export(settings, out)
    assert read_back(out).select(log.columns).equals(log)  # 26 significant digits: exact, not a float


def test_sub_millisecond_times_are_reported(built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t0 = datetime(2025, 3, 1, 9, 30, 15, 123_456, tzinfo=UTC)
    log = synthetic_log(built.log.schema, [{"event_id": "e1", "case_id": "c1", "activity": "A", "timestamp": t0}])
    settings = data_dir_with(tmp_path / "data", log, built.settings)
    with caplog.at_level(logging.WARNING, logger="l2c.exports"):
        tabular.export(settings, tmp_path / "out.csv")
    assert "2 timestamps have sub-millisecond digits" in caplog.text  # timestamp and end_timestamp
    assert pl.read_csv(tmp_path / "out.csv", infer_schema=False).item(0, "Start Timestamp") == "2025-03-01T09:30:15.123"


def test_a_failed_export_leaves_the_previous_file(
        built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "events.csv"
    out.write_text("previous export\n")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        tabular.export(built.settings, out)
    monkeypatch.undo()
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv"]  # no temp file left behind
    tabular.export(built.settings, out)
    assert pl.read_csv(out, infer_schema=False).height == built.log.height
