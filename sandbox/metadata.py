"""`EntityDefinitions` and `EntityDefinitions(...)/Attributes[/<cast>]` as Dataverse serves them, typed strictly.

Every metadata request addresses one of Microsoft's metadata EntityTypes (sandbox/metadata_types.py): the
EntityDefinitions collection or one entity is EntityMetadata; the Attributes collection is AttributeMetadata, so
only AttributeMetadata's own properties can be selected or filtered there; "In order to retrieve the properties
of a specific type of attribute you must cast the Attributes collection-valued navigation property to the type you
want", e.g. `.../Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,Format`, which
answers only the attributes of that type ([PD] webapi/query-metadata-web-api.md). Any other property is
Dataverse's 400 "Could not find a property named 'Format' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'."
(realdata payload 28, code 0x80060888). Rows carry only their own type's properties; in a collection typed with a
base type, each row names its derived type in `@odata.type` (realdata payload 14), and `MetadataId` always comes
back (payload 13). Values follow Microsoft's table reference (sandbox/schema.py): IsAuditEnabled is a
BooleanManagedProperty, DateTimeBehavior a complex value `{"Value": "DateOnly"}`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from sandbox import metadata_types as mt
from sandbox import odata
from sandbox.odata_errors import CRM_CODE, ODataError
from sandbox.schema import TABLES, Column, Table

if TYPE_CHECKING:
    from sandbox.store import Store

_NS = uuid.UUID("6c1b0e3a-5c9e-4a8e-9f1e-3a0c5b7d2e11")
CRM = "Microsoft.Dynamics.CRM."
ENTITY = "EntityMetadata"
ATTRIBUTE = "AttributeMetadata"
# Query options Dataverse documents for metadata queries: "You can use any of the EntityMetadata properties with
# $select ... and you can use $filter on any properties which use primitive or enumeration values" and "There is
# no paging" ([PD] webapi/query-metadata-web-api.md). Their $orderby/$top/$skip/$count/$expand answers are not
# documented: the sandbox refuses them rather than guess.
METADATA_OPTIONS = ("$select", "$filter")
_EDM_COLUMN = {"Edm.String": "String", "Edm.Boolean": "Boolean", "Edm.Int32": "Integer", "Edm.Int64": "BigInt",
               "Edm.Guid": "Uniqueidentifier"}
_NOT_FOUND = re.compile(r"^Could not find a property named '[^']*' on type ")


def metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def attribute_type(column: Column) -> str:
    """The metadata EntityType a real org serves for the column's AttributeType."""
    return mt.METADATA_TYPE_OF_ATTRIBUTE[column.type]


@cache
def metadata_table(type_name: str) -> Table:
    """A pseudo-table of a metadata type's primitive properties, so the OData parser checks `$filter` names and
    literals against it (enumerations and complex values filter only through forms the sandbox refuses)."""
    props = mt.properties(type_name)
    cols = tuple(Column(name, _EDM_COLUMN.get(edm, "String"), i + 1) for i, (name, edm) in enumerate(props.items()))
    return Table(type_name, type_name, "MetadataId", "LogicalName", 0, cols, change_tracking=False, audit=False)


def _schema_name(logical: str) -> str:
    return "".join(part.capitalize() for part in logical.split("_"))


def _managed(value: bool, logical: str) -> dict[str, Any]:
    return {"Value": value, "CanBeChanged": True, "ManagedPropertyLogicalName": logical}


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
            "IsCustomEntity": table.custom,
            "IsAuditEnabled": _managed(table.audit, "canmodifyauditsettings"),
            "HasChanged": None,
        })
    return rows


def attribute_rows(table: Table) -> list[dict[str, Any]]:
    """Every column's AttributeMetadata as its derived type, `@odata.type` first."""
    rows = []
    for column in table.columns:
        kind = attribute_type(column)
        row: dict[str, Any] = {
            "@odata.type": f"#{CRM}{kind}",
            "MetadataId": metadata_id(table.logical_name, column.name),
            "HasChanged": None,
            "LogicalName": column.name,
            "SchemaName": _schema_name(column.name),
            "EntityLogicalName": table.logical_name,
            "ColumnNumber": column.number,
            "AttributeType": column.type,
            "AttributeTypeName": {"Value": f"{column.type}Type"},
            "IsValidForRead": True,
            "IsCustomAttribute": column.custom,
            "AttributeOf": None,
            "IsAuditEnabled": _managed(column.audited, "canmodifyauditsettings"),
        }
        if kind == "DateTimeAttributeMetadata":
            # Format is display only; DateTimeBehavior says how values are stored and served
            # ([PD] behavior-format-date-time-attribute.md). The out-of-box columns cannot change it.
            row["Format"] = "DateOnly" if column.date_only else "DateAndTime"
            row["DateTimeBehavior"] = {"Value": column.behavior}
            row["CanChangeDateTimeBehavior"] = _managed(False, "canchangedatetimebehavior")
        if kind == "LookupAttributeMetadata":
            row["Targets"] = list(column.targets)
        rows.append(row)
    return rows


