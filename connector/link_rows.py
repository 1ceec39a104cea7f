"""Export rows -> raw lake pages in the Web API path's columns (connector/rows.py), and the columns' metadata.

The metadata a Web API run reads from EntityDefinitions is made from the export (docs/LINK.md §1.2, §4, §5):
the AttributeType from `<table>-EntityMetadata.json` when the export has it, else from model.json's dataType
(or the Delta column type) refined by the metadata tables: a column with TargetMetadata targets or a
`<x>type` companion is a lookup, one with OptionsetMetadata options a choice, statecode/statuscode State/Status.
The export says nothing of a DateTime column's DateOnly behaviour, so the behaviour comes from the columns
Microsoft's table references document as DateOnly (`DATE_ONLY`) unless the export's AttributeMetadata says.
Labels (D8): a choice's from OptionsetMetadata / GlobalOptionsetMetadata, statecode's from StateMetadata,
statuscode's from StatusMetadata, in the configured language, else any language, else the integer as text. A
lookup (D9) lands as `_<x>_value` (its GUID), `_<x>_value__type` from the `<x>type` column (a logical name or an
object type code), else the only TargetMetadata target, else the candidate table that holds the GUID; its
`__label` is that row's primary name (`PRIMARY_NAME`), never made up: null when not found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from connector.link_meta import Metadata
from connector.link_values import DTYPES, UTC
from connector.rows import ColumnSpec

VERSION = "_version"
SYSTEM = {"id", "sinkcreatedon", "sinkmodifiedon", "isdelete", "isdeleted", "partitionid"}
# docs/LINK.md §5: object type codes a `<x>type` column may carry instead of a logical name.
OBJECT_TYPE_CODES = {"1": "account", "2": "contact", "3": "opportunity", "4": "lead", "8": "systemuser", "9": "team"}
# PrimaryNameAttribute of the tables l2c's lookups point at (Microsoft's table references,
# dynamics-365-customer-engagement ce/developer/reference/entities/<table>.md): what a lookup's FormattedValue is.
PRIMARY_NAME = {"account": "name", "contact": "fullname", "systemuser": "fullname", "team": "name", "lead": "fullname",
                "opportunity": "name", "quote": "name", "salesorder": "name", "invoice": "name",
                "transactioncurrency": "currencyname", "businessunit": "name", "product": "name",
                "pricelevel": "name"}
# DateTime columns with DateTimeBehavior DateOnly (calendar days, Edm.Date in the Web API) per the same
# references: opportunity.md (estimatedclosedate, actualclosedate), quote.md (closedon), invoice.md (duedate).
DATE_ONLY = {("opportunity", "estimatedclosedate"), ("opportunity", "actualclosedate"), ("quote", "closedon"),
             ("invoice", "duedate")}
_CDM_TYPES = {"guid": "Uniqueidentifier", "string": "String", "int64": "BigInt", "int32": "Integer",
              "decimal": "Decimal", "double": "Double", "boolean": "Boolean", "datetime": "DateTime",
              "datetimeoffset": "DateTime"}


def cdm_type(dtype: pl.DataType) -> str:
    """A Delta column's type as model.json would name it."""
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return "dateTime"
    if isinstance(dtype, pl.Decimal):
        return "decimal"
    if dtype.is_float():
        return "double"
    if dtype.is_integer():
        return "int64"
    return "boolean" if dtype == pl.Boolean else "string"


def attributes(table: str, columns: list[tuple[str, str]], meta: Metadata) -> list[dict[str, Any]]:
    """AttributeMetadata-like rows (connector/metadata.py `_slim` shape) of the export's columns of `table`."""
    names = {name.lower() for name, _ in columns}
    out = []
    for exported, data_type in columns:
        name = exported.lower()
        if name in SYSTEM or (name.endswith("type") and name[:-4] in names):
            continue
        known = meta.attribute_types.get((table, name), {})
        attribute_type = str(known.get("AttributeType") or _guess(table, name, data_type, names, meta))
        if name == f"{table}id":
            attribute_type = "Uniqueidentifier"
        date_only = (table, name) in DATE_ONLY
        behavior = known.get("DateTimeBehavior") or ("DateOnly" if date_only else None)
        if attribute_type == "DateTime":
            date_only = known.get("Format", "DateOnly" if date_only else None) == "DateOnly"
        out.append({"LogicalName": name, "ColumnNumber": known.get("ColumnNumber"), "AttributeType": attribute_type,
                    "Format": "DateOnly" if date_only else ("DateAndTime" if attribute_type == "DateTime" else None),
                    "DateTimeBehavior": behavior if attribute_type == "DateTime" else None})
    return out


def _guess(table: str, name: str, data_type: str, names: set[str], meta: Metadata) -> str:
    if name == "statecode":
        return "State"
    if name == "statuscode":
        return "Status"
    targets = meta.targets.filter((pl.col("EntityName") == table) & (pl.col("AttributeName") == name))
    if targets.height or f"{name}type" in names:
        return "Owner" if name == "ownerid" else "Customer" if name == "customerid" else "Lookup"
    kind = _CDM_TYPES.get(data_type.lower(), "String")
    if kind in ("Integer", "BigInt"):
        options = meta.options.filter((pl.col("EntityName") == table) & (pl.col("OptionSetName") == name))
        return "Picklist" if options.height else kind
    return kind


def _labels(frame: pl.DataFrame, key: str, language: int) -> tuple[list[int], list[str]]:
    """(values, labels) of one choice: the configured language first, then any (D8)."""
    chosen = (frame.filter(pl.col(key).is_not_null())
              .sort(pl.col("Language") != language, "Language", nulls_last=True)
              .unique(key, keep="first", maintain_order=True))
    return chosen.get_column(key).to_list(), chosen.get_column("Label").cast(pl.Utf8).to_list()


