"""Events without audit: from differences between landed row versions, and from the rows' own date columns.

Pure polars. `events_from_snapshots` compares, per record, consecutive landed versions (by `_version`): a
"changed" rule, or an "action" rule's `snapshot` condition, fires when its column moved into the value (as in
transforms/events.py), dated by the newer version's `modifiedon` and done by its `modifiedby` (source =
"snapshot_diff", source_id = "<id>@<version>"). That time is exact only when the change was the row's last one
before the run; the change happened in [older modifiedon, newer modifiedon], kept as the event's window. Versions
landed from an Azure Synapse Link / Link to Fabric export (their `_stream` starts with "link", connector/link.py)
have source = "link_versions": an append-only export holds a version per sync cycle in which the row changed,
so the newer version's modifiedon is the change's own time unless a later change of the same cycle overwrote it
(docs/LINK.md §8), and a Delta export holds the latest row per Id at each version the reader saw; the window stays
[older modifiedon, newer modifiedon], so the audit's event of the same change (a Delta export carries the audit
table) wins in `combine`. Their deletions are dated by the export's SinkModifiedOn (an upper bound: when the
Link wrote the delete row), with a window open before it. A
"created" rule fires for a record first landed by a later run and created after the previous run started
(else it predates the first run and its record date dates it). A "deleted" rule fires only for a deletion the
audit dated (`_deleted_at` differs from `_extracted_at`); change tracking only says when a deletion was
seen, which is no event time (`undated_deletions` lists those). `events_from_record_dates` gives one event
per record whose rule's `record_date` is set (source = "record_dates"): the row holds only the latest
occurrence, and a date-only column gives the day. `combine` merges the three paths without producing a fact
twice: audit wins, then snapshot_diff, then record_dates; a lower event is dropped when a higher event of the
same object and activity falls in its window (see `combine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import reduce
from operator import or_
from typing import Literal

import polars as pl

from config.activities import Rule, Scalar
from transforms.events import EVENT_SCHEMA, once

UTC = pl.Datetime("us", "UTC")
Among = Literal["semi", "anti"]  # a frame's rows of a set of records ("semi") or of every other record ("anti")
WINDOW_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {"not_before": UTC, "not_after": UTC}
FALLBACK_SCHEMA = {**EVENT_SCHEMA, **WINDOW_SCHEMA}  # an event and when its fact can have happened (null: open)
KEY = ["object_type", "object_id", "activity"]
IDENTITY = ["source", "source_id", "activity"]
# A date-only record date (actualclosedate: the user's local midnight; closedon: a calendar day) can lie up to
# a time-zone offset after the real moment: a record date stands for a fact from a day before it on.
DATE_SLACK = timedelta(days=1)
# modifiedon and the audit row of one change are stamped in the same transaction; a second covers rounding.
CLOCK_SLACK = timedelta(seconds=1)
LINK_STREAM = "link"  # the stream prefix of pages landed from a Link export (connector/link.py)
UNDATED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "object_type": pl.Utf8, "object_id": pl.Utf8, "activity": pl.Utf8, "seen_at": UTC, "reason": pl.Utf8}
UNDATED_REASON = ("cannot date: change tracking reports a deletion without its time (only when a run saw it); "
                  "the audit history has the real time")


def _lake_column(names: list[str], column: str) -> str | None:
    """A declared column's name in the lake: as is, or `_<name>_value` for a lookup."""
    return next((c for c in (column, f"_{column}_value") if c in names), None)


def _user(names: list[str], column: str) -> pl.Expr:
    found = _lake_column(names, column)
    return pl.col(found).cast(pl.Utf8) if found else pl.lit(None, pl.Utf8)


def _is(value: pl.Expr, targets: list[Scalar]) -> pl.Expr:
    """`value` equals one of `targets` (numbers compared as numbers, booleans and text as text)."""
    parts = []
    for target in targets:
        if isinstance(target, bool):
            parts.append(value.cast(pl.Utf8).str.to_lowercase() == ("true" if target else "false"))
        elif isinstance(target, int | float):
            parts.append(value.cast(pl.Float64, strict=False) == float(target))
        else:
            parts.append(value.cast(pl.Utf8) == target)
    return reduce(or_, parts)


