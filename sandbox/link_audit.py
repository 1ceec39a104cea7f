"""The `audit` table as the Link exports it with the Delta option (docs/LINK.md §7, D10).

One row per audit of the simulator (create, update, delete, state change), published with its sync cycle.
`objecttypecode` is the logical name; `changedata` is JSON {"changedAttributes":[{"logicalName","oldValue",
"newValue"}]} whose values are strings or null in the §7 encodings: choices and integers as their digits,
booleans "True"/"False", datetimes yyyy-MM-ddTHH:mm:ssZ, money/decimal invariant text, lookups
"<target logical name>,<guid>". Built per table from the hidden _old/_new JSON, vectorised: each audited column
becomes a struct that exists only where the change lists it (attributemask, or non-null for a Create).
"""

from __future__ import annotations

import polars as pl

from sandbox.link_rows import sink_time
from sandbox.link_versions import Cycles
from sandbox.orgdata import OrgData
from sandbox.schema import TABLES, Column

_PLATFORM = frozenset({"modifiedon", "modifiedby", "versionnumber"})

AUDIT_COLUMNS = ("Id", "SinkCreatedOn", "SinkModifiedOn", "auditid", "createdon", "operation", "action",
                 "objecttypecode", "objectid", "userid", "callinguserid", "transactionid", "attributemask",
                 "changedata", "useradditionalinfo", "regardingobjectid", "versionnumber", "IsDelete",
                 "PartitionId")


def _encoded(column: Column, text: pl.Expr) -> pl.Expr:
    """A Web API JSON value (decoded as text) in the §7 changedata encoding."""
    if column.is_lookup:
        return pl.lit(column.targets[0] + ",") + text
    if column.type == "DateTime" and column.date_only and column.behavior == "DateOnly":
        return text + pl.lit("T00:00:00Z")
    if column.type == "Boolean":
        return pl.when(text == "true").then(pl.lit("True")).otherwise(pl.lit("False"))
    return text


def _changedata(audits: pl.DataFrame, table_name: str) -> pl.DataFrame:
    table = TABLES[table_name]
    audited = [c for c in table.columns if c.audited and c.name not in _PLATFORM]
    struct = pl.Struct({c.api_name: pl.Utf8 for c in audited})
    frame = audits.with_columns(
        _mask=pl.col("attributemask").str.split(",").cast(pl.List(pl.Int64)),
        _o=pl.col("_old").str.json_decode(struct), _n=pl.col("_new").str.json_decode(struct))
    entries = []
    for c in audited:
        old, new = pl.col("_o").struct.field(c.api_name), pl.col("_n").struct.field(c.api_name)
        listed = pl.when(pl.col("_mask").is_null()).then(new.is_not_null()) \
            .otherwise(pl.col("_mask").list.contains(c.number))
        entries.append(pl.when(listed).then(pl.struct(
            logicalName=pl.lit(c.name), oldValue=_encoded(c, old), newValue=_encoded(c, new))))
    document = pl.struct(changedAttributes=pl.concat_list(entries).list.drop_nulls())
    return frame.with_columns(changedata=document.struct.json_encode()).drop("_mask", "_o", "_n")


def audit_rows(org: OrgData, cycles: Cycles, upto: int) -> pl.DataFrame:
    """The audit table for the batches up to `upto`, typed as the Delta table holds it."""
    batch = cycles.batch(pl.col("createdon").dt.epoch("s"))
    audits = org.audits.filter(batch <= upto)
    parts = [_changedata(audits.filter(pl.col("objecttypecode") == name), name)
             for name in audits.get_column("objecttypecode").unique().sort().to_list()]
    frame = pl.concat(parts) if parts else audits.with_columns(changedata=pl.lit(None, pl.Utf8))
    sink = sink_time(cycles, batch, org.seed)
    return frame.sort("_version").select(
        Id="auditid", SinkCreatedOn=sink, SinkModifiedOn=sink, auditid="auditid", createdon="createdon",
        operation="operation", action="action", objecttypecode="objecttypecode", objectid="_objectid_value",
        userid="_userid_value", callinguserid="_callinguserid_value", transactionid="transactionid",
        attributemask="attributemask", changedata="changedata", useradditionalinfo="useradditionalinfo",
        regardingobjectid="_regardingobjectid_value", versionnumber="_version",
        IsDelete=pl.lit(False), PartitionId=pl.col("createdon").dt.year().cast(pl.Utf8))
