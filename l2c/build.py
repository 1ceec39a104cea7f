"""`l2c transform`: the event log from the raw lake -> `event_log.parquet` and `l2c.duckdb`.

Reads the newest landed version of every record (deleted ones included: their events stay facts), the audit
rows and details, runs the pure transforms, then writes both outputs by temp file + rename, so a reader never
sees half a log and a killed transform leaves the previous one in place. The database also holds the data-quality
report (`quality_issues`), the few object attributes the analysis views need (accounts, quotes, orders,
invoices) and the views of sql/views.sql.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl

from config.activities import load_activities
from config.settings import Settings
from config.tables import load_tables
from connector.lake import LINEAGE, ROW, Lake
from transforms import quality
from transforms.eventlog import build
from transforms.events import OP_DELETE, events_from_audit
from transforms.snapshot import combine, events_from_record_dates, events_from_snapshots

PRIMARY_KEYS = {"lead": "leadid", "opportunity": "opportunityid", "quote": "quoteid", "salesorder": "salesorderid",
                "invoice": "invoiceid", "account": "accountid", "systemuser": "systemuserid"}


@dataclass
class BuildResult:
    events: int
    cases: int
    orphans: int
    event_log: Path
    database: Path
    quality: dict[str, int] = field(default_factory=dict)  # findings per data-quality check


def newest_versions(lake: Lake, table: str, pk: str) -> pl.LazyFrame:
    """Every record's newest landed version, whether or not it was deleted later."""
    rows = lake.scan(table)
    if not lake.has_rows(table):
        return pl.LazyFrame(schema={pk: pl.Utf8})
    return (rows.filter(pl.col("_op") == "upsert").sort("_version", "_extracted_at", nulls_last=False)
            .unique(pk, keep="last", maintain_order=True))


@dataclass
class LakeInputs:
    """What the transform reads from the lake."""

    events: pl.LazyFrame
    records: dict[str, pl.LazyFrame]  # newest landed version per record, by table
    deleted_details: pl.LazyFrame
    landed: dict[str, pl.LazyFrame]  # every landed row version, lineage dropped (duplicate-version check)
    created_activities: set[str]  # activities that mark an object's creation


def read_lake(settings: Settings) -> LakeInputs:
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
    history = {name: lake.scan(name) for name in sorted({rule.table for rule in rules}) if lake.has_rows(name)}
    events = combine(events_from_audit(audit, details, rules), events_from_snapshots(history, rules),
                     events_from_record_dates(records, rules))  # audit wins; the rest where audit is missing
    deletes = audit.filter(pl.col("operation") == OP_DELETE).select("auditid")
    landed = {name: lake.scan(name).filter(pl.col("_op") == "upsert").drop(*LINEAGE, ROW, strict=False)
              for name in PRIMARY_KEYS if lake.has_rows(name)}
    return LakeInputs(events, records, details.join(deletes, on="auditid", how="semi"), landed,
                      {rule.name for rule in rules if rule.trigger == "created"})


def transform(settings: Settings) -> BuildResult:
    inputs = read_lake(settings)
    records = inputs.records
    log, cases, orphans = build(inputs.events, records, inputs.deleted_details, records["systemuser"])
    issues = quality.quality_issues(log, records, orphans, keys=PRIMARY_KEYS, landed=inputs.landed,
                                    created_activities=inputs.created_activities)
    out_dir = settings.data_dir
    event_log = _atomic_parquet(log, out_dir / "event_log.parquet")
    cases_path = _atomic_parquet(cases, out_dir / "cases.parquet")
    extra = {**analysis_tables(records), "quality_issues": issues}
    database = _load_duckdb(out_dir / "l2c.duckdb", event_log, cases_path, extra)
    return BuildResult(log.height, cases.height, orphans.height, event_log, database, quality.counts(issues))


# --- the object tables the analysis views of sql/views.sql need beside event_log and cases ------------------

def _column(frame: pl.LazyFrame, name: str, dtype: pl.DataType | type[pl.DataType] = pl.Utf8) -> pl.Expr:
    """A column, or nulls when this lake has no such column (a trimmed config/tables.toml)."""
    return pl.col(name) if name in frame.collect_schema().names() else pl.lit(None, dtype)


def analysis_tables(records: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    """accounts, quotes, orders, invoices: a few attributes of each record's newest landed version."""
    account, quote, order, invoice = (records[name] for name in ("account", "quote", "salesorder", "invoice"))
    money = pl.Decimal(38, 4)
    return {
        "accounts": account.select(
            pl.col("accountid").alias("account_id"), _column(account, "name").alias("account"),
            _column(account, "territorycode__label").alias("region"),
            _column(account, "industrycode__label").alias("industry"),
            _column(account, "numberofemployees", pl.Int32).alias("employees")).collect(),
        "quotes": quote.select(
            pl.col("quoteid").alias("quote_id"), _column(quote, "_opportunityid_value").alias("opportunity_id"),
            _column(quote, "_customerid_value").alias("account_id"), _column(quote, "quotenumber").alias("number"),
            _column(quote, "revisionnumber", pl.Int32).alias("revision"),
            _column(quote, "_ownerid_value__label").alias("owner"),
            _column(quote, "statecode__label").alias("state"),
            _column(quote, "discountpercentage", pl.Float64).cast(pl.Float64).alias("discount_pct"),
            _column(quote, "totallineitemamount", money).alias("line_amount"),
            _column(quote, "totalamount", money).alias("total_amount")).collect(),
        "orders": order.select(
            pl.col("salesorderid").alias("order_id"), _column(order, "_opportunityid_value").alias("opportunity_id"),
            _column(order, "_quoteid_value").alias("quote_id"), _column(order, "_customerid_value").alias("account_id"),
            _column(order, "statecode__label").alias("state"),
            _column(order, "totalamount", money).alias("total_amount")).collect(),
        "invoices": invoice.select(
            pl.col("invoiceid").alias("invoice_id"), _column(invoice, "_opportunityid_value").alias("opportunity_id"),
            _column(invoice, "_salesorderid_value").alias("order_id"),
            _column(invoice, "_customerid_value").alias("account_id"),
            _column(invoice, "paymenttermscode__label").alias("payment_terms"),
            _column(invoice, "duedate", pl.Date).alias("due_date"),
            _column(invoice, "statecode__label").alias("state"),
            _column(invoice, "totalamount", money).alias("total_amount")).collect(),
    }


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def _load_duckdb(path: Path, event_log: Path, cases: Path, extra: dict[str, pl.DataFrame]) -> Path:
    """sql/load.sql (event_log, cases), the `extra` frames as tables of their names, then sql/views.sql."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    sql = resources.files("sql")
    with duckdb.connect(str(tmp)) as con:
        con.execute("SET VARIABLE event_log_path = ?", [str(event_log)])
        con.execute("SET VARIABLE cases_path = ?", [str(cases)])
        con.execute(sql.joinpath("load.sql").read_text("utf-8"))
        for name, frame in extra.items():
            con.register("_frame", frame)
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _frame')
            con.unregister("_frame")
        con.execute(sql.joinpath("views.sql").read_text("utf-8"))
    os.replace(tmp, path)
    return path
