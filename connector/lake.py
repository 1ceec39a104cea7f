"""The raw lake: every page pulled from Dataverse as one Parquet file, append-only, written durably.

Layout: `<data_dir>/raw/<table>/<stream>/<kind>-<page_no:06d>.parquet`, kind `rows`, `deletions`, `quarantine`
(records refused) or `notes` (values kept but noted, e.g. a date in another shape than its metadata says). A
stream is one paged read that can be resumed (a delta sync, a backfill); its name is chosen by the caller and
kept in the table's state, so a resumed run rewrites the same file names: writing a (stream, kind, page) again
replaces that file and never adds a duplicate. A page is written to a hidden temp file in the same directory,
fsynced, renamed over the final name and the directory fsynced, so a crash leaves either the old file or the new
one, never a torn one; `cleanup()` (under the run lock) removes temp files of a crashed run. Each page gains
lineage columns: `_run_id`, `_extracted_at`, `_stream`, `_page`, `_op` (`upsert`, `delete`, `quarantine`,
`note`) and `_deleted_at` (when a deletion was seen). `scan()` reads rows and deletions as one lazy frame
(columns added later are null in older pages); `current()` keeps, per id, the last event in the order
(effective version, `_extracted_at`, `_page`, rows before deletions, row), where a deletion's effective version
is just above the highest version of that id seen before it: it hides everything older and loses to a
re-creation with a higher version. No Hive partitioning: the files are few and small, and a flat listing keeps
the ordering rules above the only thing a reader needs to know.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow.parquet as pq

from connector.register import Gone, Register, Stamp
from connector.rows import quarantine_frame
from ground.errors import ConfigError, L2CError
from ground.files import TEMP_SUFFIX, atomic_write, fsync_dir, make_dirs, remove_temp_files, safe_name

Kind = Literal["rows", "deletions", "quarantine", "notes"]
OPS: dict[str, str] = {"rows": "upsert", "deletions": "delete", "quarantine": "quarantine", "notes": "note"}
KINDS: tuple[Kind, ...] = ("rows", "deletions", "quarantine", "notes")
LINEAGE = ("_run_id", "_extracted_at", "_stream", "_page", "_op", "_deleted_at")
VERSION = "_version"
ROW = "_row"
_UTC = pl.Datetime("us", "UTC")
LINEAGE_SCHEMA: dict[str, pl.DataType] = {"_run_id": pl.String(), "_extracted_at": _UTC, "_stream": pl.String(),
                                          "_page": pl.Int64(), "_op": pl.String(), "_deleted_at": _UTC}


@dataclass(frozen=True)
class Damage:
    """A landed page that is missing or not what landed."""

    table: str
    page: Path
    why: str

    def __str__(self) -> str:
        return f"raw page {self.page} is {self.why}" if self.why == "missing" else f"raw page {self.page}: {self.why}"


class Lake:
    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "raw"
        self.register = Register(self.data_dir)

    def table_dir(self, table: str) -> Path:
        return self.root / safe_name(table, "table")

    def page_path(self, table: str, stream: str, page_no: int, kind: Kind = "rows") -> Path:
        if kind not in OPS or page_no < 0:
            raise ValueError(f"bad page: kind {kind!r}, page {page_no}")
        return self.table_dir(table) / safe_name(stream, "stream") / f"{kind}-{page_no:06d}.parquet"

    def write_page(self, table: str, stream: str, page_no: int, frame: pl.DataFrame, *, run_id: str,
                   extracted_at: datetime | None = None, kind: Kind = "rows") -> Path:
        """Land one page durably under its deterministic name (replacing an earlier write of the same page).

        `extracted_at` defaults to now. A deletions frame may bring its own `_deleted_at` (e.g. the time of the
        audit row that recorded the delete); otherwise a deletion is dated when it was seen, `extracted_at`.
        """
        if extracted_at is not None and extracted_at.tzinfo is None:
            raise ValueError("extracted_at must be timezone-aware")
        path = self.page_path(table, stream, page_no, kind)
        seen = (extracted_at or datetime.now(UTC)).astimezone(UTC)
        if kind in ("rows", "deletions") and VERSION not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Int64).alias(VERSION))
        deleted_at = pl.lit(seen if kind == "deletions" else None, _UTC)
        if kind == "deletions" and "_deleted_at" in frame.columns:
            deleted_at = pl.col("_deleted_at").cast(_UTC).fill_null(deleted_at)
        landed = frame.with_columns(
            pl.lit(run_id, pl.String).alias("_run_id"),
            pl.lit(seen, _UTC).alias("_extracted_at"),
            pl.lit(stream, pl.String).alias("_stream"),
            pl.lit(page_no, pl.Int64).alias("_page"),
            pl.lit(OPS[kind], pl.String).alias("_op"),
            deleted_at.alias("_deleted_at"),
        )
        atomic_write(path, lambda handle: landed.write_parquet(handle, compression="zstd"))
        self.register.record(path.parent.parent.name, _in_table(path), Stamp.of(path))
        return path

    def write_quarantine(self, table: str, stream: str, page_no: int,
                         quarantined: Sequence[tuple[Mapping[str, Any], str]], *, run_id: str,
                         extracted_at: datetime | None = None) -> Path:
        """Land the records `to_frame` refused as `quarantine-<page>.parquet` (record JSON text + reason)."""
        return self.write_page(table, stream, page_no, quarantine_frame(quarantined), run_id=run_id,
                               extracted_at=extracted_at, kind="quarantine")

    def write_notes(self, table: str, stream: str, page_no: int, notes: pl.DataFrame, *, run_id: str,
                    extracted_at: datetime | None = None) -> Path:
        """Land what a page's conversion noted about values it kept (connector.rows.notes_frame) beside it."""
        return self.write_page(table, stream, page_no, notes, run_id=run_id, extracted_at=extracted_at, kind="notes")

    def pages(self, table: str, kinds: tuple[Kind, ...] = ("rows", "deletions")) -> list[Path]:
        """Landed pages of `table` in a stable order (stream, kind, page); temp files are never listed."""
        directory = self.table_dir(table)
        if not directory.is_dir():
            return []
        found = [p for kind in kinds for p in directory.glob(f"*/{kind}-*.parquet") if not p.name.startswith(".")]
        return sorted(found, key=lambda p: (p.parent.name, p.name))

    def scan(self, table: str) -> pl.LazyFrame:
        """Rows and deletions of `table`, all pages, one lazy frame; `_row` numbers the rows in page order."""
        return self._scan(table, ("rows", "deletions"))

    def scan_quarantine(self, table: str) -> pl.LazyFrame:
        return self._scan(table, ("quarantine",))

    def scan_notes(self, table: str) -> pl.LazyFrame:
        return self._scan(table, ("notes",))

    def _scan(self, table: str, kinds: tuple[Kind, ...], stream: str | None = None) -> pl.LazyFrame:
        files = [p for p in self.pages(table, kinds) if stream is None or p.parent.name == stream]
        if not files:
            return pl.LazyFrame()
        schema: dict[str, pl.DataType] = {}
        # Footers only: the union of every page's columns (rows pages first, so data columns lead).
        for path in sorted(files, key=lambda p: not p.name.startswith("rows-")):
            try:
                found = pl.scan_parquet(path, glob=False).collect_schema()
            except pl.exceptions.PolarsError as exc:
                raise ConfigError(f"raw page {path} cannot be read ({str(exc).splitlines()[0]})",
                                  hint=READ_AGAIN) from None
            for name, dtype in found.items():
                known = schema.setdefault(name, dtype)
                if known != dtype:
                    raise L2CError(f"column {name} is {known} in older pages of {table} but {dtype} in {path}",
                                   hint=f"the column changed type in Dataverse; move {self.table_dir(table)} "
                                        "aside and run `l2c extract` again for a fresh backfill")
        tail = [c for c in (VERSION, *LINEAGE) if c in schema]
        ordered = {name: schema[name] for name in [*(c for c in schema if c not in tail), *tail]}
        return pl.scan_parquet([str(p) for p in files], schema=ordered, missing_columns="insert", row_index_name=ROW,
                               glob=False)

    def has_rows(self, table: str) -> bool:
        return bool(self.pages(table, ("rows",)))

    def versions(self, table: str, pk: str, ids: pl.Series | Sequence[str]) -> pl.DataFrame:
        """Distinct (pk, `_version`) pairs already landed as rows for these ids (to drop a re-read boundary)."""
        if not self.has_rows(table):
            return pl.DataFrame(schema={pk: pl.String, VERSION: pl.Int64})
        wanted = pl.Series(list(ids), dtype=pl.String).implode()
        return (self._scan(table, ("rows",)).filter(pl.col(pk).is_in(wanted))
                .select(pk, VERSION).unique().sort(pk, VERSION).collect())

    def stream_ids(self, table: str, stream: str, pk: str) -> pl.DataFrame:
        """Distinct ids landed as rows by one stream (what a full read returned)."""
        landed = self._scan(table, ("rows",), safe_name(stream, "stream"))
        if not landed.collect_schema().names():
            return pl.DataFrame(schema={pk: pl.String})
        return landed.select(pk).unique().sort(pk).collect()

    def current(self, table: str, pk: str) -> pl.DataFrame:
        """The latest version of every id that is not deleted after it, sorted by `pk`."""
        events = self.scan(table)
        names = events.collect_schema().names()
        if not names:
            return pl.DataFrame(schema={pk: pl.String})
        if pk not in names:
            raise L2CError(f"the lake of {table} has no column {pk}", hint="check the table's primary key")
        if VERSION not in names:
            events = events.with_columns(pl.lit(None, pl.Int64).alias(VERSION))
        deleted = pl.col("_op") == "delete"
        seen_before = pl.col(VERSION).cum_max().forward_fill().over(pk)
        ranked = (
            events.with_columns(deleted.cast(pl.Int8).alias("_is_delete"))
            .sort("_extracted_at", "_page", "_is_delete", ROW)
            # 2v for the version v of a row; 2v+1 for a deletion that came after version v of that id.
            # A row without an etag ranks with the versions before it, so extraction order decides.
            .with_columns(pl.when(deleted).then(seen_before * 2 + 1)
                          .otherwise(pl.coalesce(pl.col(VERSION), seen_before) * 2).alias("_rank"))
            .sort(pk, "_rank", "_extracted_at", "_page", "_is_delete", ROW, nulls_last=False)
            .unique(subset=[pk], keep="last", maintain_order=True)
            .filter(~deleted)
        )
        return ranked.drop("_rank", "_is_delete", ROW, "_op", "_deleted_at").sort(pk).collect()

    def fingerprint(self, table: str, pk: str | None = None) -> str:
        """sha256 of `current()` without lineage, columns by name, rows by `pk`: equal content, equal hash.

        `pk` defaults to `<table>id` (Dataverse's primary key name) when the lake has it, else its first column.
        """
        columns = [c for c in self.scan(table).collect_schema().names() if c not in (ROW, VERSION, *LINEAGE)]
        if pk is None:
            pk = f"{table}id" if f"{table}id" in columns else next(iter(columns), f"{table}id")
        frame = self.current(table, pk)
        frame = frame.select(sorted(c for c in frame.columns if c not in LINEAGE)).sort(pk)
        digest = hashlib.sha256(repr(list(frame.schema.items())).encode())
        digest.update(frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z").encode())
        return digest.hexdigest()

    def cleanup(self) -> list[Path]:
        """Remove temp files left by a crashed write. Call it only while holding the run lock."""
        return remove_temp_files(self.root.glob(f"*/*/.*{TEMP_SUFFIX}") if self.root.is_dir() else iter(()))

    def damaged(self, expected: Collection[str] = (), *, adopt: bool = False) -> list[Damage]:
        """Every landed page that is missing or not what landed, by the register; also a page of `expected`
        (paths relative to the data directory, e.g. those the last transform read) that is neither on disk nor
        set aside, and a page on disk the register does not know whose Parquet footer does not read. With
        `adopt` (under the run lock), such an unknown page that reads is registered as found: a lake landed
        by an older l2c, or a page landed just before a crash."""
        tables = set(self.register.tables())
        if self.root.is_dir():
            tables |= {p.name for p in self.root.iterdir() if p.is_dir()}
        wanted: dict[str, set[str]] = {}
        for page in expected:
            parts = page.split("/")
            if len(parts) == 4 and parts[0] == self.root.name:
                wanted.setdefault(parts[1], set()).add(f"{parts[2]}/{parts[3]}")
        found = []
        for table in sorted(tables | set(wanted)):
            directory = self.root / table
            known = self.register.load(table)
            for name, stamp in known.items():
                why = stamp.damage(directory / name) if isinstance(stamp, Stamp) else None
                if why is not None:
                    found.append(Damage(table, directory / name, why))
            for path in self.pages(table, KINDS) if directory.is_dir() else []:
                name = _in_table(path)
                if name in known:
                    continue
                why = _unreadable(path)
                if why is not None:
                    found.append(Damage(table, path, why))
                elif adopt:
                    self.register.record(table, name, Stamp.of(path))
            found += [Damage(table, directory / name, "missing") for name in sorted(wanted.get(table, set()))
                      if name not in known and not (directory / name).exists()]
        return found

    def set_aside(self, damages: Sequence[Damage], run_id: str, *, read_again: Collection[str]) -> None:
        """Move damaged pages out of the lake, to `<data_dir>/damaged/<run_id>/<table>/<stream>/`, and register
        them as gone: waiting to be `read_again` for a table in `read_again`, done for any other. Call it only
        under the run lock, once the tables to read again will be (their state says so)."""
        for damage in damages:
            if damage.page.exists():
                target = self.data_dir / "damaged" / safe_name(run_id, "run id") / damage.table / _in_table(damage.page)
                make_dirs(target.parent)
                os.replace(damage.page, target)
                fsync_dir(damage.page.parent)
            done = None if damage.table in read_again else run_id
            self.register.set_aside(damage.table, _in_table(damage.page), Gone(damage.why, run_id, done))

    def read_again(self, table: str, run_id: str) -> None:
        """`table` was read again in full by `run_id`: its pages set aside are no longer missed."""
        for name, entry in self.register.load(table).items():
            if isinstance(entry, Gone) and entry.read_again is None:
                self.register.set_aside(table, name, Gone(entry.why, entry.run, run_id))

    def waiting(self) -> list[Damage]:
        """Pages set aside whose table has not been read again yet: the lake lacks what they held."""
        return [Damage(table, self.root / table / name, f"set aside by run {entry.run} ({entry.why}), and "
                       f"{table} not read again since")
                for table in self.register.tables() for name, entry in self.register.load(table).items()
                if isinstance(entry, Gone) and entry.read_again is None]


# What to do about a damaged raw page, wherever it is found.
READ_AGAIN = ("Run `l2c extract` (or `l2c run`): it sets damaged pages aside and reads their tables again from "
              "Dataverse")


def _in_table(page: Path) -> str:
    """A page's name within its table's folder: `<stream>/<file>`."""
    return f"{page.parent.name}/{page.name}"


def _unreadable(path: Path) -> str | None:
    """Why a Parquet file's footer does not read (a cut or garbled page); None when it reads."""
    try:
        pq.read_metadata(path)
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError, ArrowIOError an OSError
        if isinstance(exc, PermissionError):
            raise
        return f"not a readable Parquet file ({str(exc).splitlines()[0]})"
    return None
