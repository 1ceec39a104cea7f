"""The synthetic Dynamics 365 Sales org: the ground truth the whole project is tested against.

`simulate(seed, leads, clock)` is a pure function. Static records (currencies, users, accounts) exist from
before HISTORY_START and take the first versions. Then "arrivals" (a lead, or ~5% opportunities a rep
creates directly) come in at HISTORY_DAYS / leads intervals with jitter, forever; arrival i is planned from
its own RNG, seeded by a stable hash of (seed, i), as one forward-moving story (lead -> opportunity ->
quotes -> order -> invoices -> payments) whose cursor never goes back in time. A clock therefore only cuts
each story at its first change after the clock: nothing before the cut depends on the clock, and global
versions (rank of (time, arrival, sequence) after the static records) of changes up to a clock stay the
same at every later clock, which is what `sandbox advance` needs. Every change is one audit row (Web API
`audits` layout plus the hidden _old/_new/_version); truth is the activity the change stands for. Python
works per arrival on small dicts and tuples; frames are built once per block of arrivals, and the global
sort, versions and audit GUIDs are vectorised. This module assembles the frames; the audit vocabulary is in
sandbox/sim_audit.py, static records and ids in sim_static.py, the cursor and change log in sim_recorder.py,
and the story in sim_story.py, sim_cash.py and sim_contract.py.
"""

from __future__ import annotations

import gc
import math
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from sandbox.orgdata import BASE_CLOCK, DELETED_SCHEMA, TRUTH_SCHEMA, OrgData
from sandbox.schema import TABLES, Table
from sandbox.sim_audit import (
    _DYNAMIC,
    A_ACTIVATE,
    A_ASSIGN,
    A_CANCEL,
    A_CLOSE,
    A_CREATE,
    A_DELETE,
    A_DISQUALIFY,
    A_FULFILL,
    A_INVOICE,
    A_LOSE,
    A_PAID,
    A_QUALIFY,
    A_REOPEN,
    A_REVISE,
    A_SUBMIT,
    A_UPDATE,
    A_WIN,
)
from sandbox.sim_static import _HS, _guids, _Org, _stable
from sandbox.sim_story import _Planner

__all__ = ["ACTIVITIES", "A_ACTIVATE", "A_ASSIGN", "A_CANCEL", "A_CLOSE", "A_CREATE", "A_DELETE", "A_DISQUALIFY",
           "A_FULFILL", "A_INVOICE", "A_LOSE", "A_PAID", "A_QUALIFY", "A_REOPEN", "A_REVISE", "A_SUBMIT",
           "A_UPDATE", "A_WIN", "CUSTOM_ACTIVITIES", "TRUTH_ACTIVITIES", "simulate"]

# The default activity catalogue (CONTRACT.md, config/activities.toml): what l2c's default config extracts. The
# simulator emits every one of them.
ACTIVITIES: tuple[str, ...] = (
    "Lead Captured", "Lead Qualified", "Lead Disqualified", "Opportunity Created",
    "Stage Entered: Develop", "Stage Entered: Propose", "Stage Entered: Close",
    "Quote Created", "Quote Activated", "Quote Revised", "Discount Applied", "Quote Accepted", "Quote Closed",
    "Sales Order Created", "Order Submitted", "Order Fulfilled", "Order Canceled",
    "Invoice Created", "Invoice Sent", "Payment Received", "Invoice Canceled",
    "Opportunity Won", "Opportunity Lost", "Opportunity Reopened", "Owner Changed",
    "Quote Deleted", "Order Deleted", "Invoice Deleted",
)
# Activities of the org's custom tables (sandbox/schema.py, `Table.custom`): in the truth, but outside the default
# catalogue, as l2c's default config does not extract those tables. A comparison of l2c's default event log with
# the truth keeps only ACTIVITIES.
CUSTOM_ACTIVITIES: tuple[str, ...] = ("Contract Signed",)
# Every activity the truth names.
TRUTH_ACTIVITIES: tuple[str, ...] = ACTIVITIES + CUSTOM_ACTIVITIES

_BLOCK = 25_000  # arrivals per block: bounds the Python objects alive at once (1M leads < 8 GB)


# --- frames -------------------------------------------------------------------------------------------
_CHANGE_SCHEMA = {"t": pl.Int64, "arrival": pl.Int64, "seq": pl.Int32, "objecttypecode": pl.Utf8,
                  "_objectid_value": pl.Utf8, "operation": pl.Int32, "action": pl.Int32,
                  "_userid_value": pl.Utf8, "txn": pl.Int32, "_old": pl.Utf8, "_new": pl.Utf8,
                  "attributemask": pl.Utf8}


