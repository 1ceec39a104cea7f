"""Web API JSON records -> one typed polars frame per page, built column by column, never row by row.

The types come from the table's AttributeMetadata (`column_specs`) and are fixed by `arrow_schema`: every page
of a table has the same columns in the same order (each selected column, then its `__label` and `__type`
annotation columns, then `_version` from the etag), so pages concatenate without guessing. Numbers arrive as
`Decimal` (json.loads(parse_float=Decimal)) and money stays exact in decimal(38,4); a value that cannot be
stored exactly (a string in an int column, 5 decimals in money, 30 February) does not fail the page: its whole
record goes to the quarantine list with a reason, and `quarantine_frame` lands those apart. Each column is
built by pyarrow/polars in one call; only a column that holds a bad value is re-examined value by value to
name it. A DateTime value is read by its shape, not only by its metadata: a bare `YYYY-MM-DD` in a column the
metadata calls a timestamp lands as that day's UTC midnight, and a full timestamp in a DateOnly column lands as
its UTC day, each with a `ShapeNote` for the quality report, so a stale metadata cache or a behaviour changed in
the org never quarantines a valid value. `$deletedEntity` records are not rows: `split_deletions` takes them out
first, and `to_frame` quarantines any that slip through, so a malformed deletion can never become an all-null row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import polars as pl
import pyarrow as pa

from ground.errors import ConfigError

FORMATTED = "@OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL = "@Microsoft.Dynamics.CRM.lookuplogicalname"
ETAG = "@odata.etag"
CONTEXT = "@odata.context"
LABEL = "__label"
TYPE = "__type"
VERSION = "_version"

LOOKUP_TYPES = frozenset({"Lookup", "Owner", "Customer"})
CHOICE_TYPES = frozenset({"Picklist", "State", "Status"})
_KINDS = {
    **dict.fromkeys(("Uniqueidentifier", "Lookup", "Owner", "Customer", "String", "Memo", "EntityName"), "string"),
    **dict.fromkeys(("Integer", "Picklist", "State", "Status"), "int32"),
    "BigInt": "int64", "Money": "money", "Decimal": "decimal", "Double": "float64", "Boolean": "bool",
    "DateTime": "timestamp",
}
_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "money": pa.decimal128(38, 4),
    "decimal": pa.decimal128(38, 10), "float64": pa.float64(), "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32(),
}
# Python types json.loads(parse_float=Decimal) may give for a valid value of each kind (bool is not int here:
# the check compares exact types). Floats are accepted where a number is expected, from callers that parsed
# without parse_float; money converts them through repr, which is the shortest text that round-trips.
_ACCEPT: dict[str, tuple[type, ...]] = {
    "string": (str,), "int32": (int,), "int64": (int,), "bool": (bool,), "money": (int, Decimal, float),
    "decimal": (int, Decimal, float), "float64": (int, Decimal, float), "timestamp": (str,), "date": (str,),
}
_INT_RANGE = {"int32": 2**31, "int64": 2**63}
_SCALE = {"money": 4, "decimal": 10}
_WIDE = Context(prec=80)  # wide enough that quantize never rounds a value decimal(38, s) could hold
# Dataverse writes `2023-04-07T21:59:01Z`; an offset other than Z is converted, a time without one is refused
# (times are UTC and we never guess a zone); digits beyond microseconds are truncated.
_TIMESTAMP_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_ETAG_RE = r'^W/"(\d+)"$'


@dataclass(frozen=True)
class ShapeNote:
    """A DateTime value whose shape disagrees with its column's metadata, landed in the metadata's type."""

    index: int  # the record's position in the page
    column: str
    value: str  # as served
    landed_as: str  # "date" (a full timestamp in a DateOnly column) or "timestamp" (a bare date elsewhere)

    @property
    def message(self) -> str:
        if self.landed_as == "date":
            return (f"{self.column} = {self.value!r} is a full timestamp, but the column's metadata says "
                    "DateOnly: landed as its UTC day")
        return (f"{self.column} = {self.value!r} is a bare date, but the column's metadata says it has a time: "
                "landed as that day's UTC midnight")


@dataclass(frozen=True)
class ColumnSpec:
    api_name: str  # the property in Web API JSON and `$select`: `_ownerid_value` for lookups
    logical_name: str
    attribute_type: str  # AttributeType from EntityDefinitions(...)/Attributes
    date_only: bool = False  # DateTime with Format DateOnly
    behavior: str | None = None  # DateTimeBehavior.Value: UserLocal, DateOnly, TimeZoneIndependent
    lookup: bool = False

    @property
    def kind(self) -> str:
        if self.attribute_type == "DateTime" and self.date_only and self.behavior == "DateOnly":
            return "date"  # served as "YYYY-MM-DD"; a UserLocal date-only column is a full UTC timestamp
        return _KINDS[self.attribute_type]

    @property
    def labelled(self) -> bool:
        return self.lookup or self.attribute_type in CHOICE_TYPES or self.attribute_type == "Boolean"


def column_specs(attribute_rows: Iterable[Mapping[str, Any]], selected_api_names: Sequence[str], *,
                 table: str | None = None) -> list[ColumnSpec]:
    """Specs for the selected columns, in the order given (duplicates dropped).

    A lookup may be named by its API name (`_ownerid_value`) or its logical name (`ownerid`); both give the
    spec whose `api_name` is what `$select` and the JSON use.
    """
    specs: dict[str, ColumnSpec] = {}
    for row in attribute_rows:
        logical, attribute_type = str(row["LogicalName"]), str(row["AttributeType"])
        lookup = attribute_type in LOOKUP_TYPES
        behavior = row.get("DateTimeBehavior")
        if isinstance(behavior, Mapping):
            behavior = behavior.get("Value")
        spec = ColumnSpec(api_name=f"_{logical}_value" if lookup else logical, logical_name=logical,
                          attribute_type=attribute_type, date_only=row.get("Format") == "DateOnly",
                          behavior=str(behavior) if behavior is not None else None, lookup=lookup)
        specs[spec.api_name] = spec
        specs.setdefault(logical, spec)
    chosen: dict[str, ColumnSpec] = {}
    for name in selected_api_names:
        found = specs.get(name)
        if found is None:
            raise ConfigError(f"column {name!r} is not in the table's metadata", table=table,
                              hint="check the spelling in config/tables.toml against the maker portal")
        if found.attribute_type not in _KINDS:
            raise ConfigError(f"column {name!r} has AttributeType {found.attribute_type}, which l2c cannot land",
                              table=table, hint="remove it from config/tables.toml")
        chosen.setdefault(found.api_name, found)
    return list(chosen.values())


def column_names(specs: Sequence[ColumnSpec]) -> list[str]:
    """The fixed column order of a page: each column, its label, its lookup type; then `_version`."""
    names: list[str] = []
    for spec in specs:
        names.append(spec.api_name)
        if spec.labelled:
            names.append(spec.api_name + LABEL)
        if spec.lookup:
            names.append(spec.api_name + TYPE)
    return [*names, VERSION]


def arrow_schema(specs: Sequence[ColumnSpec]) -> pa.Schema:
    fields = []
    for spec in specs:
        fields.append(pa.field(spec.api_name, _ARROW[spec.kind]))
        if spec.labelled:
            fields.append(pa.field(spec.api_name + LABEL, pa.string()))
        if spec.lookup:
            fields.append(pa.field(spec.api_name + TYPE, pa.string()))
    return pa.schema([*fields, pa.field(VERSION, pa.int64())])


def polars_schema(specs: Sequence[ColumnSpec]) -> pl.Schema:
    frame = pl.from_arrow(arrow_schema(specs).empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.schema


def split_deletions(records: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[str]]:
    """(rows, ids of `$deletedEntity` records). A deletion without a string id stays among the rows, where
    `to_frame` quarantines it."""
    rows: list[Mapping[str, Any]] = []
    deleted: list[str] = []
    for record in records:
        if _is_deletion(record) and isinstance(record.get("id"), str):
            deleted.append(record["id"])
        else:
            rows.append(record)
    return rows, deleted


def deletions_frame(ids: Sequence[str], pk: str) -> pl.DataFrame:
    """A deletions page: the primary key column (named like the rows' one) and a null `_version`."""
    return pl.DataFrame({pk: pl.Series(ids, dtype=pl.String), VERSION: pl.Series([None] * len(ids), dtype=pl.Int64)})


def quarantine_frame(quarantined: Sequence[tuple[Mapping[str, Any], str]]) -> pl.DataFrame:
    """A quarantine page: the record as JSON text (Decimals written as strings, exact) and the reason.

    The text is ASCII with \\u escapes, so even a lone surrogate (the reason a record may be here) survives."""
    texts = [json.dumps(record, default=str) for record, _ in quarantined]
    return pl.DataFrame({"record": pl.Series(texts, dtype=pl.String),
                         "reason": pl.Series([reason for _, reason in quarantined], dtype=pl.String)})


NOTES_SCHEMA = {"object_id": pl.String, "column": pl.String, "value": pl.String, "note": pl.String}


def notes_frame(records: Sequence[Mapping[str, Any]], notes: Sequence[ShapeNote], key: str) -> pl.DataFrame:
    """A notes page: per note the record's `key` value, the column, the value as served and what was done."""
    ids = [records[n.index].get(key) for n in notes]
    return pl.DataFrame({"object_id": [i if isinstance(i, str) else None for i in ids],
                         "column": [n.column for n in notes], "value": [n.value for n in notes],
                         "note": [n.message for n in notes]}, schema=NOTES_SCHEMA)


def to_frame(records: Sequence[Mapping[str, Any]], specs: Sequence[ColumnSpec],
             notes: list[ShapeNote] | None = None) -> tuple[pl.DataFrame, list[tuple[Mapping[str, Any], str]]]:
    """(frame of the good records with exactly `arrow_schema(specs)`, [(bad record, reason)]). A DateTime value
    of a kept record that came in the other shape than its metadata says is appended to `notes`."""
    bad: dict[int, list[str]] = {}
    for i, record in enumerate(records):
        if _is_deletion(record):
            bad[i] = ["a $deletedEntity record (deletions need a string id and are split out by split_deletions)"]
    shapes: list[ShapeNote] = []
    columns: list[pl.Series] = []
    for spec in specs:
        columns.append(_convert(spec.api_name, [r.get(spec.api_name) for r in records], spec.kind, bad, shapes))
        if spec.labelled:
            name = spec.api_name + FORMATTED
            columns.append(_convert(spec.api_name + LABEL, [r.get(name) for r in records], "string", bad))
        if spec.lookup:
            name = spec.api_name + LOOKUP_LOGICAL
            columns.append(_convert(spec.api_name + TYPE, [r.get(name) for r in records], "string", bad))
    columns.append(_versions([r.get(ETAG) for r in records], bad))
    frame = pl.DataFrame(columns)
    if notes is not None:  # a quarantined record keeps its value as served: nothing was converted
        notes.extend(note for note in shapes if note.index not in bad)
    if not bad:
        return frame, []
    keep = pl.Series([True] * len(records))
    keep = keep.scatter(sorted(bad), False)
    return frame.filter(keep), [(records[i], "; ".join(bad[i])) for i in sorted(bad)]


def _is_deletion(record: Mapping[str, Any]) -> bool:
    context = record.get(CONTEXT)
    return isinstance(context, str) and context.endswith("/$deletedEntity")


def _convert(name: str, values: list[Any], kind: str, bad: dict[int, list[str]],
             notes: list[ShapeNote] | None = None) -> pl.Series:
    """One column of `kind`; values that do not convert exactly are nulled and their rows marked in `bad`."""
    present = set(map(type, values)) - {type(None)}
    if present <= set(_ACCEPT[kind]) and not (float in present and kind in ("money", "decimal")):
        try:
            return _build(name, values, kind, bad, notes)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
            pass  # some value does not fit: find it below
    clean: list[Any] = []
    for i, value in enumerate(values):  # only for a column known to hold a bad value
        problem = _check(value, kind)
        if problem:
            bad.setdefault(i, []).append(f"{name}: {problem} {_show(value)}")
            clean.append(None)
        else:
            clean.append(Decimal(repr(value)) if isinstance(value, float) and kind in ("money", "decimal")
                         else value)
    return _build(name, clean, kind, bad, notes)


def _check(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if type(value) not in _ACCEPT[kind]:
        return f"expected {kind}, got {type(value).__name__}"
    if isinstance(value, str) and not _encodable(value):
        return "not valid Unicode (a lone surrogate from a \\uD8xx escape):"
    if kind in _INT_RANGE and not -_INT_RANGE[kind] <= value < _INT_RANGE[kind]:
        return f"out of range for {kind}:"
    if kind in ("money", "decimal"):
        scale = _SCALE[kind]
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            exact = number.quantize(Decimal(1).scaleb(-scale), context=_WIDE)
        except InvalidOperation:
            return f"not a finite {kind} number:"
        if exact != number:
            return f"more than {scale} decimals for {kind}:"
        if len(exact.as_tuple().digits) > 38:
            return f"too large for {kind}:"
    return ""


def _build(name: str, values: list[Any], kind: str, bad: dict[int, list[str]],
           notes: list[ShapeNote] | None = None) -> pl.Series:
    if kind in ("timestamp", "date"):
        return _datetimes(name, values, kind, bad, notes)
    if kind == "float64":
        # The values are int/float/Decimal here, so str() is "None" only for a null; Decimal -> text -> float
        # is the correctly rounded double.
        text = pl.Series(name, list(map(str, values)), dtype=pl.String)
        number = text.cast(pl.Float64, strict=False)
        failed = (text != "None") & ~number.is_finite().fill_null(False)
        return _mark(name, number, failed, values, "not a finite float64", bad)
    series = pl.from_arrow(pa.array(values, type=_ARROW[kind]))
    assert isinstance(series, pl.Series)
    return series.alias(name)


def _datetimes(name: str, values: list[Any], kind: str, bad: dict[int, list[str]],
               notes: list[ShapeNote] | None) -> pl.Series:
    """A DateTime column in its metadata's type (`date` for DateOnly behaviour, else `timestamp`), each value
    read by its shape: Dataverse writes DateOnly-behaviour values as "YYYY-MM-DD" and every other as a UTC
    timestamp ([PD] behavior-format-date-time-attribute.md), but metadata can be a day old or wrong, and the
    value is the evidence. The other shape converts exactly (a day <-> its UTC midnight) and is noted."""
    text = pl.Series(name, values, dtype=pl.String)
    v = pl.col(name)
    day = pl.when(v.str.contains(_DATE_RE)).then(v.str.to_date("%Y-%m-%d", strict=False))
    moment = pl.when(v.str.contains(_TIMESTAMP_RE)).then(
        v.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False))
    if kind == "date":
        own, other = day, moment.dt.date()
    else:
        own, other = moment, day.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    read = text.to_frame().select(own.alias("own"), other.alias("other"))
    shifted = read.get_column("own").is_null() & read.get_column("other").is_not_null()
    if notes is not None:
        notes.extend(ShapeNote(i, name, str(values[i]), kind) for i in shifted.arg_true().to_list())
    parsed = read.select(pl.coalesce("own", "other")).to_series().alias(name)
    failed = text.is_not_null() & parsed.is_null()
    return _mark(name, parsed, failed, values, f"not a valid {kind}", bad)


def _mark(name: str, parsed: pl.Series, failed: pl.Series, values: list[Any], problem: str,
          bad: dict[int, list[str]]) -> pl.Series:
    indices = failed.arg_true().to_list()
    for i in indices:
        bad.setdefault(i, []).append(f"{name}: {problem} {_show(values[i])}")
    if indices:
        parsed = parsed.scatter(indices, None)
    return parsed.alias(name)


def _versions(etags: list[Any], bad: dict[int, list[str]]) -> pl.Series:
    try:
        if not set(map(type, etags)) <= {str, type(None)}:
            raise TypeError
        text = pl.Series(VERSION, etags, dtype=pl.String)
    except (TypeError, UnicodeEncodeError):  # only a page with a bad etag gets here
        etags = [_flag_etag(i, e, bad) for i, e in enumerate(etags)]
        text = pl.Series(VERSION, etags, dtype=pl.String)
    version = text.str.extract(_ETAG_RE, 1).cast(pl.Int64, strict=False)
    return _mark(VERSION, version, text.is_not_null() & version.is_null(), etags, "not a W/\"<n>\" etag:", bad)


def _flag_etag(i: int, etag: Any, bad: dict[int, list[str]]) -> str | None:
    if etag is None or (isinstance(etag, str) and _encodable(etag)):
        return etag
    bad.setdefault(i, []).append(f"{VERSION}: not a W/\"<n>\" etag: {_show(etag)}")
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
