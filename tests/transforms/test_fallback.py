"""Issue #11's acceptance: with the audit history withdrawn, the snapshot_diff and record_dates paths still give
every activity whose time the rows can show, compared with the simulator's ground truth; what they cannot
give is listed here with the reason. And `combine` never produces one fact twice.

The org is extracted at its clock c0, advanced twice and extracted again (c1, c2): the rows show the state at
each run, so a change between two runs is seen (dated by the newer row's modifiedon) and history before c0
only through date columns.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from config.activities import load_activities
from config.tables import load_tables
from connector.extract import extract
from connector.lake import Lake
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.schema import TABLES as SANDBOX
from sandbox.simulator import ACTIVITIES
from sandbox.webapi import PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms.events import EVENT_SCHEMA
from transforms.snapshot import UNDATED_REASON, combine, undated_deletions

# Every event of a record some run saw, at its exact time: createdon (by createdby).
EXACT = {
    "Lead Captured": "createdon", "Opportunity Created": "createdon", "Quote Created": "createdon",
    "Sales Order Created": "createdon", "Invoice Created": "createdon",
}
# Exact when seen between two runs; otherwise the latest occurrence from a date-only column: the day only
# (DateTimeBehavior and Format of each from Microsoft's table reference, sandbox/schema.py).
DAY_PRECISION = {
    "Opportunity Won": "actualclosedate (DateOnly: a calendar day)",
    "Opportunity Lost": "actualclosedate (DateOnly: a calendar day)",
    "Quote Accepted": "closedon (DateOnly: a calendar day)", "Quote Closed": "closedon (DateOnly: a calendar day)",
    "Order Submitted": "submitdate (UserLocal, Format DateOnly: the user's local midnight)",
    "Order Fulfilled": "datefulfilled (UserLocal, Format DateOnly: the user's local midnight)",
}
# No date column records them: only a change between two runs shows them (exact when it was the row's only
# change in that interval; else dated by the row's last change). History before the first run is lost.
BETWEEN_RUNS = {
    "Lead Qualified": "statecode -> 1", "Lead Disqualified": "statecode -> 2", "Owner Changed": "ownerid changed",
    "Stage Entered: Develop": "salesstage -> 1", "Stage Entered: Propose": "salesstage -> 2",
    "Stage Entered: Close": "salesstage -> 3", "Opportunity Reopened": "statecode -> 0",
    "Quote Activated": "statecode -> 1", "Quote Revised": "statuscode -> 7", "Discount Applied": "discount raised",
    "Order Canceled": "statecode -> 2", "Invoice Sent": "statuscode -> 4",
    "Payment Received": "statuscode -> 100001/100002", "Invoice Canceled": "statecode -> 3",
}
CANNOT = {
    "Quote Deleted": UNDATED_REASON, "Order Deleted": UNDATED_REASON, "Invoice Deleted": UNDATED_REASON,
}
KEY = ["case_id", "case_type", "activity", "object_type", "object_id"]
ADVANCES = (3.0, 4.0)  # days; each within the 7 days a delta token lives
TABLES = ("lead", "opportunity", "quote", "salesorder", "invoice")
KEYS = {t: SANDBOX[t].primary_id for t in TABLES}  # as the org declares them


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fallback")
    options = SandboxOptions(withdrawn_privileges={PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY})
    with Sandbox(root / "sb", OrgState(seed=7, leads=3000), options) as sandbox:
        settings = settings_for(sandbox, root / "data")
        clocks = [sandbox.state.clock]
        assert extract(settings).exit_code == 0
        for days in ADVANCES:
            clocks.append(sandbox.advance(days).clock)
            assert extract(settings).exit_code == 0
        result = transform(settings)
        org = sandbox.org
    lake = Lake(root / "data")
    history = {t: lake.scan(t) for t in TABLES}
    # Landed as a row (change tracking may report the deletion of a record created and deleted between runs).
    seen = pl.concat([history[t].filter(pl.col("_op") == "upsert").select(
        pl.lit(t).alias("object_type"), pl.col(KEYS[t]).alias("object_id")) for t in TABLES]).unique().collect()
    rules = load_activities(None, load_tables())
    # the default config extracts the default catalogue: the custom tables' truth events are out of scope here
    truth = org.truth.filter(pl.col("activity").is_in(ACTIVITIES))
    return {"log": pl.read_parquet(result.event_log), "truth": truth, "audits": org.audits, "clocks": clocks,
            "seen": seen, "undated": undated_deletions(history, rules, KEYS).collect(), "lake": lake}


def test_the_catalogue_is_split_into_exact_day_precision_between_runs_and_cannot() -> None:
    groups = [EXACT, DAY_PRECISION, BETWEEN_RUNS, CANNOT]
    assert sum(len(g) for g in groups) == len(ACTIVITIES)
    assert set().union(*groups) == set(ACTIVITIES)
    rules = load_activities(None, load_tables())
    dated = {r.name for r in rules if r.record_date}
    assert dated == set(EXACT) | set(DAY_PRECISION)  # the record dates are what reaches before the first run


def test_every_event_is_a_true_event_once(fallback: dict[str, Any]) -> None:
    log, truth = fallback["log"], fallback["truth"]
    assert set(log.get_column("source").unique()) == {"snapshot_diff", "record_dates"}
    assert log.get_column("event_id").n_unique() == log.height
    assert log.select(KEY).join(truth.select(KEY).unique(), on=KEY, how="anti").height == 0
    # at most as many events per (object, activity) as really happened: nothing twice
    counts = log.group_by(KEY).len().join(truth.group_by(KEY).len(), on=KEY, suffix="_truth")
    assert (counts.get_column("len") <= counts.get_column("len_truth")).all()


def test_created_and_datetime_record_dates_are_exact_for_every_record_a_run_saw(fallback: dict[str, Any]) -> None:
    log, truth, seen = fallback["log"], fallback["truth"], fallback["seen"]
    for activity, column in EXACT.items():
        expected = truth.filter(pl.col("activity") == activity).join(seen, on=["object_type", "object_id"])
        got = log.filter(pl.col("activity") == activity)
        keys = [*KEY, "timestamp"] + (["resource"] if column == "createdon" else [])
        assert expected.height > 10, activity
        assert got.select(keys).sort(keys).equals(expected.select(keys).sort(keys)), activity


def _windows(clocks: list[datetime]) -> pl.Expr:
    """The index k of the run interval (c[k-1], c[k]] holding `timestamp`; 0 before the first run."""
    index = pl.lit(0)
    for k, clock in enumerate(clocks[:-1], start=1):
        index = pl.when(pl.col("timestamp") > clock).then(pl.lit(k)).otherwise(index)
    return index.alias("window")


def _sole_changes(fallback: dict[str, Any]) -> pl.DataFrame:
    """Truth events that were their row's only change between two runs, on a row that existed before."""
    clocks, truth, audits = fallback["clocks"], fallback["truth"], fallback["audits"]
    changes = audits.select(pl.col("objecttypecode").alias("object_type"), pl.col("_objectid_value").alias("object_id"),
                            pl.col("createdon").alias("timestamp")).with_columns(_windows(clocks))
    per_window = changes.group_by("object_type", "object_id", "window").len()
    existed = changes.filter(pl.col("window") == 0).select("object_type", "object_id").unique()
    return (truth.filter(pl.col("timestamp") <= clocks[-1]).with_columns(_windows(clocks))
            .filter(pl.col("window") > 0)
            .join(per_window.filter(pl.col("len") == 1), on=["object_type", "object_id", "window"])
            .join(existed, on=["object_type", "object_id"]))


