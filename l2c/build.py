"""`l2c transform`: the event log from the raw lake -> `event_log.parquet` and `l2c.duckdb`.

Reads the newest landed version of every record (deleted ones included: their events stay facts), the audit
rows and details, runs the pure transforms, then writes both outputs by temp file + rename, so a reader never
sees half a log and a killed transform leaves the previous one in place. The database also holds the data-quality
report (`quality_issues`), the few object attributes the analysis views need (accounts, quotes, orders,
invoices) and the views of sql/views.sql.

Incremental: the transform remembers which landed pages its outputs cover (l2c/build_state.py). The next one
reads only the records of the new pages, works out the cases they touch (transforms/incremental.py) and
recomputes just those, keeping every other case's rows; the result equals a full rebuild, which happens
when there is no usable state, the rules or the code changed, a covered page changed or vanished, an output
is missing, or `--full` asks for it. With no new page and every output present it does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl

from config.activities import Rule, load_activities
from config.settings import Settings
from config.tables import load_tables
from connector.lake import LINEAGE, ROW, TEMP_SUFFIX, Lake, remove_temp_files, write_output
from connector.lock import RunLock
from l2c.analysis import analysis_tables
from l2c.build_state import TransformState, fingerprint, lake_pages, state_dir, touched_objects
from transforms import quality
from transforms.cases import case_accounts, case_map
from transforms.eventlog import build
from transforms.events import OP_DELETE, events_from_audit
from transforms.incremental import LOG_ORDER, event_users, replace_cases, replace_objects, touched_cases
from transforms.snapshot import combine, events_from_record_dates, events_from_snapshots, only

PRIMARY_KEYS = {"lead": "leadid", "opportunity": "opportunityid", "quote": "quoteid", "salesorder": "salesorderid",
                "invoice": "invoiceid", "account": "accountid", "systemuser": "systemuserid"}

Schema = dict[str, pl.DataType | type[pl.DataType]]
AUDIT_SCHEMA: Schema = {"auditid": pl.Utf8, "createdon": pl.Datetime("us", "UTC"), "operation": pl.Int32,
                        "action": pl.Int32, "action__label": pl.Utf8, "objecttypecode": pl.Utf8,
                        "_objectid_value": pl.Utf8, "_userid_value": pl.Utf8}
DETAILS_SCHEMA: Schema = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8,
                          "new_values": pl.Utf8}

@dataclass
class BuildResult:
    events: int
    cases: int
    orphans: int
    event_log: Path
    database: Path
    quality: dict[str, int] = field(default_factory=dict)  # findings per data-quality check
    mode: str = "full"  # "full", "incremental", or "unchanged" (nothing new since the last build)
    recomputed: int = 0  # cases whose events were (re)computed
    reason: str = ""  # why a full build (when it was not asked for)


def newest_versions(lake: Lake, table: str, pk: str) -> pl.LazyFrame:
    """Every record's newest landed version, whether or not it was deleted later."""
    rows = lake.scan(table)
    if not lake.has_rows(table):
        return pl.LazyFrame(schema={pk: pl.Utf8})
    return (rows.filter(pl.col("_op") == "upsert").sort("_version", "_extracted_at", nulls_last=False)
            .unique(pk, keep="last", maintain_order=True))


@dataclass
class LakeInputs:
    """What the transform reads from the lake (lazily: nothing is read until a frame is collected)."""

    records: dict[str, pl.LazyFrame]  # newest landed version per record, by table
    deleted_details: pl.LazyFrame
    landed: dict[str, pl.LazyFrame]  # every landed row version, lineage dropped (duplicate-version check)
    created_activities: set[str]  # activities that mark an object's creation
    rules: list[Rule]
    audit: pl.LazyFrame
    details: pl.LazyFrame
    history: dict[str, pl.LazyFrame]  # every landed version of each rule's table

    def events(self, objects: pl.LazyFrame | None = None) -> pl.LazyFrame:
        """The events of all three paths, each fact once; only those of `objects` (object_type, object_id)
        when given. Audit wins; snapshot_diff and record_dates fill in where the audit is missing."""
        newest = {name: only(frame, name, PRIMARY_KEYS[name], objects) for name, frame in self.records.items()}
        return combine(
            events_from_audit(_of(self.audit, "_objectid_value", objects), _of(self.details, "objectid", objects),
                              self.rules),
            events_from_snapshots(self.history, self.rules, objects),
            events_from_record_dates(newest, self.rules))