_TRUTH_TMP = {"case_id": pl.Utf8, "case_type": pl.Utf8, "activity": pl.Utf8, "t": pl.Int64,
              "resource": pl.Utf8, "object_type": pl.Utf8, "object_id": pl.Utf8, "seq": pl.Int32}


def _columns(rows: list[tuple[Any, ...]], schema: dict[str, Any]) -> pl.DataFrame:
    # transposing in C and building one Series per column is several times faster than orient="row"
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pl.DataFrame([pl.Series(name, values, dtype=dtype)
                         for (name, dtype), values in zip(schema.items(), cols, strict=True)])


def _sorted(parts: list[pl.DataFrame], by: list[str],
            schema: dict[str, Any]) -> tuple[pl.DataFrame, pl.Series]:
    """Concatenates block frames and sorts them one column at a time (a plain sort would hold two full copies
    of the audit strings at once: 7.9 GB peak for 1M leads). Also returns the permutation used."""
    if not parts:
        return pl.DataFrame(schema=schema), pl.Series([], dtype=pl.UInt32)
    frame = pl.concat(parts, rechunk=False)
    parts.clear()
    order = frame.select(pl.arg_sort_by(by)).to_series()
    out = []
    for name in frame.columns:
        out.append(frame.get_column(name).gather(order))
        frame = frame.drop(name)  # frees the unsorted column
    return pl.DataFrame(out), order


def _column_dtype(table: Table) -> list[tuple[str, pl.DataType, int]]:
    out: list[tuple[str, pl.DataType, int]] = []
    for c in table.columns:
        if c.type == "DateTime":
            kind = 2 if c.date_only and c.behavior == "DateOnly" else 1
            out.append((c.api_name, pl.Date() if kind == 2 else pl.Datetime("us", "UTC"), kind))
        elif c.type in ("Integer", "Picklist", "State", "Status"):
            out.append((c.api_name, pl.Int32(), 0))
        elif c.type == "BigInt":
            out.append((c.api_name, pl.Int64(), 0))
        elif c.type in ("Money", "Decimal"):
            out.append((c.api_name, pl.Float64(), 0))
        elif c.type == "Boolean":
            out.append((c.api_name, pl.Boolean(), 0))
        else:
            out.append((c.api_name, pl.Utf8(), 0))
    return out


def _table_frame(table: Table, rows: list[tuple[Any, ...]], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """Row tuples in schema column order (plus `extra` Int64 columns) -> a frame with the contract dtypes."""
    spec = _column_dtype(table)
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in range(len(spec) + len(extra))]
    series = []
    for (name, dtype, kind), values in zip(spec, cols, strict=False):
        if kind == 1:
            s = (pl.Series(name, values, dtype=pl.Int64) * 1_000_000).cast(pl.Datetime("us")) \
                .dt.replace_time_zone("UTC")
        elif kind == 2:
            s = pl.Series(name, values, dtype=pl.Int32).cast(pl.Date)
        else:
            s = pl.Series(name, values, dtype=dtype)
        series.append(s)
    series += [pl.Series(name, values, dtype=pl.Int64) for name, values in
               zip(extra, cols[len(spec):], strict=True)]
    return pl.DataFrame(series)


