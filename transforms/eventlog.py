"""The event log: events joined to their cases, resources and case attributes, in CONTRACT.md's columns.

`event_id` names the source fact (source/source row id/activity), so the same fact gets the same id on every
run (two events never share one: `unique_ids` refuses a log where they do). Events whose record links to no
case are kept out of the log and returned apart (orphans), for the data-quality report. Rows are sorted by
case_id, timestamp, then activity and event_id for a stable order.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from config.tables import TablesConfig
from transforms.cases import attributes

LOG_ORDER = ["case_id", "timestamp", "activity", "event_id"]
COLUMNS = ["event_id", "case_id", "case_type", "activity", "timestamp", "end_timestamp", "resource", "object_type",
           "object_id", "source", "owner", "outcome", "amount", "currency", "lead_source", "stage", "account", "region"]


class EventLog(NamedTuple):
    log: pl.DataFrame  # COLUMNS, sorted by LOG_ORDER
    cases: pl.DataFrame  # one row per case: its attributes, events, first and last time; sorted by case_id
    orphans: pl.DataFrame  # the events whose record links to no case
    # (case_id, event_id, user_id): who did each event (the log keeps only the name), sorted by case_id and
    # event_id. It finds the cases a changed user's name appears in, and gives OCEL exports an event's user.
    users: pl.DataFrame


def build(events: pl.LazyFrame, records: dict[str, pl.LazyFrame], users: pl.LazyFrame, cases_of: pl.LazyFrame,
          model: TablesConfig) -> EventLog:
    """The event log, its cases, the orphan events and who did each event, from events, the newest landed version
    of every record, the users (`user_id`, `resource`: their names) and the case map
    (`transforms.cases.case_map`)."""
    located = events.join(cases_of, on=["object_type", "object_id"], how="left")
    with_ids = located.join(users.select("user_id", "resource"), on="user_id", how="left").with_columns(
        # Readable and stable across library versions (a hash function's output is not promised to be).
        pl.concat_str([pl.col("source"), pl.col("source_id"), pl.col("activity")], separator="/").alias("event_id"),
        pl.col("timestamp").alias("end_timestamp"),
    ).collect()  # once: the orphans, the cases, the log and the users all read it
    orphans = with_ids.filter(pl.col("case_id").is_null())
    placed = with_ids.lazy().filter(pl.col("case_id").is_not_null())
    cases = attributes(placed, records, model).collect()
    log = (placed.join(cases.lazy(), on=["case_id", "case_type"], how="left")
           .select(COLUMNS).sort(LOG_ORDER).collect())
    case_table = (cases.join(log.group_by("case_id").agg(
        pl.len().alias("events"), pl.col("timestamp").min().alias("started"), pl.col("timestamp").max().alias("ended")),
        on="case_id", how="left").sort("case_id"))
    acted = (placed.filter(pl.col("user_id").is_not_null()).select("case_id", "event_id", "user_id").unique()
             .sort("case_id", "event_id").collect())
    return EventLog(log, case_table, orphans, acted)


def unique_ids(log: pl.LazyFrame) -> None:
    """Refuse a log (before it is published) in which two events share an `event_id` (source/source row/activity:
    unique by construction, so a duplicate is a bug). Counts the ids' 64-bit hashes first, as
    transforms/build.py `distinct` does: only a log with a hash collision pays for comparing the texts."""
    ids = log.select("event_id")
    counts = ids.select(pl.col("event_id").hash().n_unique().alias("hashes"), pl.len().alias("rows")).collect()
    if counts.item(0, "hashes") == counts.item(0, "rows"):
        return
    twice = ids.filter(pl.col("event_id").is_duplicated()).unique().sort("event_id").collect()
    if twice.height:
        raise RuntimeError(f"{twice.height} event ids occur more than once in the event log being built (e.g. "
                           f"{twice.item(0, 0)}): it was not published; this is a bug")
