"""Hand-written Azure Synapse Link / Link to Fabric exports for the reader's tests, strictly per docs/LINK.md.

`LinkExport` writes, for the tables of config/tables.toml typed by the sandbox's schema (sandbox/schema.py, the
ground truth of each column's Dataverse type): model.json (§1.2, D4 column order: Id, SinkCreatedOn,
SinkModifiedOn, the Dataverse columns with `owneridtype`/`customeridtype` after their lookups, IsDelete),
headerless CSV partitions `<table>/<yyyy>.csv` in the D3/D5 dialect (strings and datetimes quoted, SinkModifiedOn
`M/d/yyyy h:mm:ss tt`, createdon with 7 fraction digits and +00:00), the five OptionsetMetadata CSVs (§4 column
orders), incremental folders (§3, D7) and Delta tables (`deltalake/<table>_partitioned`, D2) with `deltalake`.
Rows are dicts of logical names plus `Id`, `SinkModifiedOn`, `IsDelete`, `versionnumber`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from config.tables import load_tables
from sandbox.schema import STATUS_STATE, TABLES

TYPED = ("Owner", "Customer")


def _kind(table: str, column: str) -> str:
    found = TABLES[table].by_name[column]
    if found.type in ("Uniqueidentifier", "Lookup", "Owner", "Customer"):
        return "guid"
    if found.type in ("Integer", "Picklist", "State", "Status", "BigInt"):
        return "int"
    if found.type in ("Money", "Decimal"):
        return "decimal"
    if found.type == "Boolean":
        return "bool"
    if found.type == "DateTime":
        if column == "createdon":
            return "createdon"
        return "date" if found.date_only and found.behavior == "DateOnly" else "datetime"
    return "string"


_CDM = {"guid": "guid", "string": "string", "int": "int64", "decimal": "decimal", "bool": "boolean",
        "datetime": "dateTime", "date": "dateTime", "createdon": "dateTimeOffset", "sink": "dateTime"}


@lru_cache
def columns(table: str) -> list[tuple[str, str]]:
    """D4: (name, kind) in file order."""
    declared = next(t for t in load_tables(None).table if t.name == table).columns
    out = [("Id", "guid"), ("SinkCreatedOn", "sink"), ("SinkModifiedOn", "sink")]
    for name in declared:
        out.append((name, _kind(table, name)))
        if TABLES[table].by_name[name].type in TYPED:
            out.append((f"{name}type", "string"))
    if "versionnumber" not in declared:
        out.append(("versionnumber", "int"))
    return [*out, ("IsDelete", "bool")]


def field(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "string":
        return '"' + str(value).replace('"', '""') + '"'
    if kind == "sink":
        hour = value.hour % 12 or 12
        return f'"{value.month}/{value.day}/{value.year} {hour}:{value:%M:%S} {"PM" if value.hour >= 12 else "AM"}"'
    if kind == "createdon":
        return f'"{value:%Y-%m-%dT%H:%M:%S}.0000000+00:00"'
    if kind == "datetime":
        return f'"{value:%Y-%m-%dT%H:%M:%SZ}"'
    if kind == "date":
        return f'"{value:%Y-%m-%d}T00:00:00Z"'
    if kind == "bool":
        return "True" if value else "False"
    return str(value)


def line(table: str, row: dict[str, Any]) -> str:
    return ",".join(field(row.get(name), kind) for name, kind in columns(table)) + "\n"


def complete(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row with the Link's system columns filled in (SinkCreatedOn = SinkModifiedOn, pk = Id)."""
    out = dict(row)
    out.setdefault(f"{table}id", out["Id"])
    out.setdefault("SinkCreatedOn", out["SinkModifiedOn"])
    out.setdefault("IsDelete", False)
    for name, _ in columns(table):
        if TABLES[table].by_name.get(name) is not None and TABLES[table].by_name[name].type in TYPED:
            if out.get(name) is not None:
                out.setdefault(f"{name}type", TABLES[table].by_name[name].targets[0])
    return out


