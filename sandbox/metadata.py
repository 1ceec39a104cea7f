"""`EntityDefinitions` and `EntityDefinitions(...)/Attributes` rows, built from sandbox/schema.py.

Shapes follow [PD] webapi/query-metadata-web-api.md: EntityMetadata with LogicalName, EntitySetName,
PrimaryIdAttribute, ObjectTypeCode, ChangeTrackingEnabled and IsAuditEnabled as a BooleanManagedProperty;
AttributeMetadata with LogicalName, ColumnNumber (what audit attributemask lists), AttributeType and a
derived `@odata.type`. `$select` and a simple `$filter` work on them as on a real org.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from sandbox import odata
from sandbox.schema import TABLES, Column, Table

if TYPE_CHECKING:
    from sandbox.store import Store

_NS = uuid.UUID("6c1b0e3a-5c9e-4a8e-9f1e-3a0c5b7d2e11")

_ATTRIBUTE_ODATA_TYPES = {
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    "String": "StringAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
}


def metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


@cache
def metadata_table(kind: str) -> Table:
    """A pseudo-table so the OData parser validates `$select`/`$filter` names on metadata queries."""
    if kind == "entity":
        cols = [("MetadataId", "Uniqueidentifier"), ("LogicalName", "String"), ("SchemaName", "String"),
                ("EntitySetName", "String"), ("PrimaryIdAttribute", "String"), ("PrimaryNameAttribute", "String"),
                ("ObjectTypeCode", "Integer"), ("ChangeTrackingEnabled", "Boolean"), ("IsAuditEnabled", "Boolean"),
                ("LogicalCollectionName", "String"), ("IsCustomEntity", "Boolean")]
        name = "EntityMetadata"
    else:
        cols = [("MetadataId", "Uniqueidentifier"), ("LogicalName", "String"), ("SchemaName", "String"),
                ("ColumnNumber", "Integer"), ("AttributeType", "String"), ("IsAuditEnabled", "Boolean"),
                ("IsValidForRead", "Boolean"), ("EntityLogicalName", "String"), ("IsCustomAttribute", "Boolean"),
                ("AttributeOf", "String"), ("Format", "String"), ("DateTimeBehavior", "String"),
                ("Targets", "String")]
        name = "AttributeMetadata"
    return Table(name, name, "MetadataId", "LogicalName", 0,
                 tuple(Column(n, t, i + 1) for i, (n, t) in enumerate(cols)), change_tracking=False, audit=False)


def _schema_name(logical: str) -> str:
    return "".join(part.capitalize() for part in logical.split("_"))


def entity_rows(store: Store) -> list[dict[str, Any]]:
    rows = []
    for table in TABLES.values():
        tracking = table.change_tracking and table.logical_name not in store.change_tracking_off
        rows.append({
            "MetadataId": metadata_id(table.logical_name),
            "LogicalName": table.logical_name,
            "SchemaName": _schema_name(table.logical_name),
            "EntitySetName": table.entity_set,
            "LogicalCollectionName": table.entity_set,
            "PrimaryIdAttribute": table.primary_id,
            "PrimaryNameAttribute": table.primary_name,
            "ObjectTypeCode": table.object_type_code,
            "ChangeTrackingEnabled": tracking,
            "IsCustomEntity": False,
            "IsAuditEnabled": {"Value": table.audit, "CanBeChanged": True,
                               "ManagedPropertyLogicalName": "canmodifyauditsettings"},
        })
    return rows


def attribute_rows(table: Table) -> list[dict[str, Any]]:
    rows = []
    for column in table.columns:
        row: dict[str, Any] = {
            "@odata.type": f"#Microsoft.Dynamics.CRM.{_ATTRIBUTE_ODATA_TYPES[column.type]}",
            "MetadataId": metadata_id(table.logical_name, column.name),
            "LogicalName": column.name,
            "SchemaName": _schema_name(column.name),
            "EntityLogicalName": table.logical_name,
            "ColumnNumber": column.number,
            "AttributeType": column.type,
            "IsValidForRead": True,
            "IsCustomAttribute": False,
            "AttributeOf": None,
            "IsAuditEnabled": {"Value": column.audited, "CanBeChanged": True,
                               "ManagedPropertyLogicalName": "canmodifyauditsettings"},
        }
        if column.type == "DateTime":
            row["Format"] = "DateOnly" if column.date_only else "DateAndTime"
            row["DateTimeBehavior"] = {"Value": column.behavior if column.date_only else "UserLocal"}
        if column.is_lookup:
            row["Targets"] = list(column.targets)
        rows.append(row)
    return rows


def query_metadata(table: Table, rows: list[dict[str, Any]], params: list[tuple[str, str]],
                   prefer: str | None) -> list[dict[str, Any]]:
    parsed = odata.parse_query(table, params, prefer)
    keep = list(range(len(rows)))
    if parsed.filter is not None:
        dtypes = {c.name: (pl.Boolean if c.type == "Boolean" else pl.Int32 if c.type == "Integer" else pl.Utf8)
                  for c in table.columns}
        flat = pl.DataFrame([{name: _scalar(row.get(name)) for name in dtypes} for row in rows], schema=dtypes)
        keep = flat.with_row_index("__i").filter(parsed.filter).get_column("__i").to_list()
    out = []
    for i in keep:
        row = rows[i]
        if parsed.select:
            row = {k: v for k, v in row.items() if k in parsed.select or k in ("@odata.type", "MetadataId")}
        out.append(row)
    return out


def _scalar(value: Any) -> Any:
    """Managed properties filter on their Value; list-valued properties are not filterable here."""
    if isinstance(value, dict):
        return value.get("Value")
    return None if isinstance(value, list) else value