def _moved(column: str, targets: list[Scalar] | None, above: float | None) -> pl.Expr:
    """The column moved between the previous version (shifted) and this one: into a target, above a bound,
    or, with neither, to anything else."""
    new, old = pl.col(column), pl.col(column).shift(1)
    if above is not None:
        new_number, old_number = new.cast(pl.Float64, strict=False), old.cast(pl.Float64, strict=False)
        return (new_number > above) & old_number.ne_missing(new_number)
    moved = new.cast(pl.Utf8).ne_missing(old.cast(pl.Utf8))
    return moved if targets is None else moved & _is(new, targets)


def _condition(rule: Rule) -> tuple[str, list[Scalar] | None, float | None] | None:
    if rule.trigger == "changed":
        assert rule.column is not None
        return rule.column, None if rule.to is None else [rule.to], rule.above
    if rule.trigger == "action" and rule.snapshot is not None:
        return rule.snapshot.column, rule.snapshot.targets, None
    return None


def _to_utc(column: str, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime) and dtype.time_zone:
        return pl.col(column).dt.convert_time_zone("UTC").cast(UTC)
    return pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")  # a Date: its midnight UTC


def _event(rule: Rule, pk: str, timestamp: pl.Expr, user: pl.Expr, source: str | pl.Expr, source_id: pl.Expr,
           not_before: pl.Expr, not_after: pl.Expr) -> list[pl.Expr]:
    return [pl.lit(rule.table).alias("object_type"), pl.col(pk).cast(pl.Utf8).alias("object_id"),
            pl.lit(rule.name).alias("activity"), timestamp.alias("timestamp"), user.alias("user_id"),
            (pl.lit(source) if isinstance(source, str) else source).alias("source"), source_id.alias("source_id"),
            not_before.alias("not_before"), not_after.alias("not_after")]


def only(frame: pl.LazyFrame, table: str, key: str, objects: pl.LazyFrame | None, how: Among = "semi") -> pl.LazyFrame:
    """The rows of `frame` (of `table`, identified by `key`) whose record is among `objects` (object_type,
    object_id), or with how="anti" is not; all rows when `objects` is None."""
    if objects is None:
        return frame
    wanted = objects.filter(pl.col("object_type") == table).select(pl.col("object_id").alias(key))
    return frame.join(wanted, on=key, how=how)


def _versions(history: pl.LazyFrame, table: str, pk: str, objects: pl.LazyFrame | None, how: Among) -> pl.LazyFrame:
    """Each record's distinct landed versions in order, with `_first` (no earlier version),
    `_previous_modified` (the earlier version's modifiedon) and `_previous_run` (when the run before the one
    that landed it started); only for `objects` (`how`: see `only`) when given (the runs still come from the
    whole table)."""
    names = history.collect_schema().names()
    run = "_run_id" if "_run_id" in names else "_extracted_at"
    upserts = history.filter(pl.col("_op") == "upsert")
    runs = (upserts.group_by(run).agg(pl.col("_extracted_at").min().alias("_run_start")).sort("_run_start")
            .with_columns(pl.col("_run_start").shift(1).alias("_previous_run")).select(run, "_previous_run"))
    return (only(upserts, table, pk, objects, how).join(runs, on=run, how="left")  # a join need not keep the order
            .sort(pk, "_version", "modifiedon", "_extracted_at", nulls_last=False)
            # A version landed twice (a resync, a re-read page) is one version.
            .unique([pk, "_version", "modifiedon"], keep="first", maintain_order=True)
            .with_columns(pl.col(pk).ne_missing(pl.col(pk).shift(1)).alias("_first"),
                          pl.col("modifiedon").cast(UTC).shift(1).alias("_previous_modified")))


def _read_columns(names: list[str], pk: str, rules: list[Rule]) -> list[str]:
    """The columns of a history frame that `events_from_snapshots` reads for `rules`, in the frame's order.
    Chosen before the versions are materialised: a wide table's every column would otherwise be (at 1M
    leads, 1.6 GB for the rule tables' histories against about 0.2 GB for these)."""
    wanted = {pk, "_version", "modifiedon", "createdon", "_op", "_deleted_at", "_extracted_at", "_run_id", "_stream",
              _lake_column(names, "createdby"), _lake_column(names, "modifiedby")}
    wanted |= {_lake_column(names, condition[0]) for rule in rules if (condition := _condition(rule)) is not None}
    return [name for name in names if name in wanted]