def test_a_change_between_runs_is_exact_when_it_was_the_rows_only_change(fallback: dict[str, Any]) -> None:
    log = fallback["log"]
    sole = _sole_changes(fallback).filter(pl.col("activity").is_in([*BETWEEN_RUNS, *DAY_PRECISION]))
    keys = [*KEY, "timestamp", "resource"]
    missing = sole.select(keys).join(log.select(keys), on=keys, how="anti")
    assert missing.height == 0, missing
    covered = set(sole.get_column("activity").unique())
    assert len(covered) >= 12, covered  # the windows hold most kinds of change: the check has teeth
    assert sole.join(log.filter(pl.col("source") == "snapshot_diff"), on=keys).height == sole.height


def test_a_snapshot_event_is_dated_by_the_rows_last_change_never_before_the_fact(fallback: dict[str, Any]) -> None:
    log, truth, clocks = fallback["log"], fallback["truth"], fallback["clocks"]
    diffs = log.filter(pl.col("source") == "snapshot_diff").with_columns(_windows(clocks))
    matched = diffs.join(truth.select(*KEY, pl.col("timestamp").alias("true_time")), on=KEY)
    # the fact happened in the interval the diff covers, at or before the newer row's modifiedon
    in_window = matched.filter((pl.col("true_time") <= pl.col("timestamp"))
                               & (pl.col("true_time") > pl.lit(clocks[0])))
    assert in_window.select("event_id").n_unique() == diffs.height
    assert (diffs.get_column("window") > 0).all()  # nothing before the first run comes from a diff
    exact = in_window.filter(pl.col("true_time") == pl.col("timestamp")).select("event_id").n_unique()
    assert exact > diffs.height * 0.8, (exact, diffs.height)  # most are exact: the approximate are the rest


