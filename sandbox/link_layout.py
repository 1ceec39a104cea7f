"""The three CSV layouts of a Link export (docs/LINK.md D2): append-only, in-place, incremental folders.

append-only: `<table>/<yyyy>.csv` grows by the rows of each newly published batch (DOCS ADV: "create/update/
delete each append a row to the end of the partition file"); bytes once written never change. in-place: each
partition file is rewritten as the current rows (DOCS ADV: update replaces, delete removes). incremental
folders: one `<TS>/` per batch that changed (DOCS INC: "folders are created only when something changed"),
named by the batch end `yyyy-MM-ddTHH.mm.ssZ` (D2), holding that batch's rows, `OptionsetMetadata/` and, written
last when the next folder starts, `model.json` (D7); `Changelog/changelog.info` names the newest folder, still in
progress, and `Changelog/Synapse.log` lists the completed ones. A retry leaves an extra empty folder now and then
(DOCS INC). Appends start by cutting a file back to the size the cursor recorded, so a killed export that appended
without recording it leaves no torn or doubled rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ground.files import atomic_write, make_dirs
from sandbox.link_csv import export_columns, line, render
from sandbox.link_late import append_order, is_late, recommit_targets, recommits
from sandbox.link_model import META_COLUMNS, entity, entity_metadata, metadata_frames, model, partition_location
from sandbox.link_rows import current_rows, export_rows
from sandbox.link_versions import LINK_TABLES, Cycles
from sandbox.orgdata import OrgData
from sandbox.schema import TABLES

CHANGELOG = "Changelog"
TRICKLE = "Microsoft.Athena.TrickleFeedService"
OPTIONSETS = "OptionsetMetadata"
RETRY_EVERY = 400  # about one folder in this many is followed by a retry's empty folder
FOLDER_FORMAT = "%Y-%m-%dT%H.%M.%SZ"  # D2 OUR CHOICE (docs/LINK.md §3: dots, as three readers parse it)

Sizes = dict[str, int]


def folder_name(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime(FOLDER_FORMAT)


def sink_text(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%-m/%-d/%Y %-I:%M:%S %p")


def _put(path: Path, data: bytes) -> None:
    """A plain write of a file in a folder the cursor does not cover yet (redone whole after a crash); the export
    syncs once before it records the cursor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _replace(path: Path, data: bytes) -> None:
    make_dirs(path.parent)
    atomic_write(path, lambda handle: handle.write(data))


def _append(out: Path, path: Path, data: bytes, sizes: Sizes) -> None:
    """Append to `path`, first cutting it back to the size recorded in the cursor (0 for a file it lacks)."""
    make_dirs(path.parent)
    key = path.relative_to(out).as_posix()
    size = sizes.get(key, 0)
    with open(path, "ab") as handle:
        handle.truncate(size)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    sizes[key] = size + len(data)


def _lines(rows: pl.DataFrame, name: str, keys: list[str]) -> pl.DataFrame:
    """Rows grouped by `keys` into CSV text (each line ending in \\n), groups in first-seen order."""
    return (rows.select(*keys, line(export_columns(TABLES[name])))
            .group_by(keys, maintain_order=True).agg(pl.col("line").str.join("\n") + "\n"))


def _partitions(table_dir: Path, rel: str) -> list[tuple[str, str]]:
    return [(p.stem, f"{rel}/{p.name}") for p in sorted(table_dir.glob("*.csv"))] if table_dir.is_dir() else []


def _metadata_texts() -> dict[str, bytes]:
    return {name: render(frame, META_COLUMNS[name]) for name, frame in metadata_frames(LINK_TABLES).items()}


def _metadata_files(folder: Path, put: Callable[[Path, bytes], None], texts: dict[str, bytes]) -> None:
    for name, text in texts.items():
        put(folder / OPTIONSETS / f"{name}.csv", text)


def write_static(org: OrgData, out: Path, synced: str) -> None:
    """Microsoft.Athena.TrickleFeedService/<table>-model.json and -EntityMetadata.json (docs/LINK.md §4)."""
    frames = metadata_frames(LINK_TABLES)
    for name in LINK_TABLES:
        table = TABLES[name]
        _replace(out / TRICKLE / f"{name}-model.json", model([entity(org, table, [], synced)]))
        _replace(out / TRICKLE / f"{name}-EntityMetadata.json", entity_metadata(table, frames))


def _root_model(org: OrgData, out: Path, synced: str, *, with_partitions: bool) -> None:
    entities = [entity(org, TABLES[name], _partitions(out / name, name) if with_partitions else [], synced)
                for name in LINK_TABLES]
    _replace(out / "model.json", model(entities))


def write_append_only(org: OrgData, out: Path, cycles: Cycles, after: int, upto: int, sizes: Sizes,
                      cursor: dict[str, Any], synced: str) -> int:
    """Append the rows of batches after..upto to `<table>/<yyyy>.csv`, a late batch's after a later one's
    (sandbox/link_late.py); cursor["uncommitted"] keeps, per table, the late batches still waiting. Returns the
    rows appended."""
    appended = 0
    waiting: dict[str, list[int]] = cursor.get("uncommitted") or {}
    for name in LINK_TABLES:
        pending = waiting.get(name, [])
        earlier = [export_rows(org, TABLES[name], cycles, b, b - 1) for b in pending]
        own = export_rows(org, TABLES[name], cycles, upto, after)
        rows, waiting[name] = append_order(own, pl.concat([own.clear(), *earlier]), pending, org.seed)
        appended += rows.height
        for part, text in _lines(rows, name, ["_part"]).iter_rows():
            _append(out, out / name / f"{part}.csv", text.encode("utf-8"), sizes)
    cursor["uncommitted"] = {name: batches for name, batches in waiting.items() if batches}
    _metadata_files(out, _replace, _metadata_texts())
    _root_model(org, out, synced, with_partitions=True)
    return appended