def events_from_snapshots(history: dict[str, pl.LazyFrame], rules: list[Rule], keys: Mapping[str, str],
                          objects: pl.LazyFrame | None = None, how: Among = "semi") -> pl.LazyFrame:
    """FALLBACK_SCHEMA events (source "snapshot_diff") from every landed version of each rule's table (of
    `objects` only, when given; of every other record with how="anti"); rules sharing an activity give a
    version's event once."""
    parts = []
    for table, frame in history.items():
        table_rules = [r for r in rules if r.table == table]
        names = frame.collect_schema().names()
        pk = keys.get(table, "")
        if not table_rules or pk not in names or "modifiedon" not in names:
            continue
        frame = frame.select(_read_columns(names, pk, table_rules))
        versions = _versions(frame, table, pk, objects, how).collect().lazy()  # once, not once per rule
        version_id = pl.concat_str([pl.col(pk), pl.col("_version").cast(pl.Utf8).fill_null("")], separator="@")
        modified = pl.col("modifiedon").cast(UTC)
        link = (pl.col("_stream").str.starts_with(LINK_STREAM).fill_null(False) if "_stream" in names
                else pl.lit(False))
        source = pl.when(link).then(pl.lit("link_versions")).otherwise(pl.lit("snapshot_diff"))
        for rule in table_rules:
            if rule.trigger == "created" and "createdon" in names:
                created = pl.col("createdon").cast(UTC)
                after_a_run = pl.col("_first") & pl.col("_previous_run").is_not_null() & (
                    created > pl.col("_previous_run"))
                parts.append(versions.filter(after_a_run).select(_event(
                    rule, pk, created, _user(names, "createdby"), source, version_id, created, created)))
            elif rule.trigger == "deleted" and "_deleted_at" in names:
                dated = (pl.col("_op") == "delete") & pl.col("_deleted_at").ne_missing(pl.col("_extracted_at"))
                when = pl.col("_deleted_at").cast(UTC)
                deletions = only(frame, table, pk, objects, how).filter(dated & pl.col("_deleted_at").is_not_null())
                # A Link export's delete row is dated when the Link wrote it: the delete happened before, so any
                # audited Delete of the record up to then is the same fact (an open window: combine keeps audit's).
                parts.append(deletions.select(_event(
                    rule, pk, when, pl.lit(None, pl.Utf8), source, pl.col(pk).cast(pl.Utf8) + "@deleted",
                    pl.when(link).then(pl.lit(None, UTC)).otherwise(when), when)))
            elif (condition := _condition(rule)) is not None:
                column = _lake_column(names, condition[0])
                if column is None:
                    continue  # declared after these rows were landed: nothing to compare
                moved = ~pl.col("_first") & _moved(column, condition[1], condition[2]) & modified.is_not_null()
                parts.append(versions.filter(moved).select(_event(
                    rule, pk, modified, _user(names, "modifiedby"), source, version_id,
                    pl.col("_previous_modified"), modified + CLOCK_SLACK)))
    if not parts:
        return pl.LazyFrame(schema=FALLBACK_SCHEMA)
    events = pl.concat(parts, how="vertical_relaxed").cast(FALLBACK_SCHEMA)  # type: ignore[arg-type]
    return once(events, rules, IDENTITY)


def undated_deletions(history: dict[str, pl.LazyFrame], rules: list[Rule], keys: Mapping[str, str]) -> pl.LazyFrame:
    """The deletions a "deleted" rule cannot date (seen by change tracking, not read from the audit)."""
    parts = []
    for rule in rules:
        frame = history.get(rule.table)
        if rule.trigger != "deleted" or frame is None:
            continue
        names = frame.collect_schema().names()
        if "_deleted_at" not in names or keys.get(rule.table) not in names:
            continue
        undated = (pl.col("_op") == "delete") & ~pl.col("_deleted_at").ne_missing(pl.col("_extracted_at"))
        parts.append(frame.filter(undated).select(
            pl.lit(rule.table).alias("object_type"), pl.col(keys[rule.table]).cast(pl.Utf8).alias("object_id"),
            pl.lit(rule.name).alias("activity"), pl.col("_extracted_at").cast(UTC).alias("seen_at"),
            pl.lit(UNDATED_REASON).alias("reason")))
    if not parts:
        return pl.LazyFrame(schema=UNDATED_SCHEMA)
    return pl.concat(parts, how="vertical_relaxed").cast(UNDATED_SCHEMA).unique(  # type: ignore[arg-type]
        ["object_type", "object_id", "activity"], keep="first", maintain_order=True)


