"""The rows of a Link export: versions (sandbox/link_versions.py) with the Link's system columns, typed.

Adds D4's Id, SinkCreatedOn, SinkModifiedOn, `<lookup>type` and IsDelete to each version, renames the Web API
names to logical names, empties delete rows down to Id, the primary key, Sink* and IsDelete (D6), and picks
the partition (year of createdon, 1900 if null: docs/LINK.md §1.3, D2). Lake write times are the batch end
plus a small lag that is a pure function of (seed, batch), so an export is the same at every later clock. A few
rows are written twice by a "retry" with a later SinkModifiedOn, as the FAQ warns (docs/LINK.md §1.3:
"Duplicate versionnumbers occur on retries; filter with SinkModifiedOn").
"""

from __future__ import annotations

import polars as pl

from sandbox.link_csv import TYPED_LOOKUPS, export_columns
from sandbox.link_versions import Cycles, versions
from sandbox.orgdata import OrgData
from sandbox.schema import Table

DUPLICATE_EVERY = 97  # about one version in this many is re-committed by a retry


def _lag(batch: pl.Expr, seed: int) -> pl.Expr:
    """Seconds between a batch's end and its rows reaching the lake: 5..57, fixed per (seed, batch)."""
    return ((batch + 2) * 7919 + seed * 104_729) % 53 + 5


def lag_seconds(batch: int, seed: int) -> int:
    return ((batch + 2) * 7919 + seed * 104_729) % 53 + 5


def sink_time(cycles: Cycles, batch: pl.Expr, seed: int) -> pl.Expr:
    """When a batch's rows reached the lake (UTC): its end plus the lag."""
    epoch_s = cycles.end(batch) + _lag(batch, seed)
    return (epoch_s * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def retry_delay(cycles: Cycles) -> int:
    return min(180, cycles.interval_s // 3)


def export_rows(org: OrgData, table: Table, cycles: Cycles, upto: int, after: int = -2) -> pl.DataFrame:
    """Every row the Link appended for batches after..upto, in write order, as typed D4 columns plus `_batch`
    and `_part` (the partition name)."""
    frame = versions(org, table, cycles, upto, after)
    pk = table.primary_id
    frame = frame.with_columns(
        Id=pl.col(pk),
        SinkCreatedOn=sink_time(cycles, pl.col("_first"), org.seed),
        SinkModifiedOn=sink_time(cycles, pl.col("_batch"), org.seed),
        IsDelete=pl.col("_delete"),
        _part=pl.col("createdon").dt.year().cast(pl.Utf8).fill_null("1900"),
    )
    renames, typed = {}, []
    for c in table.columns:
        renames[c.api_name] = c.name
        if c.type in TYPED_LOOKUPS:
            typed.append(pl.when(pl.col(c.api_name).is_not_null()).then(pl.lit(c.targets[0]))
                         .otherwise(pl.lit(None, pl.Utf8)).alias(f"{c.name}type"))
    frame = frame.with_columns(typed).rename(renames)
    keep = {"Id", "SinkCreatedOn", "SinkModifiedOn", "IsDelete", pk}
    names = [name for name, _ in export_columns(table)]
    # D6: a delete row carries only Id, the primary key, SinkCreatedOn, SinkModifiedOn and IsDelete=True
    frame = frame.select(
        *[pl.col(n) if n in keep else pl.when(pl.col("IsDelete")).then(None).otherwise(pl.col(n)).alias(n)
          for n in names], "_batch", "_part")
    retried = (~pl.col("IsDelete")) & ((pl.col("versionnumber") * 2_654_435_761 + org.seed) % DUPLICATE_EVERY == 0)
    duplicates = frame.filter(retried).with_columns(
        pl.col("SinkModifiedOn") + pl.duration(seconds=retry_delay(cycles)))
    return (pl.concat([frame.with_row_index("_order"), duplicates.with_row_index("_order")])
            .sort("_batch", "SinkModifiedOn", "_order", maintain_order=True).drop("_order"))


def current_rows(org: OrgData, table: Table, cycles: Cycles, upto: int) -> pl.DataFrame:
    """The newest row per Id up to batch `upto` (MERGE semantics), deletes included as IsDelete rows."""
    rows = export_rows(org, table, cycles, upto)
    return rows.unique("Id", keep="last", maintain_order=True)