def write_in_place(org: OrgData, out: Path, cycles: Cycles, upto: int, synced: str) -> int:
    """Rewrite every partition file as the current rows (deleted records gone); returns the rows written."""
    written = 0
    for name in LINK_TABLES:
        rows = current_rows(org, TABLES[name], cycles, upto).filter(~pl.col("IsDelete")) \
            .sort("SinkCreatedOn", "Id")
        written += rows.height
        texts = dict(_lines(rows, name, ["_part"]).iter_rows())
        stale = {p.stem for p in (out / name).glob("*.csv")} if (out / name).is_dir() else set()
        for part in sorted(stale | set(texts)):
            _replace(out / name / f"{part}.csv", texts.get(part, "").encode("utf-8"))
    _metadata_files(out, _replace, _metadata_texts())
    _root_model(org, out, synced, with_partitions=True)
    return written


def write_incremental(org: OrgData, out: Path, cycles: Cycles, after: int, upto: int, sizes: Sizes,
                      cursor: dict[str, Any], synced: str) -> int:
    """New timestamp folders for the batches after..upto that changed; the folder that was in progress is
    completed first, unless it is a late batch's (abandoned: its rows go into the next folder that completes,
    sandbox/link_late.py). Updates cursor["in_progress"] and cursor["uncommitted"] (late batches whose rows wait
    for a next folder); returns the rows written."""
    frames = {name: export_rows(org, TABLES[name], cycles, upto, after) for name in LINK_TABLES}
    pending: list[int] = cursor.get("uncommitted", [])
    batches = sorted(set().union(*(f.get_column("_batch").unique().to_list() for f in frames.values())))
    targets = recommit_targets(pending, batches, org.seed)
    rows_by_batch: dict[int, list[tuple[str, str, str]]] = {}
    written = 0
    for name, own in frames.items():
        earlier = [export_rows(org, TABLES[name], cycles, b, b - 1) for b in pending if b in targets]
        again = recommits(pl.concat([*earlier, own]), targets, cycles, org.seed)
        rows = pl.concat([again, own]).sort("_batch", maintain_order=True)  # re-commits first in their folder
        written += rows.height
        for batch, part, text in _lines(rows, name, ["_batch", "_part"]).iter_rows():
            rows_by_batch.setdefault(batch, []).append((name, part, text))
    template = {name: entity(org, TABLES[name], [], synced) for name in LINK_TABLES}
    texts = _metadata_texts()
    completed: list[str] = []
    previous: str | None = cursor.get("in_progress")
    for batch in sorted(rows_by_batch):
        if previous is not None and not is_late(_batch_of(previous, cycles), org.seed):
            _complete(org, out, previous, template)
            completed.append(previous)
        end = cycles.end_of(batch)
        previous = folder_name(end)
        folder = out / previous
        for name, part, text in rows_by_batch[batch]:
            _put(folder / name / f"{part}.csv", text.encode("utf-8"))
        _metadata_files(folder, _put, texts)
        if batch == -1 or (batch * 2_654_435_761 + org.seed) % RETRY_EVERY == 0:
            # a retry's extra empty folder, 37 s later (DOCS INC: "A retry can create an extra empty folder")
            (out / folder_name(end + 37)).mkdir(exist_ok=True)
    os.sync()  # the folders' plain writes are durable before the changelog names them and the cursor moves
    if previous is not None:
        _replace(out / CHANGELOG / "changelog.info", (previous + "\n").encode("utf-8"))
    if completed:
        _append(out, out / CHANGELOG / "Synapse.log", "".join(f"{c}\n" for c in completed).encode("utf-8"),
                sizes)
    cursor["in_progress"] = previous
    cursor["uncommitted"] = sorted(b for b in {*pending, *batches} if is_late(b, org.seed) and b not in targets)
    if not (out / "model.json").exists():
        _replace(out / "model.json", model(list(template.values())))  # D2: schema only, partitions []
    return written


def _batch_of(folder: str, cycles: Cycles) -> int:
    """The batch whose end names `folder` (folder_name's inverse)."""
    end = int(datetime.strptime(folder, FOLDER_FORMAT).replace(tzinfo=UTC).timestamp())
    return (end - cycles.end_of(-1)) // cycles.interval_s - 1


def _complete(org: OrgData, out: Path, folder: str, template: dict[str, dict[str, Any]]) -> None:
    """Write `<folder>/model.json` last (D7): every table listed, partitions [] where it wrote nothing."""
    entities = []
    for name in LINK_TABLES:
        parts = _partitions(out / folder / name, f"{folder}/{name}")
        entities.append({**template[name], "partitions": [
            {"name": stem, "location": partition_location(org, path)} for stem, path in parts]})
    _put(out / folder / "model.json", model(entities))
