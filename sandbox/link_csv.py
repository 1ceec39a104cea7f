"""The Link's CSV dialect and value formats (docs/LINK.md §1.4-§1.5, D3-D5), rendered vectorised in polars.

Each value becomes its final field text in one expression per column: strings and datetimes always quoted with
`""` doubling (newlines stay inside the quotes), GUIDs, integers, decimals and booleans bare, null an empty bare
field; a line is the fields joined by commas, no header, `\n` line ends, UTF-8 without BOM, no trailing comma.
"""

from __future__ import annotations

import polars as pl

from sandbox.schema import Column, Table

# D5: SinkCreatedOn/SinkModifiedOn "M/d/yyyy h:mm:ss tt" (docs/LINK.md §1.5, FAQ: "6/28/2021 4:34:35 PM").
SINK_FORMAT = "%-m/%-d/%Y %-I:%M:%S %p"
# D5: createdon "2018-05-25T16:21:09.0000000+00:00" (FAQ); other datetimes "2021-06-25T16:21:12Z" (FAQ).
CREATEDON_FORMAT = "%Y-%m-%dT%H:%M:%S.0000000+00:00"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Money and decimal columns: the sandbox rounds them to 2 decimals; model.json carries precision/scale traits.
MONEY_SCALE = 2
# The polymorphic lookups whose EntityName companion the emulator writes (D4, OUR CHOICE in docs/LINK.md §5).
TYPED_LOOKUPS = ("Owner", "Customer")

Kind = str  # "guid" | "string" | "int" | "decimal" | "bool" | "datetime" | "createdon" | "date" | "sink"


def column_kind(column: Column) -> Kind:
    if column.type in ("Uniqueidentifier", "Lookup", "Owner", "Customer"):
        return "guid"
    if column.type in ("Integer", "Picklist", "State", "Status", "BigInt"):
        return "int"
    if column.type in ("Money", "Decimal"):
        return "decimal"
    if column.type == "Boolean":
        return "bool"
    if column.type == "DateTime":
        if column.name == "createdon":
            return "createdon"
        return "date" if column.date_only and column.behavior == "DateOnly" else "datetime"
    return "string"


def export_columns(table: Table) -> list[tuple[str, Kind]]:
    """D4 order: Id, SinkCreatedOn, SinkModifiedOn, the Dataverse columns by logical name (each Owner/Customer
    lookup followed by its `<name>type`), IsDelete."""
    out: list[tuple[str, Kind]] = [("Id", "guid"), ("SinkCreatedOn", "sink"), ("SinkModifiedOn", "sink")]
    for c in table.columns:
        out.append((c.name, column_kind(c)))
        if c.type in TYPED_LOOKUPS:
            out.append((f"{c.name}type", "string"))
    out.append(("IsDelete", "bool"))
    return out


def quoted(text: pl.Expr) -> pl.Expr:
    return pl.lit('"') + text.str.replace_all('"', '""', literal=True) + pl.lit('"')


def field(name: str, kind: Kind) -> pl.Expr:
    """The CSV field text of column `name` (typed as the export frame holds it); null -> empty."""
    col = pl.col(name)
    if kind == "string":
        text = quoted(col)
    elif kind == "sink":
        text = quoted(col.dt.strftime(SINK_FORMAT))
    elif kind == "createdon":
        text = quoted(col.dt.strftime(CREATEDON_FORMAT))
    elif kind == "datetime":
        text = quoted(col.dt.strftime(DATETIME_FORMAT))
    elif kind == "date":
        text = quoted(col.cast(pl.Datetime("us")).dt.strftime(DATETIME_FORMAT))  # D5 OUR CHOICE: 00:00:00Z
    elif kind == "bool":
        text = pl.when(col).then(pl.lit("True")).otherwise(pl.lit("False"))
    elif kind == "decimal":
        text = col.cast(pl.Decimal(38, MONEY_SCALE)).cast(pl.Utf8)
    else:
        text = col.cast(pl.Utf8)
    return pl.when(col.is_null()).then(pl.lit("")).otherwise(text)


def line(columns: list[tuple[str, Kind]]) -> pl.Expr:
    """A row's CSV line (without its line end)."""
    return pl.concat_str([field(n, k) for n, k in columns], separator=",").alias("line")


def render(frame: pl.DataFrame, columns: list[tuple[str, Kind]]) -> bytes:
    """The rows of `frame` as D3 CSV lines (each ending in `\n`), in the order given."""
    if frame.is_empty():
        return b""
    return (frame.select(line(columns)).get_column("line").str.join("\n").item() + "\n").encode("utf-8")