def _choice_label(spec: ColumnSpec, table: str, meta: Metadata, language: int) -> pl.Expr:
    name = spec.logical_name
    if spec.attribute_type == "State":
        keys, labels = _labels(meta.states.filter(pl.col("EntityName") == table), "State", language)
    elif spec.attribute_type == "Status":
        keys, labels = _labels(meta.statuses.filter(pl.col("EntityName") == table), "Status", language)
    else:
        mine = meta.options.filter((pl.col("EntityName") == table) & (pl.col("OptionSetName") == name))
        keys, labels = _labels(mine, "Option", language)
    value = pl.col(name)
    if spec.attribute_type == "Boolean":
        by_value = dict(zip(keys, labels, strict=True))
        return (pl.when(value).then(pl.lit(by_value.get(1))).when(~value).then(pl.lit(by_value.get(0)))
                .otherwise(None).cast(pl.Utf8))
    text = value.cast(pl.Utf8)
    if not keys:
        return text  # D8: missing -> the integer as label text
    return value.cast(pl.Int64).replace_strict(keys, labels, default=text, return_dtype=pl.Utf8)


def land_frames(records: pl.DataFrame, specs: list[ColumnSpec], table: str, meta: Metadata, language: int,
                names: Mapping[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows page, deletions page) of typed export records (lower-case column names; `isdelete`,
    `sinkmodifiedon`, `versionnumber` as the Link writes them). `names`: per table, (id, name) of its rows.

    Deletions are dated by SinkModifiedOn: the time the Link wrote the delete row to the lake, an upper bound of
    the deletion's real time (docs/LINK.md D6, §8: a delete row has no modifiedon)."""
    pk = f"{table}id"
    deleted = pl.col("isdelete").fill_null(False) if "isdelete" in records.columns else pl.lit(False)
    version = (pl.col("versionnumber") if "versionnumber" in records.columns else pl.lit(None)).cast(pl.Int64)
    order = [c for c in ("sinkmodifiedon", "versionnumber") if c in records.columns]
    live = records.filter(~deleted).with_columns(version.alias(VERSION))
    # A retried commit repeats a version (docs/LINK.md §1.3 FAQ): one row per (Id, versionnumber), the first
    # written; a table without versionnumber keeps each (Id, SinkModifiedOn) (D6's version key).
    sink = pl.col("sinkmodifiedon") if "sinkmodifiedon" in records.columns else pl.lit(None, UTC)
    live = (live.sort(order, nulls_last=True) if order else live).with_columns(
        pl.when(pl.col(VERSION).is_null()).then(sink).otherwise(None).alias("_sink_key"))
    live = live.unique([pk, VERSION, "_sink_key"], keep="first", maintain_order=True)
    columns: list[pl.Expr] = []
    for spec in specs:
        name = spec.logical_name
        if name not in live.columns:
            live = live.with_columns(pl.lit(None, DTYPES[spec.kind]).alias(name))
        value = pl.col(name)
        if spec.lookup or spec.attribute_type == "Uniqueidentifier":
            value = value.str.to_lowercase()
        columns.append(value.cast(DTYPES[spec.kind]).alias(spec.api_name))
        if spec.lookup:
            live = _resolve(live, table, name, meta, names)
            columns += [pl.col(f"_{name}_name").alias(spec.api_name + "__label"),
                        pl.col(f"_{name}_type").alias(spec.api_name + "__type")]
        elif spec.labelled:
            columns.append(_choice_label(spec, table, meta, language).alias(spec.api_name + "__label"))
    rows = live.select(*columns, pl.col(VERSION))
    gone = records.filter(deleted)
    deletions = gone.select(pl.col(pk).fill_null(pl.col("id")).str.to_lowercase().alias(pk),
                            pl.lit(None, pl.Int64).alias(VERSION),
                            pl.col("sinkmodifiedon").cast(UTC).alias("_deleted_at")).unique(
        [pk, "_deleted_at"], keep="first", maintain_order=True)
    return rows, deletions


def _resolve(live: pl.DataFrame, table: str, name: str, meta: Metadata,
             names: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """`live` plus `_<name>_type` and `_<name>_name` for lookup column `name` (D9)."""
    targets = (meta.targets.filter((pl.col("EntityName") == table) & (pl.col("AttributeName") == name))
               .get_column("ReferencedEntity").unique().sort().to_list())
    typed = f"{name}type"
    if typed in live.columns:
        given = pl.col(typed).cast(pl.Utf8).str.to_lowercase()
        given = given.replace(OBJECT_TYPE_CODES)
    else:
        given = pl.lit(targets[0] if len(targets) == 1 else None, pl.Utf8)
    candidates = [t for t in (targets or list(names)) if t in names]
    known = pl.DataFrame(schema={"_id": pl.Utf8, "_table": pl.Utf8, "_name": pl.Utf8})
    if candidates:
        known = pl.concat([names[t].select(pl.col("id").alias("_id"), pl.lit(t).alias("_table"),
                                           pl.col("name").alias("_name")) for t in candidates])
    known = known.unique("_id", keep="last", maintain_order=True)
    out = (live.with_columns(pl.col(name).str.to_lowercase().alias("_id"), given.alias("_given"))
           .join(known, on="_id", how="left")
           .with_columns(pl.when(pl.col(name).is_null()).then(None).otherwise(pl.coalesce("_given", "_table"))
                         .alias(f"_{name}_type"))
           .with_columns(pl.when(pl.col("_table") == pl.col(f"_{name}_type")).then(pl.col("_name")).otherwise(None)
                         .alias(f"_{name}_name")))
    return out.drop("_id", "_given", "_table", "_name")
