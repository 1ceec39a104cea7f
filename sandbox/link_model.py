"""The Link's metadata files: model.json (CDM), the Microsoft.Athena.TrickleFeedService manifests and the five
OptionsetMetadata tables, built from sandbox/schema.py.

Shapes follow docs/LINK.md §1.2 (model.json entity with Athena annotations, attributes in D4 order, partitions
with an https://<account>.dfs.core.windows.net/<container>/... location, OUR CHOICE) and §4 (metadata tables and
their column orders; `*-EntityMetadata.json` top-level arrays).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from sandbox.link_csv import MONEY_SCALE, Kind, export_columns
from sandbox.orgdata import OrgData
from sandbox.schema import STATUS_STATE, TABLES, Table

STORAGE_ACCOUNT = "l2csandboxlake"
LANGUAGE = 1033  # LocalizedLabelLanguageCode of every label (docs/LINK.md §4: "e.g. 1033")
# Choices that are global option sets in Dataverse: Payment Terms is the global choice `paymentterms` shared by
# account, quote, salesorder and invoice (Microsoft's invoice table reference lists paymenttermscode with
# "Global Choice: paymentterms"); the others in the sandbox schema are local to their table.
GLOBAL_OPTIONSETS = {("invoice", "paymenttermscode"): "paymentterms"}
_DATA_TYPES: dict[Kind, str] = {"guid": "guid", "string": "string", "int": "int64", "decimal": "decimal",
                                "bool": "boolean", "datetime": "dateTime", "date": "dateTime",
                                "createdon": "dateTimeOffset", "sink": "dateTime"}
# AttributeTypeCode enumeration of the Dataverse SDK (Microsoft.Xrm.Sdk.Metadata.AttributeTypeCode).
_TYPE_CODES = {"Boolean": 0, "Customer": 1, "DateTime": 2, "Decimal": 3, "Integer": 5, "Lookup": 6, "Memo": 7,
               "Money": 8, "Owner": 9, "Picklist": 11, "State": 12, "Status": 13, "String": 14,
               "Uniqueidentifier": 15, "BigInt": 18, "EntityName": 20}
_STRING_LENGTH = {"Memo": 2000, "EntityName": 64}  # DBLength; other strings 100 (Dataverse's default MaxLength)


def container(org: OrgData) -> str:
    """`dataverse-<environmentName>-<organizationUniqueName>` (docs/LINK.md §1.1, DOCS LAKE)."""
    return f"dataverse-l2csandbox-unq{org.meta.organization_id.replace('-', '')[:24]}"


def partition_location(org: OrgData, path: str) -> str:
    return f"https://{STORAGE_ACCOUNT}.dfs.core.windows.net/{container(org)}/{path}"


def _attribute(table: Table, name: str, kind: Kind) -> dict[str, Any]:
    dtype = _DATA_TYPES[kind]
    attribute: dict[str, Any] = {"name": name, "dataType": dtype, "maxLength": -1}
    if dtype == "string":
        column = table.column(name)
        # no column: an Owner/Customer lookup's EntityName companion (`owneridtype`)
        length = _STRING_LENGTH.get(column.type if column else "EntityName", 100)
        attribute["maxLength"] = length
        attribute["cdm:traits"] = [{"traitReference": "is.constrained",
                                    "arguments": [{"name": "maximumLength", "value": length}]}]
    elif dtype == "decimal":
        attribute["cdm:traits"] = [{"traitReference": "is.dataFormat.numeric.shaped",
                                    "arguments": [{"name": "precision", "value": 38},
                                                  {"name": "scale", "value": MONEY_SCALE}]}]
    return attribute


def entity(org: OrgData, table: Table, partitions: list[tuple[str, str]], synced: str) -> dict[str, Any]:
    """A model.json LocalEntity: `partitions` are (name, path relative to the container root)."""
    return {
        "$type": "LocalEntity", "name": table.logical_name, "description": table.logical_name,
        "annotations": [{"name": "Athena:PartitionGranularity", "value": "Year"},
                        {"name": "Athena:InitialSyncState", "value": "Completed"},
                        {"name": "Athena:InitialSyncDataCompletedTime", "value": synced}],
        "attributes": [_attribute(table, name, kind) for name, kind in export_columns(table)],
        "partitions": [{"name": name, "location": partition_location(org, path)} for name, path in partitions],
    }


def model(entities: list[dict[str, Any]]) -> bytes:
    return json.dumps({"name": "cdm", "description": "cdm", "version": "1.0", "entities": entities},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- choice metadata (docs/LINK.md §4, D8) ---------------------------------------------------------------
def _labels(tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    local, glob, state, status, target = [], [], [], [], []
    for name in tables:
        table = TABLES[name]
        for c in table.columns:
            for value, label in (c.options or {}).items():
                if c.type == "Picklist" and (name, c.name) in GLOBAL_OPTIONSETS:
                    glob.append((c.name, value, False, LANGUAGE, label, GLOBAL_OPTIONSETS[(name, c.name)], name))
                elif c.type == "Picklist":
                    local.append((name, c.name, value, False, LANGUAGE, label))
                elif c.type == "State":
                    state.append((name, value, False, LANGUAGE, label))
                elif c.type == "Status":
                    status.append((name, STATUS_STATE[name][value], value, False, LANGUAGE, label))
            for referenced in c.targets if c.is_lookup else ():
                key = TABLES[referenced].primary_id if referenced in TABLES else f"{referenced}id"
                target.append((name, c.name, referenced, key))
    return {"OptionsetMetadata": local, "GlobalOptionsetMetadata": glob, "StateMetadata": state,
            "StatusMetadata": status, "TargetMetadata": target}


# Column names, file order (docs/LINK.md §4 table) and the kinds their CSV fields are written as.
META_COLUMNS: dict[str, list[tuple[str, Kind]]] = {
    "OptionsetMetadata": [("EntityName", "string"), ("OptionSetName", "string"), ("Option", "int"),
                          ("IsUserLocalizedLabel", "bool"), ("LocalizedLabelLanguageCode", "int"),
                          ("LocalizedLabel", "string")],
    "GlobalOptionsetMetadata": [("OptionSetName", "string"), ("Option", "int"), ("IsUserLocalizedLabel", "bool"),
                                ("LocalizedLabelLanguageCode", "int"), ("LocalizedLabel", "string"),
                                ("GlobalOptionSetName", "string"), ("EntityName", "string")],
    "StateMetadata": [("EntityName", "string"), ("State", "int"), ("IsUserLocalizedLabel", "bool"),
                      ("LocalizedLabelLanguageCode", "int"), ("LocalizedLabel", "string")],
    "StatusMetadata": [("EntityName", "string"), ("State", "int"), ("Status", "int"),
                       ("IsUserLocalizedLabel", "bool"), ("LocalizedLabelLanguageCode", "int"),
                       ("LocalizedLabel", "string")],
    "TargetMetadata": [("EntityName", "string"), ("AttributeName", "string"), ("ReferencedEntity", "string"),
                       ("ReferencedAttribute", "string")],
}
_META_DTYPES: dict[Kind, pl.DataType] = {"string": pl.Utf8(), "int": pl.Int64(), "bool": pl.Boolean()}


def metadata_frames(tables: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    """The five choice/lookup metadata tables, one typed frame each."""
    rows = _labels(tables)
    return {name: pl.DataFrame(rows[name], schema={c: _META_DTYPES[k] for c, k in columns}, orient="row")
            for name, columns in META_COLUMNS.items()}


def entity_metadata(table: Table, frames: dict[str, pl.DataFrame]) -> bytes:
    """`<table>-EntityMetadata.json`: the table's labels and attribute types (docs/LINK.md §4, CODE C-COOP)."""
    def mine(name: str) -> list[dict[str, Any]]:
        return frames[name].filter(pl.col("EntityName") == table.logical_name).to_dicts()

    attributes = [{"EntityName": table.logical_name, "AttributeName": c.name, "AttributeType": c.type,
                   "AttributeTypeCode": _TYPE_CODES[c.type], "Version": 1, "Timestamp": "1/1/2025 12:00:00 AM",
                   "MetadataId": None, "Precision": MONEY_SCALE if c.type in ("Money", "Decimal") else None,
                   "MaxLength": _STRING_LENGTH.get(c.type, 100) if c.type in ("String", "Memo") else None}
                  for c in table.columns]
    document = {"OptionSetMetadata": mine("OptionsetMetadata"), "GlobalOptionSetMetadata":
                mine("GlobalOptionsetMetadata"), "StateMetadata": mine("StateMetadata"),
                "StatusMetadata": mine("StatusMetadata"), "AttributeMetadata": attributes}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
