"""The data-quality report: what is wrong with the log before it leaves the pipeline, one row per finding.

Checks (name, severity): `event_out_of_order` (warning) an object whose creation activity comes after another
of its events; `missing_timestamp` (error) an event or a record without a time; `duplicate_row_version` (error)
the same id and `_version` landed twice with different content (labels aside); `orphan_record` (error) a record
whose events link to no case (a quote without its opportunity: kept out of the log); `dateonly_timezone_shift`
(warning) a UserLocal DateOnly value that is a user's local midnight stored in UTC, not UTC midnight, so
reading it as a UTC date gives another day than the user entered; `unreadable_audit` (warning) an audit row
whose action code the org's metadata does not know, or audit details whose old/new values do not parse: no
rule can read them, so an event they would give is missing; `metadata_value_mismatch` (warning) a DateTime value
served in another shape than the column's metadata says (a date in a timestamp column or the reverse), landed
converted (connector/rows.py notes it). Pure polars; `case_id` is filled where the object is in the log.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import polars as pl

ISSUE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "check": pl.Utf8, "severity": pl.Utf8, "object_type": pl.Utf8, "object_id": pl.Utf8, "case_id": pl.Utf8,
    "detail": pl.Utf8,
}
CHECKS = {  # check -> (severity, how the run summary counts it)
    "event_out_of_order": ("warning", "objects with events before their creation"),
    "missing_timestamp": ("error", "events or records without a timestamp"),
    "duplicate_row_version": ("error", "row versions landed twice with different content"),
    "orphan_record": ("error", "orphan records (linked to no case)"),
    "dateonly_timezone_shift": ("warning", "DateOnly values shifted by time zone"),
    "unreadable_audit": ("warning", "audit rows no rule can read"),
    "metadata_value_mismatch": ("warning", "values whose shape disagrees with the column's metadata"),
}
_DAY_MS = 86_400_000


def _issues(frame: pl.LazyFrame, check: str) -> pl.LazyFrame:
    return frame.select(pl.lit(check).alias("check"), pl.lit(CHECKS[check][0]).alias("severity"),
                        "object_type", "object_id", "case_id", "detail").cast(ISSUE_SCHEMA)  # type: ignore[arg-type]


def out_of_order(log: pl.LazyFrame, created: Collection[str]) -> pl.LazyFrame:
    """Objects whose first creation event is later than their earliest other event."""
    is_created = pl.col("activity").is_in(list(created))
    per_object = log.filter(pl.col("timestamp").is_not_null()).group_by("object_type", "object_id").agg(
        pl.col("case_id").first(),
        pl.col("timestamp").filter(is_created).min().alias("created_at"),
        pl.col("timestamp").filter(~is_created).min().alias("first_other"),
        pl.col("activity").filter(~is_created).sort_by(pl.col("timestamp").filter(~is_created)).first()
        .alias("other"),
    )
    late = per_object.filter(pl.col("created_at") > pl.col("first_other"))
    return _issues(late.with_columns(pl.format("created {} after {} at {}", pl.col("created_at"), pl.col("other"),
                                               pl.col("first_other")).alias("detail")), "event_out_of_order")


def missing_timestamps(log: pl.LazyFrame, records: Mapping[str, pl.LazyFrame], keys: Mapping[str, str],
                       case_map: pl.LazyFrame) -> pl.LazyFrame:
    events = log.filter(pl.col("timestamp").is_null()).with_columns(
        pl.format("event {} ({}) has no timestamp", pl.col("event_id"), pl.col("activity")).alias("detail"))
    parts = [_issues(events, "missing_timestamp")]
    for table, frame in records.items():
        if table not in keys or "createdon" not in frame.collect_schema().names():
            continue
        rows = frame.filter(pl.col("createdon").is_null()).select(
            pl.lit(table).alias("object_type"), pl.col(keys[table]).alias("object_id"),
            pl.lit(f"{table} row has no createdon").alias("detail"))
        parts.append(_issues(rows.join(case_map, on=["object_type", "object_id"], how="left"), "missing_timestamp"))
    return pl.concat(parts)


def duplicate_versions(landed: Mapping[str, pl.LazyFrame], keys: Mapping[str, str],
                       case_map: pl.LazyFrame) -> pl.LazyFrame:
    """`landed`: every row version as landed (lineage columns dropped, `_version` kept), per table."""
    parts = []
    for table, frame in landed.items():
        names = frame.collect_schema().names()
        if table not in keys or "_version" not in names:
            continue
        pk = keys[table]
        # A FormattedValue (`__label`) is computed when the row is read: a renamed user or option relabels every
        # row that points at it without a new version ([PD] webapi/query/select-columns.md, formatted values).
        content = [c for c in names if c not in (pk, "_version") and not c.endswith("__label")]
        clashes = (frame.with_columns(pl.struct(content).hash().alias("_content"))
                   .group_by(pk, "_version").agg(pl.col("_content").n_unique().alias("contents"))
                   .filter(pl.col("contents") > 1))
        parts.append(clashes.select(
            pl.lit(table).alias("object_type"), pl.col(pk).alias("object_id"),
            pl.format("version {} landed with {} different contents", pl.col("_version"), pl.col("contents"))
            .alias("detail")).join(case_map, on=["object_type", "object_id"], how="left"))
    if not parts:
        return pl.LazyFrame(schema=ISSUE_SCHEMA)
    return _issues(pl.concat(parts), "duplicate_row_version")


def orphan_records(orphans: pl.DataFrame) -> pl.LazyFrame:
    """One row per object among the events that link to no case (`transforms.eventlog.build`'s orphans)."""
    per_object = orphans.lazy().group_by("object_type", "object_id").agg(
        pl.len().alias("events"), pl.col("activity").sort_by("timestamp").str.join(", ").alias("activities"))
    return _issues(per_object.with_columns(
        pl.lit(None, pl.Utf8).alias("case_id"),
        pl.format("links to no case; {} events kept out of the log: {}", pl.col("events"),
                  pl.col("activities")).alias("detail")), "orphan_record")


def dateonly_shifts(records: Mapping[str, pl.LazyFrame], keys: Mapping[str, str], case_map: pl.LazyFrame,
                    columns: Mapping[str, tuple[str, ...]]) -> pl.LazyFrame:
    """UserLocal DateOnly values off UTC midnight: the implied offset and the day the user meant."""
    parts = []
    for table, wanted in columns.items():
        frame = records.get(table)
        if frame is None or table not in keys:
            continue
        schema = frame.collect_schema()
        for column in wanted:
            if not isinstance(schema.get(column), pl.Datetime):
                continue  # absent, or landed as a plain date (behaviour DateOnly): nothing can shift
            value = pl.col(column).dt.convert_time_zone("UTC")
            since_midnight = (value - value.dt.truncate("1d")).dt.total_milliseconds()
            # A local midnight east of UTC is the previous UTC evening; west of UTC, the same UTC morning.
            offset = pl.when(since_midnight >= _DAY_MS // 2).then(_DAY_MS - since_midnight).otherwise(-since_midnight)
            meant = (value + pl.duration(milliseconds=offset)).dt.date()
            minutes = offset.abs() // 60_000
            zone = pl.format("UTC{}{}:{}", pl.when(offset >= 0).then(pl.lit("+")).otherwise(pl.lit("-")),
                             (minutes // 60).cast(pl.Utf8).str.zfill(2), (minutes % 60).cast(pl.Utf8).str.zfill(2))
            parts.append(frame.filter(value.is_not_null() & (since_midnight != 0)).select(
                pl.lit(table).alias("object_type"), pl.col(keys[table]).alias("object_id"),
                pl.format("{} = {} is a local midnight at {}: the user's day is {}, UTC reads {}",
                          pl.lit(column), value.dt.strftime("%Y-%m-%dT%H:%M:%SZ"), zone, meant,
                          value.dt.date()).alias("detail")))
    if not parts:
        return pl.LazyFrame(schema=ISSUE_SCHEMA)
    return _issues(pl.concat(parts).join(case_map, on=["object_type", "object_id"], how="left"),
                   "dateonly_timezone_shift")


def unreadable_audit(audit: pl.LazyFrame, details: pl.LazyFrame, case_map: pl.LazyFrame) -> pl.LazyFrame:
    """Audit rows with an action code that has no label (unknown to the org's metadata), and details whose
    old or new values are not JSON."""
    unknown = audit.filter(pl.col("action").is_not_null() & pl.col("action__label").is_null()).select(
        pl.col("objecttypecode").alias("object_type"), pl.col("_objectid_value").alias("object_id"),
        pl.format("audit row {}: unknown action code {}", pl.col("auditid"), pl.col("action")).alias("detail"))
    unparsed = (pl.col("old_values").is_not_null() & pl.col("old_values").str.json_path_match("$").is_null()) | (
        pl.col("new_values").is_not_null() & pl.col("new_values").str.json_path_match("$").is_null())
    broken = details.filter(unparsed).select(
        pl.col("objecttypecode").alias("object_type"), pl.col("objectid").alias("object_id"),
        pl.format("audit row {}: old/new values do not parse", pl.col("auditid")).alias("detail"))
    return _issues(pl.concat([unknown, broken]).join(case_map, on=["object_type", "object_id"], how="left"),
                   "unreadable_audit")


def metadata_mismatches(notes: Mapping[str, pl.LazyFrame], case_map: pl.LazyFrame) -> pl.LazyFrame:
    """One finding per landed note (connector.rows.notes_frame), per table: `object_id`, `note`."""
    parts = [frame.select(pl.lit(table).alias("object_type"), "object_id", pl.col("note").alias("detail"))
             for table, frame in notes.items()]
    if not parts:
        return pl.LazyFrame(schema=ISSUE_SCHEMA)
    found = pl.concat(parts).unique().join(case_map, on=["object_type", "object_id"], how="left")
    return _issues(found, "metadata_value_mismatch")


def quality_issues(event_log: pl.DataFrame | pl.LazyFrame, records: Mapping[str, pl.LazyFrame],
                   orphans: pl.DataFrame, *, keys: Mapping[str, str], created_activities: Collection[str],
                   landed: Mapping[str, pl.LazyFrame] | None = None,
                   audit: pl.LazyFrame | None = None, details: pl.LazyFrame | None = None,
                   user_local_dates: Mapping[str, tuple[str, ...]] | None = None,
                   notes: Mapping[str, pl.LazyFrame] | None = None) -> pl.DataFrame:
    """Every finding of every check, sorted by check, object type, object id. `user_local_dates`: per table,
    its DateOnly-format columns of behaviour UserLocal (from the org's metadata); `notes`: per table, the
    landed notes of values converted from another shape."""
    log = event_log.lazy()
    case_map = log.select("object_type", "object_id", "case_id").unique(["object_type", "object_id"])
    parts = [
        out_of_order(log, created_activities),
        missing_timestamps(log, records, keys, case_map),
        duplicate_versions(landed or {}, keys, case_map),
        orphan_records(orphans),
        dateonly_shifts(records, keys, case_map, user_local_dates or {}),
        metadata_mismatches(notes or {}, case_map),
    ]
    if audit is not None and details is not None:
        parts.append(unreadable_audit(audit, details, case_map))
    return pl.concat(parts).sort("check", "object_type", "object_id", "detail").collect()


def counts(issues: pl.DataFrame) -> dict[str, int]:
    """Findings per check, every check listed (0 when clean)."""
    found = dict(issues.group_by("check").len().iter_rows())
    return {check: int(found.get(check, 0)) for check in CHECKS}


def describe(per_check: Mapping[str, int]) -> str:
    """The run summary's quality line, e.g. "quality: 3 orphan records (linked to no case)"."""
    found = [f"{n} {CHECKS[check][1]}" for check, n in per_check.items() if n]
    return "quality: " + (", ".join(found) if found else "no issues found")