class LinkExport:
    def __init__(self, root: Path, tables: tuple[str, ...] | None = None) -> None:
        self.root = root
        self.tables = tables or tuple(t.name for t in load_tables(None).table)
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, list[str]] = {t: [] for t in self.tables}

    def entity(self, table: str, partitions: list[str]) -> dict[str, Any]:
        return {"$type": "LocalEntity", "name": table, "description": table,
                "annotations": [{"name": "Athena:PartitionGranularity", "value": "Year"},
                                {"name": "Athena:InitialSyncState", "value": "Completed"}],
                "attributes": [{"name": n, "dataType": _CDM[k], "maxLength": -1} for n, k in columns(table)],
                "partitions": [{"name": Path(p).stem,
                                "location": f"https://acct.dfs.core.windows.net/dataverse-env-org/{p}"}
                               for p in partitions]}

    def write_model(self, folder: str = "", partitions: bool = True) -> None:
        entities = [self.entity(t, self.files[t] if partitions else []) for t in self.tables]
        path = self.root / folder / "model.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": "cdm", "description": "cdm", "version": "1.0", "entities": entities}))

    def append(self, table: str, rows: list[dict[str, Any]], folder: str = "") -> None:
        """Append-only: each row appended to the partition of its createdon year (1900 when null)."""
        for row in rows:
            row = complete(table, row)
            year = row["createdon"].year if row.get("createdon") else 1900
            relative = f"{table}/{year}.csv"
            path = self.root / folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8", newline="") as handle:
                handle.write(line(table, row))
            if not folder and relative not in self.files[table]:
                self.files[table].append(relative)

    def rewrite(self, table: str, rows: list[dict[str, Any]]) -> None:
        """In place: the table's files hold exactly `rows` (the current row per record)."""
        for relative in self.files[table]:
            (self.root / relative).unlink()
        self.files[table] = []
        self.append(table, rows)

    def write_metadata(self, folder: str = "") -> None:
        """The five OptionsetMetadata CSVs (§4 column orders), labels in language 1033."""
        local, state, status, target = [], [], [], []
        for name in self.tables:
            for column in TABLES[name].columns:
                for value, label in (column.options or {}).items():
                    if column.type == "Picklist":
                        local.append([name, column.name, value, False, 1033, label])
                    elif column.type == "State":
                        state.append([name, value, False, 1033, label])
                    elif column.type == "Status":
                        status.append([name, STATUS_STATE[name][value], value, False, 1033, label])
                for referenced in column.targets if column.is_lookup else ():
                    target.append([name, column.name, referenced, f"{referenced}id"])
        kinds = {"OptionsetMetadata": ["string", "string", "int", "bool", "int", "string"],
                 "GlobalOptionsetMetadata": ["string", "int", "bool", "int", "string", "string", "string"],
                 "StateMetadata": ["string", "int", "bool", "int", "string"],
                 "StatusMetadata": ["string", "int", "int", "bool", "int", "string"],
                 "TargetMetadata": ["string", "string", "string", "string"]}
        data = {"OptionsetMetadata": local, "GlobalOptionsetMetadata": [], "StateMetadata": state,
                "StatusMetadata": status, "TargetMetadata": target}
        trickle = self.root / "Microsoft.Athena.TrickleFeedService"  # §4: the attribute types (CODE C-COOP)
        trickle.mkdir(parents=True, exist_ok=True)
        for name in self.tables:
            attributes = [{"EntityName": name, "AttributeName": c.name, "AttributeType": c.type}
                          for c in TABLES[name].columns]
            (trickle / f"{name}-EntityMetadata.json").write_text(json.dumps({"AttributeMetadata": attributes}))
        base = self.root / folder / "OptionsetMetadata"
        base.mkdir(parents=True, exist_ok=True)
        for name, rows in data.items():
            text = "".join(",".join(field(v, k) for v, k in zip(row, kinds[name], strict=True)) + "\n" for row in rows)
            (base / f"{name}.csv").write_text(text, encoding="utf-8")

    def write_delta(self, table: str, rows: list[dict[str, Any]], mode: str = "overwrite") -> None:
        """deltalake/<table>_partitioned: the latest row per Id (D6), native types (§6 OUR CHOICE)."""
        from deltalake import write_deltalake

        frame = delta_frame(table, [complete(table, r) for r in rows])
        write_deltalake(str(self.root / "deltalake" / f"{table}_partitioned"), frame.to_arrow(), mode=mode,
                        partition_by=["PartitionId"])

    def write_delta_metadata(self) -> None:
        from deltalake import write_deltalake

        self.write_metadata("_meta_tmp")
        names = {"OptionsetMetadata": ["EntityName", "OptionSetName", "Option", "IsUserLocalizedLabel",
                                       "LocalizedLabelLanguageCode", "LocalizedLabel"],
                 "StateMetadata": ["EntityName", "State", "IsUserLocalizedLabel", "LocalizedLabelLanguageCode",
                                   "LocalizedLabel"],
                 "StatusMetadata": ["EntityName", "State", "Status", "IsUserLocalizedLabel",
                                    "LocalizedLabelLanguageCode", "LocalizedLabel"],
                 "TargetMetadata": ["EntityName", "AttributeName", "ReferencedEntity", "ReferencedAttribute"]}
        for name, cols in names.items():
            path = self.root / "_meta_tmp" / "OptionsetMetadata" / f"{name}.csv"
            frame = pl.read_csv(path, has_header=False, new_columns=cols, infer_schema=False)
            write_deltalake(str(self.root / "deltalake" / f"{name}_partitioned"), frame.to_arrow(), mode="overwrite")
        import shutil

        shutil.rmtree(self.root / "_meta_tmp")


