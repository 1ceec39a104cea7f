"""A Link export's `audit` table -> raw/audit and raw/audit_details, in the shapes connector/audit.py lands.

docs/LINK.md §7, D10: columns auditid, createdon (the operation's time, UTC), operation, action, objecttypecode
(a logical name, or an object type code the reader maps), objectid, userid, callinguserid, transactionid,
attributemask, changedata. `changedata` is JSON `{"changedAttributes": [{"logicalName", "oldValue",
"newValue"}]}` whose values are JSON strings or null (OUR CHOICE, §7), bare numbers and booleans accepted: a
lookup `"<table>,<guid>"` (or a bare GUID in a lookup column) lands as `_<x>_value` = the GUID, a choice or
integer as a number, a boolean as true/false, anything else as text; so transforms/events.py reads old and new
values exactly as from a Web API run's AuditDetails (`old_values`/`new_values` keyed by lake column names).
Built in polars: the JSON is decoded, exploded per changed attribute, encoded again per audit row.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from connector.audit import AUDIT, DETAILS
from connector.lake import Lake
from connector.link_rows import OBJECT_TYPE_CODES
from connector.link_values import UTC
from connector.rows import ColumnSpec

# §7 (DOCS AUDREF): operation and the action codes it lists.
OPERATIONS = {1: "Create", 2: "Update", 3: "Delete", 4: "Access"}
ACTIONS = {0: "Unknown", 1: "Create", 2: "Update", 3: "Delete", 4: "Activate", 5: "Deactivate", 12: "Merge",
           13: "Assign", 14: "Share", 16: "Close", 24: "Qualify", 25: "Disqualify", 41: "Set State", 44: "Win",
           45: "Lose", 64: "User Access via Web", 65: "User Access via Web Services"}
SPECS = [ColumnSpec(name, name, kind) for name, kind in (
    ("auditid", "Uniqueidentifier"), ("createdon", "DateTime"), ("operation", "Integer"), ("action", "Integer"),
    ("objecttypecode", "String"), ("objectid", "Uniqueidentifier"), ("userid", "Uniqueidentifier"),
    ("callinguserid", "Uniqueidentifier"), ("transactionid", "Uniqueidentifier"), ("attributemask", "String"),
    ("changedata", "String"))]
_CHANGES = pl.Struct({"changedAttributes": pl.List(pl.Struct(
    {"logicalName": pl.String, "oldValue": pl.String, "newValue": pl.String}))})
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
NUMBERS = {"Integer", "BigInt", "Picklist", "State", "Status"}
LOOKUPS = {"Lookup", "Owner", "Customer"}


def audit_frames(records: pl.DataFrame, types: Mapping[tuple[str, str], str],
                 users: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(audit rows page, audit details page) of typed `audit` records; `types`: (table, column) -> AttributeType;
    `users`: (id, name) of systemuser rows, for the acting user's label."""
    for spec in SPECS:
        if spec.logical_name not in records.columns:
            records = records.with_columns(pl.lit(None, pl.Utf8 if spec.attribute_type != "DateTime" else UTC)
                                           .alias(spec.logical_name))
    lower = [pl.col(c).str.to_lowercase() for c in ("auditid", "objectid", "userid", "callinguserid", "transactionid")]
    code = pl.col("objecttypecode").str.to_lowercase()
    records = (records.with_columns(*lower, code.replace(OBJECT_TYPE_CODES).alias("objecttypecode"))
               .unique("auditid", keep="first", maintain_order=True))
    names = users if users is not None else pl.DataFrame(schema={"id": pl.Utf8, "name": pl.Utf8})
    rows = (records.join(names.rename({"id": "userid", "name": "_user"}), on="userid", how="left")
            .select(pl.col("auditid"), pl.col("createdon").cast(UTC),
                    pl.col("operation").cast(pl.Int32),
                    pl.col("operation").cast(pl.Int64).replace_strict(OPERATIONS, default=None, return_dtype=pl.Utf8)
                    .alias("operation__label"),
                    pl.col("action").cast(pl.Int32),
                    pl.col("action").cast(pl.Int64).replace_strict(ACTIONS, default=pl.col("action").cast(pl.Utf8),
                                                                   return_dtype=pl.Utf8).alias("action__label"),
                    pl.col("objecttypecode"), pl.col("objectid").alias("_objectid_value"),
                    pl.lit(None, pl.Utf8).alias("_objectid_value__label"),
                    pl.col("objecttypecode").alias("_objectid_value__type"),
                    pl.col("userid").alias("_userid_value"), pl.col("_user").alias("_userid_value__label"),
                    pl.lit("systemuser").alias("_userid_value__type"),
                    pl.col("callinguserid").alias("_callinguserid_value"), pl.col("attributemask"),
                    pl.col("transactionid"), pl.lit(None, pl.Int64).alias("_version")))
    return rows, _details(records, types)