def simulate(seed: int, leads: int, clock: datetime | None = None) -> OrgData:
    """The org of `leads` leads a year, generated from `seed`, as it stands at `clock`. With 0 leads: a new org,
    its users, accounts and currencies and nothing else, however far the clock moves."""
    started = time.perf_counter()
    if leads < 0:
        raise ValueError(f"leads must be at least 0, got {leads}")
    clock = clock or BASE_CLOCK
    if clock.tzinfo is None:
        clock = clock.replace(tzinfo=UTC)
    clk = math.floor(clock.timestamp())
    org = _Org(seed, leads)
    planner = _Planner(org, clk, max(leads, 1))
    # arrival i comes at or after HS + int(i * step): plan every i whose earliest time is not after the clock
    n = max(0, math.floor((clk - _HS) / planner.step)) if leads else 0
    while leads and _HS + int(n * planner.step) <= clk:
        n += 1
    change_parts, truth_parts = [], []
    row_parts: list[list[pl.DataFrame]] = [[] for _ in _DYNAMIC]
    for lo in range(0, n, _BLOCK):
        # Planning allocates millions of small acyclic objects; the cyclic GC would rescan them for nothing
        # (~20% of the run time), so it is paused per block and the block's lists are dropped right after.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for i in range(lo, min(n, lo + _BLOCK)):
                planner.arrival(i)
        finally:
            if gc_was_on:
                gc.enable()
        change_parts.append(_columns(planner.changes, _CHANGE_SCHEMA))
        truth_parts.append(_columns(planner.truth, _TRUTH_TMP))
        for tb in range(1, len(_DYNAMIC)):
            row_parts[tb].append(_table_frame(TABLES[_DYNAMIC[tb]], planner.rows[tb], ("_change",)))
        planner.offset += len(planner.changes)
        planner.changes, planner.truth = [], []
        planner.rows = [[] for _ in _DYNAMIC]

    static = org.static_versions
    dynamic, order = _sorted(change_parts, ["t", "arrival", "seq"], _CHANGE_SCHEMA)
    dynamic = dynamic.with_columns(
        _version=pl.int_range(static + 1, static + 1 + dynamic.height, dtype=pl.Int64))
    static_changes = _columns(org.static_audits, {**_CHANGE_SCHEMA, "_version": pl.Int64})
    changes = pl.concat([static_changes, dynamic], rechunk=False)
    arrival = changes["arrival"].to_numpy()
    key = np.where(arrival >= 0, (arrival.astype(np.int64) << 16), np.int64(1) << 62).astype(np.uint64)
    audit_key = key | changes["seq"].to_numpy().astype(np.uint64)
    txn_key = key | changes["txn"].to_numpy().astype(np.uint64)
    audits = changes.select(
        auditid=_guids(audit_key, _stable(seed, "audit")),
        createdon=(pl.col("t") * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        operation="operation", action="action", objecttypecode="objecttypecode",
        _objectid_value="_objectid_value", _userid_value="_userid_value",
        _callinguserid_value=pl.lit(None, pl.Utf8), _regardingobjectid_value=pl.lit(None, pl.Utf8),
        # no evidence that Create audits carry a mask; Delete and Update ones do (see _delete/_update)
        attributemask="attributemask",
        transactionid=_guids(txn_key, _stable(seed, "transaction")),
        useradditionalinfo=pl.lit(None, pl.Utf8), _old="_old", _new="_new", _version="_version")
    # version of the change at unsorted position j = static + 1 + (its sorted position)
    position = np.empty(len(order), dtype=np.int64)
    position[order.to_numpy()] = np.arange(len(order), dtype=np.int64)

    rows: dict[str, pl.DataFrame] = {
        "transactioncurrency": _table_frame(TABLES["transactioncurrency"], org.currency_rows),
        "systemuser": _table_frame(TABLES["systemuser"], org.user_rows),
        "account": _table_frame(TABLES["account"], org.account_rows),
    }
    for tb in range(1, len(_DYNAMIC)):
        table = TABLES[_DYNAMIC[tb]]
        parts = row_parts[tb] or [_table_frame(table, [], ("_change",))]
        frame = pl.concat(parts, rechunk=False)
        parts.clear()
        version = pl.Series("versionnumber", position[frame["_change"].to_numpy()] + static + 1)
        rows[table.logical_name] = frame.with_columns(version).select([c.api_name for c in table.columns])

    deleted = audits.filter(pl.col("operation") == 3).select(
        table="objecttypecode", id="_objectid_value", version="_version", deletedon="createdon")
    truth = _sorted(truth_parts, ["case_id", "t", "seq"], _TRUTH_TMP)[0].select(
        "case_id", "case_type", "activity",
        timestamp=(pl.col("t") * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        resource="resource", object_type="object_type", object_id="object_id")
    max_version = static + dynamic.height
    stats: dict[str, float] = {"arrivals": float(n), "changes": float(dynamic.height),
                               "truth_events": float(truth.height)}
    stats.update({f"rows.{name}": float(frame.height) for name, frame in rows.items()})
    stats["seconds"] = time.perf_counter() - started
    return OrgData(seed=seed, leads=leads, clock=clock, meta=org.meta, rows=rows,
                   deleted=deleted.cast(DELETED_SCHEMA), audits=audits,  # type: ignore[arg-type]
                   truth=truth.cast(TRUTH_SCHEMA), max_version=max_version, stats=stats)  # type: ignore[arg-type]