_POLARS = {"guid": pl.Utf8, "string": pl.Utf8, "int": pl.Int64, "decimal": pl.Decimal(38, 2), "bool": pl.Boolean,
           "datetime": pl.Datetime("us", "UTC"), "date": pl.Datetime("us", "UTC"),
           "createdon": pl.Datetime("us", "UTC"), "sink": pl.Datetime("us", "UTC")}


def delta_frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    cols = columns(table)
    data: dict[str, list[Any]] = {name: [] for name, _ in cols}
    for row in rows:
        for name, kind in cols:
            value = row.get(name)
            if kind == "date" and value is not None:
                value = datetime(value.year, value.month, value.day, tzinfo=UTC)
            if kind == "decimal" and value is not None:
                value = Decimal(value)
            data[name].append(value)
    frame = pl.DataFrame({name: pl.Series(name, data[name], dtype=_POLARS[kind]) for name, kind in cols})
    year = pl.col("createdon").dt.year().cast(pl.Utf8).fill_null("1900") if "createdon" in frame.columns \
        else pl.lit("1900")
    return frame.with_columns(year.alias("PartitionId"))


def sink(moment: datetime) -> datetime:
    """SinkModifiedOn has whole seconds (its format has no fraction)."""
    return moment.replace(microsecond=0)


T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
USER, USER2 = "0a000000-0000-0000-0000-000000000001", "0a000000-0000-0000-0000-000000000002"
CURRENCY, ACCOUNT = "0c000000-0000-0000-0000-000000000001", "0d000000-0000-0000-0000-000000000001"
LEAD1, LEAD2, LEAD3 = ("1e000000-0000-0000-0000-000000000001", "1e000000-0000-0000-0000-000000000002",
                       "1e000000-0000-0000-0000-000000000003")
OPP1, OPP2 = "0f000000-0000-0000-0000-000000000001", "0f000000-0000-0000-0000-000000000002"


def _at(hours: float) -> datetime:
    from datetime import timedelta

    return T0 + timedelta(hours=hours)