def events_from_record_dates(newest: dict[str, pl.LazyFrame], rules: list[Rule],
                             keys: Mapping[str, str]) -> pl.LazyFrame:
    """FALLBACK_SCHEMA events (source "record_dates"): per rule with `record_date`, one per record whose date is
    set (and whose `record_when` holds), from each record's newest landed version; the creator for createdon.
    Rules of one table and activity dated by one column give a record's event once."""
    parts = []
    for rule in rules:
        frame = newest.get(rule.table)
        if rule.record_date is None or frame is None:
            continue
        schema = frame.collect_schema()
        names, pk = schema.names(), keys.get(rule.table, "")
        column = _lake_column(names, rule.record_date)
        if column is None or pk not in names:
            continue
        keep = pl.col(column).is_not_null()
        if rule.record_when is not None:
            when_column = _lake_column(names, rule.record_when.column)
            targets = rule.record_when.targets
            assert targets is not None  # validated: record_when has `to`
            keep = keep & (_is(pl.col(when_column), targets).fill_null(False) if when_column else pl.lit(False))
        timestamp = _to_utc(column, schema[column])
        user = _user(names, "createdby") if rule.record_date == "createdon" else pl.lit(None, pl.Utf8)
        parts.append(frame.filter(keep).select(_event(
            rule, pk, timestamp, user, "record_dates", pl.col(pk).cast(pl.Utf8) + f"@{rule.record_date}",
            # The row holds the latest occurrence: any occurrence from (a day before) its date on is this one.
            timestamp - DATE_SLACK, pl.lit(None, UTC))))
    if not parts:
        return pl.LazyFrame(schema=FALLBACK_SCHEMA)
    events = pl.concat(parts, how="vertical_relaxed").cast(FALLBACK_SCHEMA)  # type: ignore[arg-type]
    return once(events, rules, IDENTITY)


def combine(audit: pl.LazyFrame, snapshot: pl.LazyFrame, record_dates: pl.LazyFrame) -> pl.LazyFrame:
    """The events of all three paths in EVENT_SCHEMA, each fact once.

    Priority: audit, then snapshot_diff, then record_dates. Each lower event carries the window in which its
    fact happened (`not_before`..`not_after`, null = open): a diff between two versions is [older modifiedon,
    newer modifiedon], a created event its createdon, a record date [a day before it, open) because the row
    keeps only the latest occurrence; an audit event is its own instant. A lower event is the same fact as a
    higher event of the same object and activity whose window overlaps its own, and is dropped then. So a
    repeatable activity (Stage Entered, Payment Received) keeps a second occurrence the higher path missed
    when it falls outside the windows of the ones it saw, without any tolerance to tune.
    """
    # Each step materialised: the next one reads it twice (as `higher` and as itself).
    kept = audit.cast(EVENT_SCHEMA).with_columns(  # type: ignore[arg-type]
        pl.col("timestamp").alias("not_before"), pl.col("timestamp").alias("not_after")).collect()
    for lower in (snapshot, record_dates):
        lower = lower.cast(FALLBACK_SCHEMA).collect().lazy()  # type: ignore[arg-type]
        higher = kept.lazy().select(*KEY, pl.col("not_before").alias("_from"), pl.col("not_after").alias("_to"))
        overlaps = ((pl.col("_to").is_null() | pl.col("not_before").is_null() | (pl.col("not_before") <= pl.col("_to")))
                    & (pl.col("not_after").is_null() | pl.col("_from").is_null()
                       | (pl.col("_from") <= pl.col("not_after"))))
        same = lower.join(higher, on=KEY, how="inner").filter(overlaps).select(IDENTITY).unique()
        kept = pl.concat([kept.lazy(), lower.join(same, on=IDENTITY, how="anti")], how="vertical").collect()
    return kept.lazy().select(list(EVENT_SCHEMA))