def test_day_precision_activities_are_within_a_day_of_the_truth(fallback: dict[str, Any]) -> None:
    log, truth, seen = fallback["log"], fallback["truth"], fallback["seen"]
    latest = (truth.filter(pl.col("activity").is_in(list(DAY_PRECISION))).join(seen, on=["object_type", "object_id"])
              .sort("timestamp").group_by(KEY).last())
    # A close undone by a reopen before the runs saw it leaves no date in the row (actualclosedate is cleared).
    reopened = truth.filter(pl.col("activity") == "Opportunity Reopened").select(
        "object_id", pl.col("timestamp").alias("reopened"))
    undone = latest.join(reopened, on="object_id").filter(pl.col("reopened") > pl.col("timestamp"))
    assert undone.height > 0
    latest = latest.join(undone.select(KEY), on=KEY, how="anti")
    got = log.filter(pl.col("activity").is_in(list(DAY_PRECISION))).group_by(KEY).agg(pl.col("timestamp").max())
    both = latest.join(got, on=KEY, how="left", suffix="_log")
    assert both.filter(pl.col("timestamp_log").is_null()).height == 0
    error = (both.get_column("timestamp_log") - both.get_column("timestamp")).abs()
    assert error.max() < timedelta(days=1, hours=14)  # a day plus a time-zone offset  # type: ignore[operator]
    approximate = both.filter(pl.col("timestamp_log") != pl.col("timestamp"))
    assert approximate.height > 0.5 * both.height  # most predate the first run: the day only
    assert (approximate.join(log, left_on=[*KEY, "timestamp_log"], right_on=[*KEY, "timestamp"])
            .get_column("source") == "record_dates").all()


def test_history_before_the_first_run_cannot_be_seen_for_changes_without_a_date_column(
        fallback: dict[str, Any]) -> None:
    log, truth, first_run = fallback["log"], fallback["truth"], fallback["clocks"][0]
    before = pl.col("timestamp") <= first_run
    between = pl.col("activity").is_in(list(BETWEEN_RUNS))
    assert log.filter(before & between).height == 0
    assert truth.filter(before & between).height > 1000  # what the audit would have given