def tiny_org() -> dict[str, list[dict[str, Any]]]:
    """Every captured version of a tiny org, in the order the Link appends them: two users, a currency, an
    account, three leads (one qualified into an opportunity, one disqualified, one deleted) and two opportunities
    (one won through the stages, one lost). Each row is complete (an append-only row carries every column)."""
    base = {"transactioncurrencyid": CURRENCY, "ownerid": USER, "createdby": USER, "modifiedby": USER}
    lead1 = {"Id": LEAD1, "subject": "Needs 40 bikes", "fullname": "Ann Lee", "companyname": 'Bikes "R" Us',
             "leadsourcecode": 8, "statecode": 0, "statuscode": 1, "estimatedamount": "1200.50",
             "parentaccountid": ACCOUNT, "createdon": _at(0), **base}
    lead2 = {"Id": LEAD2, "subject": "Line one\nline two", "fullname": "Bo Chan", "companyname": "Chan & Co",
             "leadsourcecode": 1, "statecode": 0, "statuscode": 1, "estimatedamount": "99.99",
             "createdon": _at(1), **base}
    lead3 = {"Id": LEAD3, "subject": "Spam", "fullname": "Cy", "leadsourcecode": 10, "statecode": 0,
             "statuscode": 1, "createdon": _at(2), **base}
    opp = {"originatingleadid": LEAD1, "customerid": ACCOUNT, "parentaccountid": ACCOUNT, "statecode": 0,
           "statuscode": 1, "salesstage": 0, "estimatedvalue": "5000.25", "discountpercentage": "2.50",
           "estimatedclosedate": datetime(2025, 4, 30, tzinfo=UTC).date(), **base}
    opp1 = {"Id": OPP1, "name": "40 bikes", "createdon": _at(5), **opp}
    opp2 = {"Id": OPP2, "name": "Tandems", "createdon": _at(6), **opp, "originatingleadid": None}
    versions: dict[str, list[dict[str, Any]]] = {
        "systemuser": [{"Id": USER, "fullname": "Dana Diaz", "isdisabled": False, "modifiedon": _at(-9)},
                       {"Id": USER2, "fullname": "Eli Ford", "isdisabled": False, "modifiedon": _at(-9)}],
        "transactioncurrency": [{"Id": CURRENCY, "currencyname": "Euro", "isocurrencycode": "EUR",
                                 "currencysymbol": "€", "exchangerate": "1.0000000000", "modifiedon": _at(-9)}],
        "account": [{"Id": ACCOUNT, "name": "Bikes Inc", "territorycode": 2, "industrycode": 27, "statecode": 0,
                     "statuscode": 1, "ownerid": USER, "transactioncurrencyid": CURRENCY, "revenue": "1000000.00",
                     "createdon": _at(-8), "modifiedon": _at(-8)}],
        "lead": [lead1, lead2, lead3,
                 {**lead1, "statecode": 1, "statuscode": 3, "qualifyingopportunityid": OPP1, "modifiedby": USER2},
                 {**lead2, "statecode": 2, "statuscode": 6}],
        "opportunity": [opp1, opp2, {**opp1, "salesstage": 1}, {**opp1, "salesstage": 2, "modifiedby": USER2},
                        {**opp2, "statecode": 2, "statuscode": 4},
                        {**opp1, "salesstage": 3, "statecode": 1, "statuscode": 3, "actualvalue": "4900.00",
                         "actualclosedate": datetime(2025, 3, 9, tzinfo=UTC).date()}],
    }
    hours = {"lead": [0, 1, 2, 4.5, 7], "opportunity": [5, 6, 8, 9, 10, 11]}
    for table, rows in versions.items():
        for i, row in enumerate(rows):
            when = _at(hours[table][i]) if table in hours else row.get("modifiedon", _at(-9))
            row["modifiedon"] = when
            row["versionnumber"] = 1000 + 10 * i + (1 if table == "lead" else 0)
            row["SinkModifiedOn"] = sink(when)
    versions["lead"].append({"Id": LEAD3, "SinkModifiedOn": _at(12), "IsDelete": True})  # D6 delete row
    return {**versions, "quote": [], "salesorder": [], "invoice": []}
