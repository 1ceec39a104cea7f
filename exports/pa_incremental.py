"""Power Automate Process Mining's incremental refresh from a folder: each export appends the events that are new
since the last one as one more file `YYYYMMDDHHMMSS.csv` (UTC now, or the second after the newest file, so names
always sort in append order) in exactly the layout of `l2c export --format csv` (`tabular.write_csv`), because
Power Automate requires every file of the folder to share one header and takes incremental files in name order
(MicrosoftDocs/power-automate-docs, articles/process-mining-byo-azure-data-lake.md, "Define incremental data
refresh settings"); a `*.csv` with another header is refused. "New" means an event_id found in no `*.csv` of the
folder: the files themselves are the state (only their Event ID and Case ID columns are read, and held in memory
sorted, about 100 bytes an event), so there is nothing to get out of sync. A crash before the rename leaves a
dot-prefixed `.tmp` file, not a `*.csv`, which the next export removes and rewrites; a crash after it leaves a
complete file whose events then count as exported. Nothing new writes no file. A lock on the folder keeps two
exports from appending the same events. The limitation: an incremental refresh can only append. An event keeps
the values it was exported with, so later changes (the case owner, stage, outcome or amount; the case itself when
a lead became an opportunity and its events moved) never reach Power Automate, and events that left the log
(deleted records) stay there; the export warns with counts when it sees events that moved or vanished. A full
export (`l2c export --format csv`, loaded as a full refresh, or into a fresh folder) is the way to refresh
everything.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow.parquet as pq

from config.settings import Settings
from exports.common import Exported, outputs
from exports.tabular import BATCH_SIZE, CASE_ID, EVENT_ID, HEADER_LINE, check_precision, log_batches, write_csv
from ground.errors import ConfigError, RunLocked
from ground.files import atomic_write, make_dirs, remove_temp_files

log = logging.getLogger("l2c.exports")

STAMP = "%Y%m%d%H%M%S"
NAME = re.compile(r"^\d{14}\.csv$")
TEMP = re.compile(r"^\.\d{14}\.csv\..+\.tmp$")  # connector.lake.atomic_write's temp name for one of our files


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    # flock on the directory itself: no lock file for Power Automate to trip over, and the kernel frees it when
    # the holder dies, so a crashed export never blocks the next one
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another l2c export is appending to {folder}",
                            hint="wait for it to finish; two exports at once would append the same events") from None
        yield
    finally:
        os.close(fd)  # releases the flock


def _check_headers(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as handle:
            if handle.readline() != HEADER_LINE:
                raise ConfigError(
                    f"{path} does not have the header of an l2c export",
                    hint="Power Automate needs every file of the folder to share one header: move that file away, "
                         "or start a new folder (with a full `l2c export --format csv`)")


def _next_name(files: list[Path], now: datetime) -> str:
    """UTC now, or one second after the newest YYYYMMDDHHMMSS.csv if that is not earlier (clock skew, two runs
    within a second): Power Automate appends in name order."""
    stamp = now.astimezone(UTC).replace(microsecond=0)
    ours = sorted(path.name for path in files if NAME.fullmatch(path.name))
    if ours:
        try:
            after = datetime.strptime(ours[-1][:14], STAMP).replace(tzinfo=UTC) + timedelta(seconds=1)
        except ValueError:
            raise ConfigError(f"{ours[-1]} is not a YYYYMMDDHHMMSS time, so no later name can follow it",
                              hint="rename or move that file") from None
        stamp = max(stamp, after)
    return f"{stamp.strftime(STAMP)}.csv"


class _Known:
    """The events of the folder's files, sorted by event id, so a batch's membership is a vectorised binary search
    (one sort, no hash table rebuilt per batch); it also counts what an append-only refresh leaves stale."""

    def __init__(self, files: list[Path]) -> None:
        exported = pl.DataFrame(schema={"event_id": pl.String, "case_id": pl.String})
        if files:
            exported = pl.scan_csv(files, infer_schema=False, glob=False).select(
                pl.col(EVENT_ID).alias("event_id"), pl.col(CASE_ID).alias("case_id")
            ).unique("event_id", keep="first", maintain_order=True).sort("event_id").collect()
        self.ids = exported.get_column("event_id")
        self.cases = exported.get_column("case_id")
        self.found = self.moved = 0

    def new(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of `frame` whose event is in no file yet."""
        if self.ids.is_empty():
            return frame
        ids = frame.get_column("event_id")
        at = self.ids.search_sorted(ids).clip(0, self.ids.len() - 1)
        known = self.ids.gather(at) == ids
        self.found += int(known.sum())
        self.moved += int((known & (self.cases.gather(at) != frame.get_column("case_id"))).sum())
        return frame.filter(~known)

    def warn_stale(self) -> None:
        vanished = self.ids.len() - self.found
        if vanished or self.moved:
            log.warning("%d exported events are no longer in the event log and %d now belong to another case; an "
                        "incremental refresh can only append, so Power Automate keeps their old rows until a full "
                        "refresh (`l2c export --format csv`)", vanished, self.moved)


class _NothingNew(Exception):
    """Raised from inside the write so that atomic_write removes its temp file: no file without new events."""


def export(settings: Settings, out: Path, *, now: Callable[[], datetime] = _utc_now,
           batch_size: int = BATCH_SIZE) -> Exported:
    event_log, _, _ = outputs(settings)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="pa-incremental appends files to a folder: give its path")
    make_dirs(out)
    with _folder_lock(out):
        remove_temp_files(path for path in out.iterdir() if TEMP.fullmatch(path.name))  # a crashed export's
        earlier = sorted(out.glob("*.csv"))
        _check_headers(earlier)
        check_precision(event_log)
        known = _Known(earlier)
        path = out / _next_name(earlier, now())
        counts: list[tuple[int, int]] = []
        with event_log.open("rb") as source:  # one open file: a consistent log even if a transform replaces it
            parquet = pq.ParquetFile(source)

            def write(handle: IO[bytes]) -> None:
                frames = (known.new(frame) for frame in log_batches(parquet, batch_size=batch_size))
                counts.append(write_csv(frames, handle))
                if not counts[0][0]:
                    raise _NothingNew

            try:
                atomic_write(path, write)
            except _NothingNew:
                pass
        known.warn_stale()
        events, cases = counts[0]
        return Exported(out, events, cases, files=[path] if events else [])
