"""A test-side reading of a Link CSV export with nothing but the csv module and model.json, and the live rows of
the simulator rendered independently in the D5 formats, so the writer is checked against the spec, not itself."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from sandbox.orgdata import OrgData
from sandbox.schema import TABLES

Row = dict[str, str]
SINK = "%m/%d/%Y %I:%M:%S %p"


def attributes(model_path: Path) -> dict[str, list[str]]:
    document = json.loads(model_path.read_text(encoding="utf-8"))
    return {e["name"]: [a["name"] for a in e["attributes"]] for e in document["entities"]}


def read_rows(files: list[Path], names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for path in files:
        with open(path, newline="", encoding="utf-8") as handle:
            for record in csv.reader(handle):
                assert len(record) == len(names), (path, record)
                rows.append(dict(zip(names, record, strict=True)))
    return rows


def sink(text: str) -> datetime:
    return datetime.strptime(text, SINK).replace(tzinfo=UTC)


def newest(rows: list[Row]) -> dict[str, Row]:
    """The newest row per Id: by SinkModifiedOn, then versionnumber, deletes last (D6)."""
    def key(row: Row) -> tuple[Any, ...]:
        version = int(row["versionnumber"]) if row["versionnumber"] else 1 << 62
        return sink(row["SinkModifiedOn"]), version, row["IsDelete"] == "True"

    out: dict[str, Row] = {}
    for row in sorted(rows, key=key):
        out[row["Id"]] = row
    return out


def text(value: Any, name: str) -> str:
    """A live value as D5 writes it (empty for null)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00" if name == "createdon" else "%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat() + "T00:00:00Z"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def live_rows(org: OrgData, table: str) -> dict[str, Row]:
    """The live rows of `table` keyed by primary key, every Dataverse column as export text by logical name."""
    t = TABLES[table]
    out: dict[str, Row] = {}
    for record in org.rows[table].to_dicts():
        row = {c.name: text(record[c.api_name], c.name) for c in t.columns}
        for c in t.columns:
            if c.type in ("Owner", "Customer"):
                row[f"{c.name}type"] = c.targets[0] if record[c.api_name] else ""
        out[row[t.primary_id]] = row
    return out


def table_files(root: Path, table: str) -> list[Path]:
    return sorted((root / table).glob("*.csv"))


def versions_expected(org: OrgData, table: str, interval_s: int) -> pl.DataFrame:
    """Per record: the number of sync cycles in which the audit history shows a change (1 without history)."""
    hs = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    audits = org.audits.filter(pl.col("objecttypecode") == table)
    if audits.is_empty():
        return org.rows[table].select(id=TABLES[table].primary_id, versions=pl.lit(1, pl.UInt32))
    return audits.with_columns(
        batch=pl.max_horizontal((pl.col("createdon").dt.epoch("s") - hs) // interval_s, pl.lit(-1)),
    ).group_by(id="_objectid_value").agg(versions=pl.col("batch").n_unique())
