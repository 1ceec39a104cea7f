"""The simulator's output: an org's state at its clock, the contract between simulator and emulator.

The simulator (sandbox/simulator.py) is the only writer; the Web API emulator (sandbox/store.py) only
reads it. Everything is a pure function of (seed, leads, clock): the same inputs give byte-identical frames,
and the versions of changes up to an earlier clock are the same at every later clock, so a delta token
taken before `sandbox advance` stays valid after it.

Frame layouts (column names are the Web API names from sandbox/schema.py, `Column.api_name`):

rows[<logical table name>]   one row per live record at the clock, every column of the table:
    Uniqueidentifier, Lookup, Owner, Customer, String, Memo, EntityName -> Utf8 (GUIDs lowercase)
    Integer, Picklist, State, Status -> Int32;  BigInt (versionnumber) -> Int64
    Money, Decimal -> Float64 (rounded to 2 decimals; nullable);  Boolean -> Boolean
    DateTime -> Datetime("us", "UTC") at whole seconds, except date_only columns with behavior
    "DateOnly" -> Date (UserLocal date_only columns stay Datetime: the user's local midnight in UTC)
    `versionnumber` is the version of the row's last change.
deleted    table (Utf8 logical name), id (Utf8), version (Int64), deletedon (Datetime UTC)
audits     the audit columns (auditid, createdon, operation, action, objecttypecode, _objectid_value,
           _userid_value, _callinguserid_value, _regardingobjectid_value, attributemask, transactionid,
           useradditionalinfo) plus three hidden columns the Web API never exposes as properties:
           _old, _new (Utf8 JSON objects {api_name: value} of the changed columns before/after, values as
           the Web API renders them: GUID strings, numbers, "2023-04-07T21:59:01Z", "2023-04-07", null)
           and _version (Int64, the change's version). One audit row per change, ordered by _version.
truth      case_id, case_type, activity, timestamp (Datetime UTC), resource (Utf8 full name or null),
           object_type, object_id: the simulator's own record of what happened, named by the default
           activity catalogue of CONTRACT.md plus the custom tables' activities (simulator.TRUTH_ACTIVITIES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

# The simulated history starts here; `leads` leads arrive evenly (with jitter) over HISTORY_DAYS, so a new
# org's clock is BASE_CLOCK. `sandbox advance --days D` moves the clock to BASE_CLOCK + D days and leads
# keep arriving at the same rate.
HISTORY_START = datetime(2025, 1, 1, tzinfo=UTC)
HISTORY_DAYS = 365
BASE_CLOCK = datetime(2026, 1, 1, tzinfo=UTC)

TRUTH_SCHEMA = {
    "case_id": pl.Utf8,
    "case_type": pl.Utf8,
    "activity": pl.Utf8,
    "timestamp": pl.Datetime("us", "UTC"),
    "resource": pl.Utf8,
    "object_type": pl.Utf8,
    "object_id": pl.Utf8,
}
DELETED_SCHEMA = {
    "table": pl.Utf8,
    "id": pl.Utf8,
    "version": pl.Int64,
    "deletedon": pl.Datetime("us", "UTC"),
}


@dataclass
class OrgMeta:
    organization_id: str
    business_unit_id: str
    app_user_id: str  # the application user l2c's app registration maps to (WhoAmI's UserId)
    expire_change_tracking_days: int = 7  # organization.expirechangetrackingindays


@dataclass
class OrgData:
    seed: int
    leads: int
    clock: datetime
    meta: OrgMeta
    rows: dict[str, pl.DataFrame]
    deleted: pl.DataFrame
    audits: pl.DataFrame
    truth: pl.DataFrame
    max_version: int = 0
    stats: dict[str, float] = field(default_factory=dict)
