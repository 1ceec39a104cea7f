"""What is new in a Link export for one table since its checkpoint: typed records and the checkpoint after them.

Per layout (docs/LINK.md D2, D6, D7):
- CSV (append-only or in-place): per file the bytes consumed, its size and version, and the CRC of the consumed
  bytes. An unchanged file is not read. A file that grew with its consumed bytes unchanged is appended to: only
  its new complete records are read (a half-written last record waits for the next run). A file that shrank,
  changed within what was read, or disappeared means the export was rewritten (in-place updates, a new
  snapshot): the table is read again whole (`Read.full`), the lake drops the versions it holds and the records
  gone are deletions without a date.
- Incremental folders: every complete folder after the last one read, oldest first, each whole (a complete
  folder is never written again, D7); the schema of each folder's own model.json.
- Delta: the newest table version when it differs from the one read, whole (`full`: the latest row per Id).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from connector import link_csv, link_delta
from connector.link_meta import Entity, Layout, entities_of, folder_time, table_files
from connector.link_storage import Entry, ExportStore
from connector.link_values import coerce
from connector.rows import ColumnSpec
from connector.state import LinkFile, LinkState
from ground import stop
from ground.errors import SourceUnavailable

SYSTEM_KINDS = {"id": "string", "sinkcreatedon": "timestamp", "sinkmodifiedon": "timestamp", "isdelete": "bool",
                "versionnumber": "int64"}


@dataclass
class Read:
    records: pl.DataFrame  # typed, lower-case column names (`isdeleted` read as `isdelete`)
    checkpoint: LinkState
    full: bool = False  # the records are the whole table: what the lake holds beyond them was deleted
    notes: list[str] = field(default_factory=list)


def _kinds(names: list[str], specs: list[ColumnSpec]) -> dict[str, str]:
    declared = {spec.logical_name: spec.kind for spec in specs}
    kinds = {}
    for name in names:
        if name in SYSTEM_KINDS:
            kinds[name] = SYSTEM_KINDS[name]
        elif name in declared:
            kinds[name] = declared[name]
        elif name.endswith("type") and name[:-4] in declared:
            kinds[name] = "string"
    return kinds


def _typed(frame: pl.DataFrame, specs: list[ColumnSpec], where: str, first_row: int = 0) -> pl.DataFrame:
    frame = frame.rename({c: c.lower() for c in frame.columns})
    if "isdeleted" in frame.columns and "isdelete" not in frame.columns:  # D4: isDeleted is IsDelete
        frame = frame.rename({"isdeleted": "isdelete"})
    kinds = _kinds(frame.columns, specs)
    return coerce(frame.select(list(kinds)), kinds, where, first_row)


def read_csv(store: ExportStore, layout: Layout, entries: dict[str, Entry], table: str, specs: list[ColumnSpec],
             old: LinkState | None) -> Read:
    entity = layout.entities[table]
    names = [name.lower() for name, _ in entity.columns]
    sizes = {path: entry.size for path, entry in entries.items()}
    files = table_files(layout, sizes, table)
    marks = old.files if old is not None and old.layout == "csv" else {}
    if set(marks) - set(files):
        return _whole(store, files, entries, names, specs, "a file of the table is gone")
    parts: list[pl.DataFrame] = []
    done: dict[str, LinkFile] = {}
    for path in files:
        entry, mark = entries[path], marks.get(path)
        if mark is not None and (mark.size, mark.version) == (entry.size, entry.version):
            done[path] = mark
            continue
        start, rows, crc = 0, 0, 0
        if mark is not None:
            if entry.size < mark.consumed:
                return _whole(store, files, entries, names, specs, f"{path} shrank")
            head = store.read(path, 0, mark.consumed)
            if zlib.crc32(head) != mark.crc:
                return _whole(store, files, entries, names, specs, f"{path} changed within what was read")
            start, rows, crc = mark.consumed, mark.rows, mark.crc
        tail = store.read(path, start, entry.size)
        end = link_csv.complete_end(tail)
        frame = link_csv.parse(tail[:end], names, path, rows)
        parts.append(_typed(frame, specs, path, rows))
        done[path] = LinkFile(consumed=start + end, rows=rows + frame.height, size=entry.size,
                              version=entry.version, crc=zlib.crc32(tail[:end], crc))
    return Read(_concat(parts), LinkState(layout="csv", files=done))


def _whole(store: ExportStore, files: list[str], entries: dict[str, Entry], names: list[str],
           specs: list[ColumnSpec], why: str) -> Read:
    """The whole table again, after its files were rewritten (in place: a snapshot, not an append)."""
    parts: list[pl.DataFrame] = []
    done: dict[str, LinkFile] = {}
    for path in files:
        entry = entries[path]
        data = store.read(path, 0, entry.size)
        end = link_csv.complete_end(data)
        frame = link_csv.parse(data[:end], names, path)
        parts.append(_typed(frame, specs, path))
        done[path] = LinkFile(consumed=end, rows=frame.height, size=entry.size, version=entry.version,
                              crc=zlib.crc32(data[:end]))
    note = f"the export's files were rewritten ({why}): the table was read again whole, records gone are deleted"
    return Read(_concat(parts), LinkState(layout="csv", files=done), full=True, notes=[note])


def read_incremental(store: ExportStore, layout: Layout, entries: dict[str, Entry], table: str,
                     specs: list[ColumnSpec], old: LinkState | None) -> Read:
    last = old.folder if old is not None and old.layout == "incremental" else None
    after = folder_time(last) if last else None
    sizes = {path: entry.size for path, entry in entries.items()}
    groups: list[tuple[list[str], list[str]]] = []  # consecutive folders' files with the same columns
    reached = last
    for folder in layout.folders:
        when = folder_time(folder)
        if after is not None and when is not None and when <= after:
            continue
        stop.check()
        files = layout.folder_files.get(folder, {}).get(table, [])
        if files:
            # The folder's own model.json: its schema when the folder was written (columns are appended later).
            if folder not in layout.models:
                layout.models[folder] = entities_of(store, f"{folder}/model.json", sizes)
            entity = layout.models[folder].get(table) or layout.entities.get(table) or _trickle_entity(
                store, sizes, table)
            names = [name.lower() for name, _ in entity.columns]
            if groups and groups[-1][0] == names:
                groups[-1][1].extend(files)
            else:
                groups.append((names, list(files)))
        reached = folder
    parts = [_read_many(store, entries, names, paths, specs) for names, paths in groups]
    checkpoint = LinkState(layout="incremental", folder=reached) if reached else LinkState(layout="incremental")
    return Read(_concat(parts), checkpoint)


def _read_many(store: ExportStore, entries: dict[str, Entry], names: list[str], paths: list[str],
               specs: list[ColumnSpec]) -> pl.DataFrame:
    """Complete files of one schema parsed as one text (a folder holds a few rows per table: thousands of small
    files); when that fails, file by file, so the error names the file and its row."""
    texts = []
    for path in paths:
        data = store.read(path, 0, entries[path].size).removeprefix(link_csv.BOM)
        texts.append(data[: link_csv.complete_end(data)])
    try:
        return _typed(link_csv.parse(b"".join(texts), names, paths[0]), specs, paths[0])
    except SourceUnavailable:
        for path, text in zip(paths, texts, strict=True):
            _typed(link_csv.parse(text, names, path), specs, path)
        raise


def _trickle_entity(store: ExportStore, sizes: dict[str, int], table: str) -> Entity:
    """The fallback schema of a table a folder's model.json does not list (docs/LINK.md §3, CODE C-CONN)."""
    path = f"Microsoft.Athena.TrickleFeedService/{table}-model.json"
    found = entities_of(store, path, sizes).get(table) if path in sizes else None
    if found is None:
        raise SourceUnavailable(f"the Link export has CSV files of {table} but no model.json that lists it",
                                hint="check that the export is complete (docs/LINK.md §3)")
    return found


def read_delta(store: ExportStore, path: str, specs: list[ColumnSpec], old: LinkState | None) -> Read:
    version = link_delta.version(store, path)
    if old is not None and old.layout == "delta" and old.delta_version == version:
        return Read(pl.DataFrame(), old)
    frame = link_delta.read_table(store, path)
    return Read(_typed(frame, specs, f"{path} (Delta version {version})"),
                LinkState(layout="delta", delta_version=version), full=True)


def read_delta_batches(store: ExportStore, path: str, specs: list[ColumnSpec], old: LinkState | None,
                       rows: int) -> tuple[Iterator[pl.DataFrame], LinkState | None]:
    """As `read_delta`, a batch of `rows` at a time: (the typed batches, the checkpoint once all are landed), or
    (no batch, None) when the version is the one read last."""
    version = link_delta.version(store, path)
    if old is not None and old.layout == "delta" and old.delta_version == version:
        return iter(()), None
    where = f"{path} (Delta version {version})"
    typed = (_typed(batch, specs, where) for batch in link_delta.batches(store, path, rows))
    return typed, LinkState(layout="delta", delta_version=version)


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts, how="diagonal_relaxed")