def _details(records: pl.DataFrame, types: Mapping[tuple[str, str], str]) -> pl.DataFrame:
    """One detail per audit row with changed attributes: old/new values as JSON objects of lake column names."""
    changed = (records.filter(pl.col("changedata").is_not_null() & (pl.col("changedata") != ""))
               .select("auditid", "objecttypecode", "objectid", "changedata",
                       pl.col("changedata").str.json_decode(_CHANGES).struct.field("changedAttributes").alias("_c"))
               .explode("_c").filter(pl.col("_c").is_not_null()).unnest("_c")
               .with_columns(pl.col("logicalName").str.to_lowercase()))
    if not changed.height:
        return pl.DataFrame(schema={"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8,
                                    "old_values": pl.Utf8, "new_values": pl.Utf8, "detail_type": pl.Utf8,
                                    "detail": pl.Utf8})
    kinds = pl.DataFrame([(t, c, k) for (t, c), k in types.items()],
                         schema={"objecttypecode": pl.Utf8, "logicalName": pl.Utf8, "_kind": pl.Utf8}, orient="row")
    changed = changed.join(kinds, on=["objecttypecode", "logicalName"], how="left")
    lookup = pl.col("_kind").is_in(list(LOOKUPS)).fill_null(False) | pl.any_horizontal(
        pl.col(side).str.contains(rf"^[A-Za-z_]\w*,{_GUID}$").fill_null(False) for side in ("oldValue", "newValue"))
    key = pl.when(lookup).then(pl.concat_str(pl.lit("_"), pl.col("logicalName"), pl.lit("_value"))).otherwise(
        pl.col("logicalName"))
    pairs = changed.with_columns(key.alias("_key"), lookup.alias("_lookup"))
    pairs = pairs.with_columns(_encoded(pl.col("oldValue")).alias("_old"), _encoded(pl.col("newValue")).alias("_new"))
    quoted_key = pl.concat_str(pl.lit('"'), _escape(pl.col("_key")), pl.lit('":'))
    return (pairs.group_by("auditid", maintain_order=True)
            .agg(pl.col("objecttypecode").first(), pl.col("objectid").first(), pl.col("changedata").first(),
                 pl.concat_str(quoted_key, pl.col("_old")).str.join(",").alias("_o"),
                 pl.concat_str(quoted_key, pl.col("_new")).str.join(",").alias("_n"))
            .select("auditid", "objecttypecode", "objectid",
                    pl.concat_str(pl.lit("{"), pl.col("_o"), pl.lit("}")).alias("old_values"),
                    pl.concat_str(pl.lit("{"), pl.col("_n"), pl.lit("}")).alias("new_values"),
                    pl.lit("AttributeAuditDetail").alias("detail_type"), pl.col("changedata").alias("detail")))


def _escape(text: pl.Expr) -> pl.Expr:
    return (text.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
            .str.replace_all("\n", "\\n", literal=True).str.replace_all("\r", "\\r", literal=True)
            .str.replace_all("\t", "\\t", literal=True))


def _encoded(value: pl.Expr) -> pl.Expr:
    """A changedata value as the JSON text a Web API AuditDetail lands (null/"" -> null, §7)."""
    lookup_guid = value.str.extract(rf"^(?:[A-Za-z_]\w*,)?({_GUID})$", 1).str.to_lowercase()
    number = pl.col("_kind").is_in(list(NUMBERS)).fill_null(False) & value.str.contains(r"^-?\d+$").fill_null(False)
    boolean = (pl.col("_kind") == "Boolean").fill_null(False)
    text = pl.concat_str(pl.lit('"'), _escape(value), pl.lit('"'))
    return (pl.when(value.is_null() | (value == "")).then(pl.lit("null"))
            .when(pl.col("_lookup")).then(pl.concat_str(pl.lit('"'), lookup_guid, pl.lit('"')).fill_null(text))
            .when(number).then(value)
            .when(boolean).then(pl.when(value.is_in(["True", "true", "1"])).then(pl.lit("true")).otherwise(
                pl.lit("false")))
            .otherwise(text))


def new_only(lake: Lake, rows: pl.DataFrame, details: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Audit rows and details whose auditid the lake does not hold yet (audit rows are only inserted)."""
    out = []
    for table, frame in ((AUDIT, rows), (DETAILS, details)):
        if frame.height and lake.has_rows(table):
            known = lake.scan(table).select("auditid").unique().collect()
            frame = frame.join(known, on="auditid", how="anti")
        out.append(frame)
    return out[0], out[1]