# --- addressing and querying -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Addressed:
    """What a metadata path names: its type, whether one row or a collection, and its @odata.context path."""

    type_name: str
    single: bool
    context: str  # e.g. "EntityDefinitions('lead')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"


def attribute_cast(segment: str | None) -> str:
    """The type a `/Attributes/Microsoft.Dynamics.CRM.<T>` segment casts to (AttributeMetadata without one)."""
    if segment is None:
        return ATTRIBUTE
    name = segment.removeprefix(CRM)
    if not segment.startswith(CRM) or name not in mt.TYPES or not mt.is_a(name, ATTRIBUTE):
        # Inferred: ODataLib's answer to a segment that names no type derived from the collection's.
        raise ODataError(404, CRM_CODE, f"Resource not found for the segment '{segment}'.")
    if name in mt.NOT_CASTABLE:
        # "OptionSet and GlobalOptionSet ... are defined within EnumAttributeMetadata EntityType, you cannot cast
        # the attributes to this type" ([PD] webapi/query-metadata-web-api.md); the error text is inferred.
        raise ODataError(400, CRM_CODE, f"The Attributes collection cannot be cast to '{segment}'.")
    return name


def query_metadata(addressed: Addressed, rows: list[dict[str, Any]], params: list[tuple[str, str]],
                   prefer: str | None) -> tuple[list[dict[str, Any]], str]:
    """The rows of `addressed`'s type (a cast keeps only its type's rows) after `$select`/`$filter`, and the
    `@odata.context` fragment (with the selection)."""
    type_name = addressed.type_name
    for name, _ in params:
        if not name.startswith("@") and name not in METADATA_OPTIONS and name in odata.KNOWN_OPTIONS:
            raise ODataError(400, CRM_CODE, f"The query option {name} on metadata is not supported by the sandbox.")
    rows = [row for row in rows if mt.is_a(_row_type(row, type_name), type_name)]
    select = _select(type_name, dict(params).get("$select"))
    try:
        parsed = odata.parse_query(metadata_table(type_name), [p for p in params if p[0] != "$select"], prefer)
    except ODataError as exc:
        if _NOT_FOUND.match(exc.message):  # Dataverse's code on metadata (payload 28); 0x0 on data queries
            raise ODataError(exc.status, CRM_CODE, exc.message) from None
        raise
    keep = list(range(len(rows)))
    if parsed.filter is not None:
        table = metadata_table(type_name)
        dtypes = {c.name: (pl.Boolean if c.type == "Boolean" else pl.Int64 if c.type in ("Integer", "BigInt")
                           else pl.Utf8) for c in table.columns}
        flat = pl.DataFrame([{name: _scalar(row.get(name)) for name in dtypes} for row in rows], schema=dtypes)
        keep = flat.with_row_index("__i").filter(parsed.filter).get_column("__i").to_list()
    out = []
    for i in keep:
        row = rows[i]
        shown = {k: v for k, v in row.items() if k not in ("@odata.type",)}
        if select is not None:
            # Selected properties the sandbox has no value for are null, as an unset property is.
            shown = {"MetadataId": row["MetadataId"], **{name: row.get(name) for name in select}}
        if _row_type(row, type_name) != type_name:
            shown = {"@odata.type": row["@odata.type"], **shown}
        out.append(shown)
    context = addressed.context + (f"({','.join(select)})" if select else "")
    return out, context + ("/$entity" if addressed.single else "")


def _row_type(row: dict[str, Any], default: str) -> str:
    marker = row.get("@odata.type")
    return str(marker).removeprefix(f"#{CRM}") if marker else default


def _select(type_name: str, text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip() in ("", "*"):
        return None
    props, nav = mt.properties(type_name), mt.navigation(type_name)
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item in nav:
            raise ODataError(400, CRM_CODE, f"Selecting the navigation property '{item}' is not supported by the "
                             "sandbox: $expand it.")
        if item not in props:
            # [PD] webapi/query-metadata-web-api.md: a derived type's properties need a cast segment; realdata
            # payload 28 is Dataverse's answer to Format on the Attributes collection.
            raise ODataError(400, CRM_CODE, f"Could not find a property named '{item}' on type '{CRM}{type_name}'.")
        if item not in names:
            names.append(item)
    return tuple(names)


def _scalar(value: Any) -> Any:
    """Managed properties filter on their Value; list-valued properties are not filterable here."""
    if isinstance(value, dict):
        return value.get("Value")
    return None if isinstance(value, list) else value
