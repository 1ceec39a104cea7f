"""The Link's headerless CSV (docs/LINK.md §1.4, D3), parsed by polars, and where a file's complete records end.

D3: no header, comma, `"` quoting with `""` escape, newlines inside quotes, UTF-8 (a BOM is stripped). Rows
shorter than model.json's columns are padded with null (rows written before a column was appended, §1.3), one
trailing empty field is ignored (a trailing comma, §1.4), and a row with more fields than model.json declares
is SourceUnavailable naming the file and the row. An empty unquoted field is null; `""` is the empty string.
A file being appended to may end in a half-written record: `complete_end` finds the end of the last complete
one (a newline outside quotes), so that tail is left for the next run.
"""

from __future__ import annotations

import io

import polars as pl

from ground.errors import SourceUnavailable

BOM = b"\xef\xbb\xbf"


def complete_end(data: bytes) -> int:
    """The length of the complete records at the start of `data`: up to the last newline outside quotes. A
    newline is outside quotes iff an even number of `"` precede it (a doubled `""` counts twice)."""
    end = len(data)
    while end > 0:
        newline = data.rfind(b"\n", 0, end)
        if newline < 0:
            return 0
        if data.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        end = newline
    return 0


def parse(data: bytes, names: list[str], path: str, first_row: int = 0) -> pl.DataFrame:
    """The records of `data` (complete ones only) as text columns named `names`; `first_row` = records before
    `data` in the file (to name a bad row by its number in the file, from 1)."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    if not data.strip():
        return pl.DataFrame(schema={name: pl.Utf8 for name in names})
    width = len(names)
    # A first line of width + 2 empty fields fixes the frame's width: shorter rows are padded with null, longer
    # ones cut after two extra fields, which tells them apart (`truncate_ragged_lines`).
    head = b"," * (width + 1) + b"\n"
    try:
        frame = pl.read_csv(io.BytesIO(head + data), has_header=False, infer_schema=False, quote_char='"',
                            truncate_ragged_lines=True, raise_if_empty=False, glob=False)
    except pl.exceptions.PolarsError as exc:
        raise SourceUnavailable(f"{path}: not readable as the Link's CSV ({str(exc).splitlines()[0]})",
                                hint="check that the export is complete (docs/LINK.md D3)") from None
    frame = frame.slice(1)
    extra = frame.columns[width:]
    # One trailing empty field is a trailing comma (null in column `width`); any further field is a longer row.
    too_long = pl.col(extra[1]).is_not_null() | (pl.col(extra[0]).is_not_null() & (pl.col(extra[0]) != ""))
    bad = frame.with_row_index("_n").filter(too_long)
    if bad.height:
        row = first_row + int(bad.item(0, "_n")) + 1
        raise SourceUnavailable(f"{path}: row {row} has more fields than the {width} columns model.json "
                                "declares", hint="check that model.json matches the files (docs/LINK.md D3)")
    frame = frame.select(frame.columns[:width])
    frame.columns = names
    return frame.filter(~pl.all_horizontal(pl.all().is_null()))  # a blank line is no record


def read_metadata(data: bytes, columns: list[str], path: str) -> pl.DataFrame:
    """An OptionsetMetadata CSV (headerless, §4): as many of `columns` as its rows have."""
    return parse(data, columns, path)
