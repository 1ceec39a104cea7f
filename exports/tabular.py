"""The event log as one CSV file that Celonis, Disco, ProcessMind and Power Automate Process Mining import without a
mapping step: UTF-8 without BOM, comma separated, one header row, one row per event, the columns those tools
recognise by name first ("Case ID", "Activity", "Start Timestamp", "End Timestamp", "Resource"), then the event id
and the remaining event and case attributes. Times are UTC, written `YYYY-MM-DDTHH:MM:SS.sss` without an offset
(see TIME_FORMAT for why). `csv_frame` and `write_csv` are the one definition of that layout, which
`pa_incremental` writes too, so an incremental folder and a full export share one header. Streamed: event_log.parquet
is read one record batch at a time from one open file (a consistent snapshot even if a transform replaces it
meanwhile) and each batch is formatted by polars, so memory stays flat however long the log (`log_batches` and
`case_starts` serve the XES and incremental exports too). Written all or nothing: temp file, fsync, rename.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow.parquet as pq

from config.settings import Settings
from exports.common import Exported, outputs
from ground.errors import ConfigError
from ground.files import write_out

log = logging.getLogger("l2c.exports")

# Event log column -> CSV header. The first five are the names the tools map on their own:
# - Power Automate Process Mining: Case ID, Activity Name, Start Timestamp, End Timestamp, Resource
#   (MicrosoftDocs/power-automate-docs articles/process-mining-processes-and-data.md, "Data requirements");
# - Disco: "Case ID", "Activity", "Resource" and any timestamp column it recognises by pattern
#   (https://fluxicon.com/book/read/import/);
# - ProcessMind: a header row naming "Case ID", "Activity", "Timestamp"; delimiter and quotes auto-detected
#   (https://processmind.com/resources/docs/data/supported-data-formats);
# - Celonis file upload: case id, activity, timestamp columns, no empty cells in them
#   (https://documentation.celonis.com/en/event-logs--file-upload-.html).
# "Start Timestamp"/"End Timestamp" rather than a lone "Timestamp" because the log carries both and Power
# Automate maps exactly these two names.
COLUMNS: dict[str, str] = {
    "case_id": "Case ID",
    "activity": "Activity",
    "timestamp": "Start Timestamp",
    "end_timestamp": "End Timestamp",
    "resource": "Resource",
    "event_id": "Event ID",
    "object_type": "Object Type",
    "object_id": "Object ID",
    "source": "Source",
    "case_type": "Case Type",
    "owner": "Owner",
    "outcome": "Outcome",
    "amount": "Amount",
    "currency": "Currency",
    "lead_source": "Lead Source",
    "stage": "Stage",
    "account": "Account",
    "region": "Region",
}
HEADER = list(COLUMNS.values())
HEADER_LINE = pl.DataFrame(schema=dict.fromkeys(HEADER, pl.String)).write_csv().encode()  # as polars quotes it
EVENT_ID = COLUMNS["event_id"]
CASE_ID = COLUMNS["case_id"]
TIMES = ("timestamp", "end_timestamp")
BATCH_SIZE = 65_536  # rows per record batch; memory stays flat at any log size (polars' sink_csv grew with it)

# Power Automate documents `YYYY-MM-DDTHH:MM:SS.sss` (articles/process-mining-byo-azure-data-lake.md: "time stamp
# ... follows the ISO 8601 standard format"), Disco detects that pattern, Celonis and ProcessMind parse it, and
# pandas (pm4py) reads it. No UTC offset: the documented form has none, so one would bet on undocumented parsing in
# four tools, and a zone-less time is read as is, not shifted. The values are UTC; the header cannot say so without
# losing the auto-mapping ("Start Timestamp (UTC)" is not a name Power Automate maps), so the module docstring
# does. Milliseconds: Dataverse stores whole seconds, so nothing is lost; a log with sub-millisecond times is
# reported by `check_precision`, not truncated silently.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3f"


def csv_frame(events: pl.LazyFrame) -> pl.LazyFrame:
    """The event log in the CSV layout: COLUMNS in order, renamed, times formatted as TIME_FORMAT in UTC."""
    return events.select(
        (pl.col(column).dt.convert_time_zone("UTC").dt.strftime(TIME_FORMAT) if column in TIMES
         else pl.col(column)).alias(name)
        for column, name in COLUMNS.items()
    )


def check_precision(event_log: Path) -> int:
    """Warn (and return how many) when timestamps carry sub-millisecond digits the CSV and XES formats drop."""
    finer = pl.scan_parquet(event_log, glob=False).select(
        pl.sum_horizontal((pl.col(column).dt.microsecond() % 1000 != 0).sum() for column in TIMES)
    ).collect().item()
    if finer:
        log.warning("%d timestamps have sub-millisecond digits; the export keeps milliseconds (the precision "
                    "Power Automate, Disco and XES readers parse) and drops the rest", finer)
    return int(finer)


def file_target(out: Path) -> Path:
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory", hint="give the path of the file to write")
    return out


def log_batches(event_log: pq.ParquetFile, *, batch_size: int = BATCH_SIZE,
                columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """The event log in file order (sorted by case), one record batch at a time."""
    for record_batch in event_log.iter_batches(batch_size=batch_size, columns=columns):
        frame = pl.from_arrow(record_batch)
        assert isinstance(frame, pl.DataFrame)
        if not frame.is_empty():
            yield frame


def case_starts(previous_case: str | None) -> pl.Expr:
    """True where a case begins in a batch of the sorted log: its case_id differs from the row before, and for the
    first row from `previous_case`, the last case of the batch before (None at the start of the log)."""
    return (pl.col("case_id") != pl.col("case_id").shift(1, fill_value=previous_case)).fill_null(True)


def write_csv(frames: Iterable[pl.DataFrame], handle: IO[bytes]) -> tuple[int, int]:
    """Write event-log batches in the CSV layout, the header first (also when no row follows); (events, cases)."""
    handle.write(HEADER_LINE)
    events = cases = 0
    previous_case: str | None = None
    for frame in frames:
        if frame.is_empty():  # e.g. a batch whose events were all exported before
            continue
        cases += frame.select(case_starts(previous_case).sum()).item()
        csv_frame(frame.lazy()).collect().write_csv(handle, include_header=False)
        events += frame.height
        previous_case = frame.get_column("case_id")[-1]
    return events, cases


def stream_log(settings: Settings, out: Path,
               write: Callable[[pq.ParquetFile, IO[bytes]], tuple[int, int]]) -> Exported:
    """Write `out` with `write(event log, handle) -> (events, cases)` (atomically, or streamed to a device or FIFO:
    ground.files.write_out), the log read as one open file: a consistent log even if a transform replaces it
    meanwhile."""
    event_log, _, _ = outputs(settings)
    out = file_target(out)
    check_precision(event_log)
    counts: list[tuple[int, int]] = []
    with event_log.open("rb") as source:
        parquet = pq.ParquetFile(source)
        write_out(out, lambda handle: counts.append(write(parquet, handle)))
    events, cases = counts[0]
    return Exported(out, events, cases)


def export(settings: Settings, out: Path, *, batch_size: int = BATCH_SIZE) -> Exported:
    return stream_log(settings, out, lambda parquet, handle: write_csv(log_batches(parquet, batch_size=batch_size),
                                                                        handle))
