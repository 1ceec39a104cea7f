"""Every version of every row the Link publishes, rebuilt from the simulator's audit history, in sync cycles.

The simulator records every create, update and delete of the lead-to-cash tables as one audit row whose hidden
_new JSON holds the changed columns (sandbox/orgdata.py), so the state after each change is a forward replay from
the Create: a column's value after change k is its value in the last change <= k that set it. That replay is
vectorised: per column, the row index of the last change that set it is forward-filled per record and gathered.
The Link then publishes in batches ("Synapse Link processes changes in groups or 'batches' before publishing to
the lake", docs/LINK.md §8): batch boundaries every `interval` seconds from HISTORY_START, and a row's version in
the lake is its state at the end of a batch in which it changed (the last change wins). Everything before
HISTORY_START (the static records) is the Link's initial sync, one batch ending at HISTORY_START.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from sandbox.orgdata import HISTORY_START, OrgData
from sandbox.schema import DATA_TABLES, Column, Table

# The tables a Link profile over the sandbox org exports (audit only in Delta, docs/LINK.md §7).
LINK_TABLES: tuple[str, ...] = DATA_TABLES
# Maintained by the platform on every write and never in the audit details (sandbox/sim_audit.py _UNAUDITED).
_PLATFORM = ("modifiedon", "modifiedby", "versionnumber")
_HS = int(HISTORY_START.timestamp())
_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Cycles:
    """Sync cycles of `interval_s` seconds from HISTORY_START; batch -1 is the initial sync of older records."""

    interval_s: int

    def batch(self, epoch_s: pl.Expr) -> pl.Expr:
        return pl.max_horizontal((epoch_s - _HS) // self.interval_s, pl.lit(-1)).cast(pl.Int64)

    def end(self, batch: pl.Expr) -> pl.Expr:
        """The batch's end (epoch seconds): when the Link publishes it."""
        return (batch + 1) * self.interval_s + _HS

    def end_of(self, batch: int) -> int:
        return _HS + (batch + 1) * self.interval_s

    def last_published(self, clock: datetime) -> int:
        """The newest batch whose end is not after the clock (the initial sync is always published)."""
        return max(-1, (int(clock.timestamp()) - _HS) // self.interval_s - 1)


def _typed(column: Column, text: pl.Expr) -> pl.Expr:
    """A Web API JSON value (decoded as text) -> the dtype of the live rows (sandbox/orgdata.py)."""
    if column.type == "DateTime":
        if column.date_only and column.behavior == "DateOnly":
            return text.str.to_date("%Y-%m-%d")
        return text.str.to_datetime(_ISO, time_unit="us", time_zone="UTC")
    if column.type in ("Integer", "Picklist", "State", "Status"):
        return text.cast(pl.Int32)
    if column.type == "BigInt":
        return text.cast(pl.Int64)
    if column.type in ("Money", "Decimal"):
        return text.cast(pl.Float64)
    if column.type == "Boolean":
        return text == "true"
    return text


def changes(org: OrgData, table: Table) -> pl.DataFrame:
    """One row per change of the table: the row's state right after it (live-row dtypes, api names), plus
    `_op` (1 create, 2 update, 3 delete), `_t` (epoch seconds) and `_version`. A table without audit history
    (systemuser, transactioncurrency) has its live rows, each as one create at its modifiedon."""
    names = [c.api_name for c in table.columns]
    audits = org.audits.filter(pl.col("objecttypecode") == table.logical_name)
    if audits.is_empty():
        live = org.rows[table.logical_name]
        return live.with_columns(_op=pl.lit(1, pl.Int32), _t=pl.col("modifiedon").dt.epoch("s"),
                                 _version=pl.col("versionnumber"))
    replayed = [c for c in table.columns if c.name not in _PLATFORM]
    decoded = audits.select(
        "operation", "_objectid_value", "_userid_value", "_version",
        _t=pl.col("createdon").dt.epoch("s"),
        _mask=pl.col("attributemask").str.split(",").cast(pl.List(pl.Int64)),
        _new=pl.col("_new").str.json_decode(pl.Struct({c.api_name: pl.Utf8 for c in replayed})),
    ).unnest("_new").with_row_index("_i")
    create, update = pl.col("operation") == 1, pl.col("operation") == 2
    last_set = []
    for c in replayed:
        # A Create lists its non-null columns; an Update its changed ones (attributemask, which also tells an
        # update to null from an unchanged column); a Delete changes no value.
        present = (create & pl.col(c.api_name).is_not_null()) | (update & pl.col("_mask").list.contains(c.number))
        last_set.append(pl.when(present).then(pl.col("_i")).forward_fill().over("_objectid_value")
                        .alias(f"_at_{c.api_name}"))
    state = decoded.with_columns(last_set).select(
        *[_typed(c, pl.col(c.api_name).gather(pl.col(f"_at_{c.api_name}"))).alias(c.api_name) for c in replayed],
        modifiedon=pl.col("_t").mul(1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        _modifiedby_value="_userid_value", versionnumber="_version",
        _op="operation", _t="_t", _version="_version",
    )
    return state.select(*names, "_op", "_t", "_version")


def versions(org: OrgData, table: Table, cycles: Cycles, upto: int, after: int = -2) -> pl.DataFrame:
    """The rows the Link wrote for batches after..upto: per (record, batch) the state after its last change in
    the batch, with `_batch`, `_first` (the record's first batch: its first lake write, SinkCreatedOn) and
    `_delete` (the last change was a delete). Ordered by batch, then version."""
    pk = table.primary_id
    frame = changes(org, table).with_columns(_batch=cycles.batch(pl.col("_t")))
    frame = frame.with_columns(_first=pl.col("_batch").min().over(pk)).filter(pl.col("_batch") <= upto)
    last = pl.col("_version") == pl.col("_version").max().over(pk, "_batch")
    return (frame.filter(last, pl.col("_batch") > after)
            .with_columns(_delete=pl.col("_op") == 3)
            .sort("_batch", "_version"))


def collapsed_changes(org: OrgData, interval_minutes: int) -> pl.DataFrame:
    """The truth events whose change is not visible as a version of its own in an append-only export: a later
    change of the same record in the same batch (docs/LINK.md §8) overwrote it. Computed from the simulator's
    audits and truth only: each truth event is the audit change of its record at its time."""
    interval = interval_minutes * 60
    key = ["object_type", "object_id", "timestamp"]
    audits = org.audits.select(
        object_type="objecttypecode", object_id="_objectid_value", timestamp="createdon", _version="_version",
        _batch=pl.max_horizontal((pl.col("createdon").dt.epoch("s") - _HS) // interval, pl.lit(-1)),
    ).with_columns(
        _shown=pl.col("_version") == pl.col("_version").max().over("object_type", "object_id", "_batch"),
        # Several changes of one record in one second (a transaction): the truth (ordered by the simulator's
        # sequence within a case) names the last ones of them, as every change that is no activity (a new
        # estimated close date) comes first in the stories; so the k-th last event maps to the k-th last change.
        _rank=pl.col("_version").rank("ordinal", descending=True).over(key),
    )
    truth = org.truth.with_row_index("_row").with_columns(
        _rank=pl.col("_row").rank("ordinal", descending=True).over(key))
    return (truth.join(audits.select(*key, "_rank", "_shown"), on=[*key, "_rank"], how="inner")
            .filter(~pl.col("_shown")).drop("_row", "_rank", "_shown").sort("case_id", "timestamp"))

