"""`l2c transform`: the event log from the raw lake -> `event_log.parquet` and `l2c.duckdb`.

Reads the newest landed version of every record (deleted ones included: their events stay facts), the audit
rows and details, runs the pure transforms, then writes both outputs by temp file + rename, so a reader never
sees half a log and a killed transform leaves the previous one in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl

from config.activities import load_activities
from config.settings import Settings
from config.tables import load_tables
from connector.lake import Lake
from transforms.eventlog import build
from transforms.events import OP_DELETE, events_from_audit

PRIMARY_KEYS = {"lead": "leadid", "opportunity": "opportunityid", "quote": "quoteid", "salesorder": "salesorderid",
                "invoice": "invoiceid", "account": "accountid", "systemuser": "systemuserid"}


@dataclass
class BuildResult:
    events: int
    cases: int
    orphans: int
    event_log: Path
    database: Path


def newest_versions(lake: Lake, table: str, pk: str) -> pl.LazyFrame:
    """Every record's newest landed version, whether or not it was deleted later."""
    rows = lake.scan(table)
    if not lake.has_rows(table):
        return pl.LazyFrame(schema={pk: pl.Utf8})
    return (rows.filter(pl.col("_op") == "upsert").sort("_version", "_extracted_at", nulls_last=False)
            .unique(pk, keep="last", maintain_order=True))


def transform(settings: Settings) -> BuildResult:
    tables = load_tables(settings.tables_file)
    rules = load_activities(settings.activity_map, tables)
    lake = Lake(settings.data_dir)
    records = {name: newest_versions(lake, name, pk) for name, pk in PRIMARY_KEYS.items()}
    audit = lake.scan("audit").unique("auditid") if lake.has_rows("audit") else pl.LazyFrame(
        schema={"auditid": pl.Utf8, "createdon": pl.Datetime("us", "UTC"), "operation": pl.Int32,
                "action": pl.Int32, "objecttypecode": pl.Utf8, "_objectid_value": pl.Utf8, "_userid_value": pl.Utf8})
    details = lake.scan("audit_details").unique("auditid") if lake.has_rows("audit_details") else pl.LazyFrame(
        schema={"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8,
                "new_values": pl.Utf8})
    events = events_from_audit(audit, details, rules)
    deletes = audit.filter(pl.col("operation") == OP_DELETE).select("auditid")
    deleted_details = details.join(deletes, on="auditid", how="semi")
    log, cases, orphans = build(events, records, deleted_details, records["systemuser"])
    out_dir = settings.data_dir
    event_log = _atomic_parquet(log, out_dir / "event_log.parquet")
    cases_path = _atomic_parquet(cases, out_dir / "cases.parquet")
    database = _load_duckdb(out_dir / "l2c.duckdb", event_log, cases_path)
    return BuildResult(log.height, cases.height, orphans.height, event_log, database)


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def _load_duckdb(path: Path, event_log: Path, cases: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    sql = resources.files("sql").joinpath("load.sql").read_text("utf-8")
    with duckdb.connect(str(tmp)) as con:
        con.execute("SET VARIABLE event_log_path = ?", [str(event_log)])
        con.execute("SET VARIABLE cases_path = ?", [str(cases)])
        con.execute(sql)
    os.replace(tmp, path)
    return path
