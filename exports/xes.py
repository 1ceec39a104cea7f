"""The event log as an IEEE 1849 XES file for ProM, pm4py, Disco, Celonis and ProcessMind, streamed: event_log.parquet
is read in record batches and each batch is formatted to XML by polars string expressions (no Python loop over
events), so a log of ten million events never sits in memory. The file is sorted by case, so a trace is the run of
rows with one case_id; a trace that straddles two batches is simply continued (its <trace> opens with its first row
and closes when the next case starts). Each trace carries the case attributes (concept:name = case id; amount as a
float; nulls omitted), each event concept:name, time:timestamp (UTC, milliseconds), lifecycle:transition
"complete", org:resource when known, and object_type, object_id, source and event_id. Values are XML-escaped and
characters XML 1.0 forbids become U+FFFD. Written all or nothing: temp file, fsync, rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from config.settings import Settings
from exports.common import Exported
from exports.tabular import case_starts, log_batches, stream_log

BATCH_SIZE = 16_384  # ~600 bytes of XML per event: ~10 MB of text per batch, which stays in cache (measured
# fastest between 10k and 20k rows; 50k is ~40% slower)

# The standard extensions with their names, prefixes and URIs (IEEE 1849-2016 clause 7; the .xesext files at
# http://www.xes-standard.org/). The <log> element follows OpenXES, ProM's reference implementation: the
# default namespace http://www.xes-standard.org/ and xes.version "1.0" (the IEEE schema,
# xes-ieee-1849-2016-April-15-2020.xsd, types xes.version as xs:decimal, so pm4py's "1849-2016" would not
# validate; pm4py and ProM read either). No xes.features: this file uses no nested attributes.
EXTENSIONS = (
    ("Concept", "concept", "http://www.xes-standard.org/concept.xesext"),
    ("Time", "time", "http://www.xes-standard.org/time.xesext"),
    ("Lifecycle", "lifecycle", "http://www.xes-standard.org/lifecycle.xesext"),
    ("Organizational", "org", "http://www.xes-standard.org/org.xesext"),
)
# Globals declare what every trace/event has (IEEE 1849-2016 4.3); a classifier's keys must be global event
# attributes (4.4). org:resource is not global: it is omitted when unknown, and a global default would make
# readers invent a resource for those events.
HEADER = "\n".join([
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<log xes.version="1.0" xmlns="http://www.xes-standard.org/">',
    *(f'\t<extension name="{name}" prefix="{prefix}" uri="{uri}"/>' for name, prefix, uri in EXTENSIONS),
    '\t<global scope="trace">',
    '\t\t<string key="concept:name" value="__INVALID__"/>',
    "\t</global>",
    '\t<global scope="event">',
    '\t\t<string key="concept:name" value="__INVALID__"/>',
    '\t\t<date key="time:timestamp" value="1970-01-01T00:00:00.000+00:00"/>',
    '\t\t<string key="lifecycle:transition" value="complete"/>',
    "\t</global>",
    '\t<classifier name="Activity" keys="concept:name"/>',
    '\t<classifier name="Activity_Transition" keys="concept:name lifecycle:transition"/>',
    '\t<string key="concept:name" value="Lead to cash"/>',
    '\t<string key="lifecycle:model" value="standard"/>',
    "",
])
FOOTER = "</log>\n"

CASE_STRINGS = ("case_type", "owner", "outcome", "currency", "lead_source", "stage", "account", "region")
EVENT_STRINGS = ("object_type", "object_id", "source", "event_id")
COLUMNS = ["case_id", "activity", "timestamp", "resource", "amount", *CASE_STRINGS, *EVENT_STRINGS]

# What a value may not carry as is, and what goes instead, replaced in one pass (Aho-Corasick: leftmost, never
# rescanned, so "&" becoming "&amp;" cannot be escaped twice). Markup characters become entities; tab, LF and CR
# are legal but attribute-value normalisation would turn them into spaces, so they go as character references;
# characters the XML 1.0 Char production forbids (C0 controls, U+FFFE, U+FFFF; surrogates cannot occur in valid
# UTF-8) become U+FFFD: replacing beats dropping, the reader still sees that something was there.
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;",
            **{chr(c): "\ufffd" for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF)}}


def _escaped(column: str) -> pl.Expr:
    return pl.col(column).str.replace_many(list(_ESCAPES), list(_ESCAPES.values()))


def _attribute(tag: str, key: str, value: pl.Expr, depth: int) -> pl.Expr:
    """One attribute element per row, or null where the value is null (concat_str(ignore_nulls) then drops it)."""
    return pl.concat_str([pl.lit("\t" * depth + f'<{tag} key="{key}" value="'), value, pl.lit('"/>\n')])


def _xml(previous_case: str | None) -> pl.Expr:
    """Each row's XML: closing the previous trace and opening its own when a case starts, then the event."""
    starts = case_starts(previous_case)
    closes = starts & (pl.lit(previous_case is not None) | (pl.int_range(pl.len()) > 0))
    opening = pl.concat_str([
        pl.lit("\t<trace>\n"),
        _attribute("string", "concept:name", _escaped("case_id"), 2),
        *(_attribute("string", key, _escaped(key), 2) for key in CASE_STRINGS),
        # xs:double; a Decimal's digits beyond ~15 significant ones do not survive (the CSV keeps them exact)
        _attribute("float", "amount", pl.col("amount").cast(pl.Float64).cast(pl.String), 2),
    ], ignore_nulls=True)
    event = pl.concat_str([
        pl.lit("\t\t<event>\n"),
        _attribute("string", "concept:name", _escaped("activity"), 3),
        _attribute("date", "time:timestamp",
                   pl.col("timestamp").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f+00:00"), 3),
        pl.lit('\t\t\t<string key="lifecycle:transition" value="complete"/>\n'),
        _attribute("string", "org:resource", _escaped("resource"), 3),
        *(_attribute("string", key, _escaped(key), 3) for key in EVENT_STRINGS),
        pl.lit("\t\t</event>\n"),
    ], ignore_nulls=True)
    return pl.concat_str([
        pl.when(closes).then(pl.lit("\t</trace>\n")),
        pl.when(starts).then(opening),
        event,
    ], ignore_nulls=True)


def _write_strings(handle: IO[bytes], column: pl.Series) -> None:
    """Write a string column's values back to back, straight from its Arrow data buffer: the values of a
    large_string array are stored contiguously, so this is one write per chunk, no join, no copy."""
    array = column.to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string: int64 offsets + UTF-8 data
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        if not pa.types.is_large_string(chunk.type):
            chunk = chunk.cast(pa.large_string())
        _, offsets, data = chunk.buffers()
        bounds = memoryview(offsets).cast("q")  # Arrow buffers are little-endian, like every host l2c runs on
        handle.write(memoryview(data)[bounds[chunk.offset]:bounds[chunk.offset + len(chunk)]])


def write_xes(event_log: pq.ParquetFile, handle: IO[bytes], *, batch_size: int = BATCH_SIZE) -> tuple[int, int]:
    """Stream the XES document of `event_log` into `handle`; (events, traces)."""
    handle.write(HEADER.encode())
    previous_case: str | None = None
    events = traces = 0
    for batch in log_batches(event_log, batch_size=batch_size, columns=COLUMNS):
        formatted = batch.select(_xml(previous_case).alias("xml"), case_starts(previous_case).sum().alias("starts"))
        _write_strings(handle, formatted.get_column("xml"))
        events += batch.height
        traces += formatted.item(0, "starts")
        previous_case = batch.get_column("case_id")[-1]
    if previous_case is not None:
        handle.write(b"\t</trace>\n")
    handle.write(FOOTER.encode())
    return events, traces


def export(settings: Settings, out: Path, *, batch_size: int = BATCH_SIZE) -> Exported:
    return stream_log(settings, out, lambda parquet, handle: write_xes(parquet, handle, batch_size=batch_size))