def test_deletions_cannot_be_dated_without_audit_and_are_reported(fallback: dict[str, Any]) -> None:
    log, truth, undated, lake = fallback["log"], fallback["truth"], fallback["undated"], fallback["lake"]
    assert log.filter(pl.col("activity").is_in(list(CANNOT))).height == 0
    deleted = pl.concat([lake.scan(t).filter(pl.col("_op") == "delete").select(
        pl.lit(t).alias("object_type"), pl.col(KEYS[t]).alias("object_id")) for t in TABLES]).collect()
    truly = truth.filter(pl.col("activity").is_in(list(CANNOT))).select("object_type", "object_id", "activity")
    expected = deleted.join(truly, on=["object_type", "object_id"])
    assert expected.height > 0, "precondition: the runs saw deletions of quotes, orders or invoices"
    assert undated.select(expected.columns).sort(expected.columns).equals(expected.sort(expected.columns))
    assert set(undated.get_column("reason")) == {CANNOT["Quote Deleted"]}


def _events(rows: list[tuple[str, str, str, datetime, str | None, str, str]]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema=EVENT_SCHEMA, orient="row")


def _fallback(rows: list[tuple[Any, ...]]) -> pl.LazyFrame:
    utc = pl.Datetime("us", "UTC")
    return pl.LazyFrame(rows, schema={**EVENT_SCHEMA, "not_before": utc, "not_after": utc}, orient="row")


def test_combine_keeps_one_event_per_fact_and_a_repeat_the_audit_missed() -> None:
    t = datetime(2026, 1, 2, 10, tzinfo=UTC)
    hour, day = timedelta(hours=1), timedelta(days=1)
    audit = _events([("invoice", "i1", "Payment Received", t, "u1", "audit", "a1"),
                     ("invoice", "i1", "Invoice Created", t - 9 * day, "u1", "audit", "a0")])
    snapshot = _fallback([
        # the same payment, seen as statuscode 4 -> 100002 between the versions of 09:00 and 12:00
        ("invoice", "i1", "Payment Received", t + 2 * hour, "u1", "snapshot_diff", "i1@7", t - hour, t + 2 * hour),
        # a second payment the audit does not hold (e.g. outside its retention): a different fact, kept
        ("invoice", "i1", "Payment Received", t + 5 * day, "u1", "snapshot_diff", "i1@9", t + 3 * day, t + 5 * day),
    ])
    record_dates = _fallback([
        ("invoice", "i1", "Invoice Created", t - 9 * day, "u1", "record_dates", "i1@createdon", t - 10 * day, None),
        ("invoice", "i2", "Invoice Created", t, "u2", "record_dates", "i2@createdon", t - day, None),
    ])
    merged = combine(audit, snapshot, record_dates).collect()
    assert merged.columns == list(EVENT_SCHEMA)
    assert sorted(merged.get_column("source_id")) == ["a0", "a1", "i1@9", "i2@createdon"]
    # no duplicate when audit and snapshot see the same change, in either order of the inputs
    alone = combine(audit, snapshot.head(1), pl.LazyFrame(schema=snapshot.collect_schema())).collect()
    assert alone.filter(pl.col("activity") == "Payment Received").get_column("source").to_list() == ["audit"]


def test_combine_drops_a_link_deletion_the_audit_dated_before_the_link_wrote_it() -> None:
    """A Link export's delete row is dated when the Link wrote it (SinkModifiedOn), after the real delete: its
    window opens with no start, and an audited Delete at any time up to its date is the same fact."""
    t = datetime(2026, 1, 2, 10, tzinfo=UTC)
    audit = _events([("quote", "q1", "Quote Deleted", t, "u1", "audit", "a1")])
    link = _fallback([
        ("quote", "q1", "Quote Deleted", t + timedelta(minutes=14), None, "link_versions", "q1@deleted", None,
         t + timedelta(minutes=14)),
        # a record the audit has no Delete for (e.g. past its retention): kept
        ("quote", "q2", "Quote Deleted", t, None, "link_versions", "q2@deleted", None, t),
    ])
    merged = combine(audit, link, pl.LazyFrame(schema=link.collect_schema())).collect()
    assert sorted(merged.get_column("source_id")) == ["a1", "q2@deleted"]