def read_lake(settings: Settings) -> LakeInputs:
    tables = load_tables(settings.tables_file)
    rules = load_activities(settings.activity_map, tables)
    lake = Lake(settings.data_dir)
    records = {name: newest_versions(lake, name, pk) for name, pk in PRIMARY_KEYS.items()}
    # The columns the transforms read, chosen before the dedupe (which would otherwise compare whole rows).
    audit, details = (distinct(lake.scan(table).select(list(schema)), "auditid") if lake.has_rows(table)
                      else pl.LazyFrame(schema=schema)
                      for table, schema in (("audit", AUDIT_SCHEMA), ("audit_details", DETAILS_SCHEMA)))
    history = {name: lake.scan(name) for name in sorted({rule.table for rule in rules}) if lake.has_rows(name)}
    deletes = audit.filter(pl.col("operation") == OP_DELETE).select("auditid")
    landed = {name: lake.scan(name).filter(pl.col("_op") == "upsert").drop(*LINEAGE, ROW, strict=False)
              for name in PRIMARY_KEYS if lake.has_rows(name)}
    return LakeInputs(records, details.join(deletes, on="auditid", how="semi"), landed,
                      {rule.name for rule in rules if rule.trigger == "created"}, rules, audit, details, history)


def distinct(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """`rows` with each `key` once. The extract lands each audit row once (re-read overlaps are dropped, a
    resumed page replaces its own file), so this first counts the distinct keys, one pass over that column
    alone; only a lake that does hold a duplicate pays for dropping it. (A plain `unique(key)` hashes whole
    rows: 12 s and 7 GB for 10M audit rows, against 2 s and 2 GB for the count.)
    The count is of the keys' 64-bit hashes, not of the texts: equal keys have equal hashes, so as many distinct
    hashes as rows proves the keys distinct; a collision can only send a lake without duplicates down the
    slower, still correct, path."""
    counts = rows.select(pl.col(key).hash().n_unique().alias("keys"), pl.len().alias("rows")).collect()
    if counts.item(0, "keys") == counts.item(0, "rows"):
        return rows
    return rows.filter(pl.col(key).is_first_distinct())


def _of(audit: pl.LazyFrame, key: str, objects: pl.LazyFrame | None) -> pl.LazyFrame:
    """Audit rows (or details) of `objects`; all when None."""
    if objects is None:
        return audit
    wanted = objects.select(pl.col("object_type").alias("objecttypecode"), pl.col("object_id").alias(key))
    return audit.join(wanted, on=["objecttypecode", key], how="semi")


def transform(settings: Settings, *, full: bool = False) -> BuildResult:
    """Build (or bring up to date) the outputs under the run lock; `full` ignores the previous build."""
    with RunLock(settings.data_dir):
        _remove_temp_files(settings.data_dir)
        return _transform(settings, full)


def _transform(settings: Settings, full: bool) -> BuildResult:
    data_dir = settings.data_dir
    out = {"event_log": data_dir / "event_log.parquet", "cases": data_dir / "cases.parquet",
           "database": data_dir / "l2c.duckdb"}
    tables = load_tables(settings.tables_file)
    stamp = fingerprint(load_activities(settings.activity_map, tables), tables)
    pages = lake_pages(data_dir)
    previous = None if full else TransformState.load(data_dir)
    reason = "asked for (--full)" if full else _why_full(previous, stamp, pages, out)
    if reason is None and previous is not None:
        new = sorted(set(pages) - set(previous.pages))
        if not new and out["database"].is_file():
            return BuildResult(previous.events, previous.cases, previous.orphans, out["event_log"], out["database"],
                               dict(previous.quality), mode="unchanged")
        inputs = read_lake(settings)
        cases_of = case_map(inputs.records, inputs.deleted_details).collect()
        touched = touched_objects(data_dir, new)
        cases, objects = touched_cases(touched.lazy(), previous.frame(data_dir, "case_map").lazy(), cases_of.lazy(),
                                       previous.frame(data_dir, "event_users").lazy(), case_accounts(inputs.records))
        events = inputs.events(objects.lazy()).collect()
        log, case_table, orphans = build(events.lazy(), inputs.records, inputs.deleted_details,
                                         inputs.records["systemuser"], cases_of.lazy())
        strays = log.join(cases, on="case_id", how="anti")
        assert strays.is_empty(), f"recomputed events outside the touched cases: {strays.head(3)}"
        log = replace_cases(pl.read_parquet(out["event_log"]), log, cases, LOG_ORDER)
        case_table = replace_cases(pl.read_parquet(out["cases"]), case_table, cases, ["case_id"])
        orphans = replace_objects(previous.frame(data_dir, "orphans"), orphans, objects)
        users = replace_cases(previous.frame(data_dir, "event_users"),
                              event_users(events.lazy(), cases_of.lazy()).collect(), cases, ["case_id", "event_id"])
        mode, recomputed = "incremental", cases.height
    else:
        inputs = read_lake(settings)
        cases_of = case_map(inputs.records, inputs.deleted_details).collect()
        events = inputs.events().collect()
        log, case_table, orphans = build(events.lazy(), inputs.records, inputs.deleted_details,
                                         inputs.records["systemuser"], cases_of.lazy())
        users = event_users(events.lazy(), cases_of.lazy()).collect()
        mode, recomputed = "full", case_table.height
    issues = quality.quality_issues(log, inputs.records, orphans, keys=PRIMARY_KEYS, landed=inputs.landed,
                                    audit=inputs.audit, details=inputs.details,
                                    created_activities=inputs.created_activities)
    write_output(log, out["event_log"])
    write_output(case_table, out["cases"])
    extra = {**analysis_tables(inputs.records), "quality_issues": issues,
             "event_resources": users.select("event_id", "user_id")}
    _load_duckdb(out["database"], out["event_log"], out["cases"], extra)
    counts = quality.counts(issues)
    state = TransformState(stamp, pages, (previous.generation + 1) if previous else 1, log.height,
                           case_table.height, orphans.height, counts)
    state.save(data_dir, {"case_map": cases_of, "event_users": users, "orphans": orphans})
    return BuildResult(log.height, case_table.height, orphans.height, out["event_log"], out["database"], counts,
                       mode=mode, recomputed=recomputed, reason=reason or "")


def _why_full(previous: TransformState | None, stamp: str, pages: dict[str, list[int]],
              outputs: dict[str, Path]) -> str | None:
    """Why the previous build cannot be brought up to date incrementally; None when it can."""
    if previous is None:
        return "no previous build"
    if previous.fingerprint != stamp:
        return "the activity rules, table declarations or transform code changed"
    if any(pages.get(page) != seen for page, seen in previous.pages.items()):
        return "a landed page the previous build read has changed or vanished"
    missing = [path.name for name, path in outputs.items() if name != "database" and not path.is_file()]
    if missing:
        return f"{', '.join(missing)} is missing"
    return None


def _remove_temp_files(data_dir: Path) -> None:
    """What a transform killed mid-write left: output temp files and the half-built database."""
    remove_temp_files(iter([*data_dir.glob(f".*{TEMP_SUFFIX}"), *state_dir(data_dir).glob(f".*{TEMP_SUFFIX}")]))
    (data_dir / "l2c.duckdb.tmp").unlink(missing_ok=True)


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
    with open(tmp, "rb") as handle:  # durable before it replaces the previous database
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
