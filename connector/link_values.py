"""Export values -> the raw lake's types (connector/rows.py kinds), column by column, vectorised.

A CSV field is text in the Link's formats (docs/LINK.md §1.5, D5): SinkCreatedOn/SinkModifiedOn
`M/d/yyyy h:mm:ss tt` (UTC), createdon `yyyy-MM-ddTHH:mm:ss.fffffff+00:00`, other times `yyyy-MM-ddTHH:mm:ssZ`;
the reader accepts all of these plus ISO with or without fraction and offset, and a bare date; every time is
UTC. Booleans `True|False|true|false|1|0`; decimals with `.`; choices as integers. A Delta column arrives typed
and is cast (a naive timestamp is UTC, §6 OUR CHOICE). Money stays exact: a value with more decimals than the
lake keeps is an error, never rounded. A value that does not convert is SourceUnavailable naming where, the row
(from 1), the column and the value.
"""

from __future__ import annotations

import polars as pl

from ground.errors import SourceUnavailable

UTC = pl.Datetime("us", "UTC")
DTYPES: dict[str, pl.DataType] = {
    "string": pl.Utf8(), "int32": pl.Int32(), "int64": pl.Int64(), "money": pl.Decimal(38, 4),
    "decimal": pl.Decimal(38, 10), "float64": pl.Float64(), "bool": pl.Boolean(), "timestamp": UTC, "date": pl.Date(),
}
_SCALE = {"money": 4, "decimal": 10}
_TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%dT%H:%M:%S%.fZ",
                 "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f")
_TRUE, _FALSE = ["True", "true", "1", "TRUE"], ["False", "false", "0", "FALSE"]


def _time_from_text(col: pl.Expr) -> pl.Expr:
    text = col.str.strip_chars()
    parsed = [text.str.strptime(UTC, fmt, strict=False, exact=True) for fmt in _TIME_FORMATS]
    day = text.str.strptime(pl.Date, "%Y-%m-%d", strict=False, exact=True).cast(pl.Datetime("us")).dt.replace_time_zone(
        "UTC")
    return pl.coalesce([*parsed, day])


def _from_text(col: pl.Expr, kind: str) -> pl.Expr:
    if kind == "string":
        return col
    if kind == "bool":
        return pl.when(col.is_in(_TRUE)).then(True).when(col.is_in(_FALSE)).then(False).otherwise(None)
    if kind == "timestamp":
        return _time_from_text(col)
    if kind == "date":
        return _time_from_text(col).dt.date()
    if kind in _SCALE:
        exact = col.str.contains(rf"^\s*[-+]?\d+(\.\d{{0,{_SCALE[kind]}}})?\s*$")
        return pl.when(exact).then(col.str.strip_chars().cast(DTYPES[kind], strict=False)).otherwise(None)
    return col.str.strip_chars().cast(DTYPES[kind], strict=False)


def _from_native(col: pl.Expr, dtype: pl.DataType, kind: str) -> pl.Expr:
    if kind in ("timestamp", "date") and isinstance(dtype, pl.Datetime):
        utc = col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
        return utc.dt.date() if kind == "date" else utc.cast(UTC)
    if kind == "timestamp" and dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if kind in _SCALE and isinstance(dtype, pl.Decimal | pl.Float64 | pl.Float32):
        exact = col.cast(DTYPES[kind], strict=False)
        return pl.when(exact.cast(pl.Float64) == col.cast(pl.Float64)).then(exact).otherwise(None)
    return col.cast(DTYPES[kind], strict=False)


def coerce(frame: pl.DataFrame, kinds: dict[str, str], where: str, first_row: int = 0) -> pl.DataFrame:
    """`frame` with each column of `kinds` in its lake type (other columns untouched); `first_row` = rows of the
    file before this frame."""
    exprs = []
    for name, kind in kinds.items():
        dtype = frame.schema[name]
        col = pl.col(name)
        exprs.append((_from_text(col, kind) if dtype == pl.Utf8 else _from_native(col, dtype, kind))
                     .cast(DTYPES[kind]).alias(name))
    typed = frame.with_columns(exprs)
    for name in kinds:
        before = frame.get_column(name)
        empty = before.is_null() | ((before == "") if before.dtype == pl.Utf8 else pl.repeat(False, len(before),
                                                                                             eager=True))
        failed = typed.get_column(name).is_null() & ~empty
        if failed.any():
            index = int(failed.arg_true()[0])
            raise SourceUnavailable(
                f"{where}: row {first_row + index + 1}, column {name}: {str(before[index])[:60]!r} is not a valid "
                f"{kinds[name]} value", hint="the export is damaged or not in the Link's formats (docs/LINK.md D5); "
                "nothing of this table was landed from it")
    # An empty string is null for every non-text column (D3: null is the empty field).
    return typed
