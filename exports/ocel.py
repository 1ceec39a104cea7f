"""OCEL 2.0 files (https://www.ocel-standard.org/specification/formats/, arXiv:2403.01975) of the last transform:
`export_sqlite` writes the relational format, `export_json` the JSON format. Both read event_log.parquet, who
did each event (`event_resources` in l2c.duckdb) and every version of each object type's records, for attribute
changes (`state/transform/objects-<type>.parquet`, which `transforms.build.object_versions` writes from the lake
before an OCEL export: `l2c export` does), build the tables with transforms/ocel.py and replace `out` only with a
complete file (ground.files.write_out: in place for a device or FIFO).
SQLite: the spec's tables with the primary and foreign keys its validation script checks; foreign keys are enforced
while inserting, so a dangling relation fails the export instead of shipping; rows are bulk-inserted by executemany
from an iterator. JSON: typed values as on the spec's format page (numbers for integer and float, true/false for
boolean, ISO 8601 strings for time; the published JSON schema describes values as strings, but the format page's
example and the readers we know take typed ones), each item json-encoded by polars. Memory: the OCEL tables are
held as polars frames, about 2.5x the event log in memory (1.2 GB more for 1M events); the JSON text is built and
written JSON_CHUNK events or objects at a time, and the SQLite rows stream from the frames into sqlite3.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import duckdb
import polars as pl

from config.settings import Settings
from config.tables import load_tables
from exports.common import Exported, outputs
from ground.errors import ConfigError
from ground.files import TEMP_SUFFIX, is_stream, make_dirs, out_target, write_out
from transforms.ocel import Ocel, build
from transforms.outputs import object_versions_paths

SQL_TYPES = {"string": "TEXT", "time": "TIMESTAMP", "integer": "INTEGER", "float": "REAL", "boolean": "BOOLEAN"}
SQLITE_TIME = "%Y-%m-%d %H:%M:%S%.f"  # as in the spec's SQLite example ('1970-01-01 00:00:00'), UTC
JSON_TIME = "%Y-%m-%dT%H:%M:%S%.fZ"  # as in the spec's JSON example ("1970-01-01T00:00:00Z")
CHUNK = 1 << 20  # bytes per copy
JSON_CHUNK = 50_000  # events or objects whose JSON text is built at once


def export_sqlite(settings: Settings, out: Path) -> Exported:
    tables = ocel_tables(settings)
    # sqlite3 writes a path: the database is built in a scratch folder beside the file `out` names (in the system's
    # temp folder when `out` is a device or FIFO), then copied in whole.
    target = out_target(out)
    beside = None if is_stream(target) else target.parent
    if beside is not None:
        make_dirs(beside)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=beside) as scratch:
        database = Path(scratch) / "ocel.sqlite"
        write_sqlite(tables, database)
        with open(database, "rb") as built:
            write_out(out, lambda handle: shutil.copyfileobj(built, handle, CHUNK))
    return Exported(out, events=tables.events.height, objects=tables.objects.height)


def export_json(settings: Settings, out: Path) -> Exported:
    tables = ocel_tables(settings)
    write_out(out, lambda handle: write_json(tables, handle))
    return Exported(out, events=tables.events.height, objects=tables.objects.height)


def ocel_tables(settings: Settings) -> Ocel:
    event_log, _, database = outputs(settings)
    with duckdb.connect(str(database), read_only=True) as con:
        con.execute("SET enable_progress_bar = false")  # drawn on stdout, terminal or not
        if not con.sql("SELECT 1 FROM information_schema.tables WHERE table_name = 'event_resources'").fetchall():
            raise ConfigError(f"{database} has no table event_resources (it was built by an older l2c)",
                              hint="run `l2c transform --full` with the same L2C_DATA_DIR, then export again")
        users = con.sql("SELECT event_id, user_id FROM event_resources").pl()
    versions = object_versions_paths(settings.data_dir)
    if not versions:
        raise ConfigError(f"no object versions for an OCEL export in {settings.data_dir}",
                          hint="export with `l2c export` (it prepares them from the lake first)")
    rows = {kind: pl.scan_parquet(path, glob=False) for kind, path in versions.items()}
    return build(pl.scan_parquet(event_log, glob=False), users.lazy(), rows, load_tables(settings.tables_file))


def type_tables(types: Iterable[str]) -> dict[str, str]:
    """ocel_type -> ocel_type_map, the suffix of its event_/object_ table: letters and digits only, as the spec
    maps "Create Order" to "CreateOrder"; unique ignoring case (so are SQLite's table names), never "object"
    (event_object and object_object are the spec's own tables)."""
    used, names = {"object"}, {}
    for kind in sorted(types):
        base = re.sub(r"[\W_]+", "", kind) or "Type"
        name, n = base, 1
        while name.casefold() in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name.casefold())
        names[kind] = name
    return names


def _plain(frame: pl.DataFrame, time_format: str) -> pl.DataFrame:
    """Values a file can hold: times as UTC ISO 8601 text, exact decimals as floats (OCEL's only fraction type)."""
    def plain(name: str, dtype: pl.DataType) -> pl.Expr:
        column = pl.col(name)
        if dtype == pl.Date:
            column = column.cast(pl.Datetime("us"))
        if dtype.is_temporal():
            if isinstance(dtype, pl.Datetime) and dtype.time_zone:
                column = column.dt.convert_time_zone("UTC")
            return column.dt.to_string(time_format)
        return column.cast(pl.Float64) if dtype.is_decimal() else column

    return frame.select(plain(name, dtype).alias(name) for name, dtype in frame.schema.items())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def write_sqlite(tables: Ocel, path: Path) -> None:
    """The SQLite format (ocel-standard.org/specification/formats/sqlite): event, object, event_object,
    object_object, event_map_type, object_map_type, one event_<map> table per event type and one object_<map>
    table per object type, with the keys the spec's validation script checks (ocel20-schema-relational)."""
    event_maps = type_tables(tables.events.get_column("ocel_type").unique())
    object_maps = type_tables(tables.values)
    event_columns = tables.event_attributes()
    ddl = [
        'CREATE TABLE "event_map_type" ("ocel_type" TEXT PRIMARY KEY, "ocel_type_map" TEXT)',
        'CREATE TABLE "object_map_type" ("ocel_type" TEXT PRIMARY KEY, "ocel_type_map" TEXT)',
        'CREATE TABLE "event" ("ocel_id" TEXT PRIMARY KEY, "ocel_type" TEXT REFERENCES "event_map_type" ("ocel_type"))',
        'CREATE TABLE "object" ("ocel_id" TEXT PRIMARY KEY, '
        '"ocel_type" TEXT REFERENCES "object_map_type" ("ocel_type"))',
        'CREATE TABLE "event_object" ("ocel_event_id" TEXT REFERENCES "event" ("ocel_id"), '
        '"ocel_object_id" TEXT REFERENCES "object" ("ocel_id"), "ocel_qualifier" TEXT, '
        'PRIMARY KEY ("ocel_event_id", "ocel_object_id", "ocel_qualifier"))',
        'CREATE TABLE "object_object" ("ocel_source_id" TEXT REFERENCES "object" ("ocel_id"), '
        '"ocel_target_id" TEXT REFERENCES "object" ("ocel_id"), "ocel_qualifier" TEXT, '
        'PRIMARY KEY ("ocel_source_id", "ocel_target_id", "ocel_qualifier"))',
    ]
    attributes = ", ".join(f"{_quote(name)} {SQL_TYPES[kind]}" for name, kind in event_columns.items())
    ddl += [f'CREATE TABLE {_quote("event_" + name)} ("ocel_id" TEXT PRIMARY KEY REFERENCES "event" ("ocel_id"), '
            f'"ocel_time" TIMESTAMP{", " + attributes if attributes else ""})' for name in event_maps.values()]
    for kind, name in object_maps.items():
        columns = "".join(f", {_quote(a)} {SQL_TYPES[t]}" for a, t in tables.object_attributes(kind).items())
        ddl.append(f'CREATE TABLE {_quote("object_" + name)} ("ocel_id" TEXT REFERENCES "object" ("ocel_id"), '
                   f'"ocel_time" TIMESTAMP, "ocel_changed_field" TEXT{columns})')

    con = sqlite3.connect(path)
    try:
        # A scratch file until os.replace: no journal needed; the foreign keys prove every relation's target exists.
        con.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;")
        with con:
            for statement in ddl:
                con.execute(statement)

            def insert(table: str, frame: pl.DataFrame) -> None:
                marks = ", ".join("?" * frame.width)
                con.executemany(f"INSERT INTO {_quote(table)} VALUES ({marks})", frame.iter_rows())

            for table, maps in (("event_map_type", event_maps), ("object_map_type", object_maps)):
                insert(table, pl.DataFrame({"ocel_type": list(maps), "ocel_type_map": list(maps.values())}))
            insert("event", tables.events.select("ocel_id", "ocel_type"))
            insert("object", tables.objects.select("ocel_id", "ocel_type"))
            events = _plain(tables.events, SQLITE_TIME)
            for (activity, *_), frame in events.partition_by("ocel_type", as_dict=True, include_key=False).items():
                insert("event_" + event_maps[str(activity)], frame)
            for kind, frame in tables.values.items():
                insert("object_" + object_maps[kind], _plain(frame, SQLITE_TIME))
            insert("event_object", tables.event_object)
            insert("object_object", tables.object_object)
    finally:
        con.close()


def _items(attributes: Iterable[str], timed: bool) -> pl.Expr:
    """Per row: its non-null attribute values as JSON items {name, [time,] value}, comma-separated. Each item is
    one struct json-encoded by polars, so every value keeps its own JSON type and escaping."""
    items = [pl.when(pl.col(name).is_not_null()).then(pl.struct(
        pl.lit(name).alias("name"), *([pl.col("ocel_time").alias("time")] if timed else []),
        pl.col(name).alias("value")).struct.json_encode()) for name in attributes]
    return pl.concat_str(items, separator=",", ignore_nulls=True) if items else pl.lit("")


def _relationships(links: pl.DataFrame, source: str, target: str) -> pl.DataFrame:
    """(ocel_id, relationships): each source's relations as JSON items {objectId, qualifier}, comma-separated."""
    item = pl.struct(pl.col(target).alias("objectId"), pl.col("ocel_qualifier").alias("qualifier")).struct
    return links.group_by(pl.col(source).alias("ocel_id"), maintain_order=True).agg(
        item.json_encode().str.join(",").alias("relationships"))


def _objects(rows: pl.DataFrame, head: list[pl.Expr], attributes: pl.DataFrame, links: pl.DataFrame) -> str:
    """JSON text of one object per row (events or objects), comma-separated: the `head` fields, then the
    "attributes" and "relationships" arrays (JSON item text per ocel_id)."""
    lines = (rows.join(attributes, on="ocel_id", how="left", maintain_order="left")
             .join(links, on="ocel_id", how="left", maintain_order="left")
             .select(pl.concat_str([pl.struct(head).struct.json_encode().str.strip_suffix("}"),
                                    pl.lit(',"attributes":['), pl.col("attributes").fill_null(""),
                                    pl.lit('],"relationships":['), pl.col("relationships").fill_null(""),
                                    pl.lit("]}")])))
    return str(lines.to_series().str.join(",\n").item())


def _chunks(frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
    return (frame.slice(offset, JSON_CHUNK) for offset in range(0, frame.height, JSON_CHUNK))


def _event_texts(tables: Ocel) -> Iterator[str]:
    attributes = tables.event_attributes()
    head = [pl.col("ocel_id").alias("id"), pl.col("ocel_type").alias("type"), pl.col("ocel_time").alias("time")]
    for chunk in _chunks(tables.events):  # in time order
        plain = _plain(chunk, JSON_TIME)
        links = tables.event_object.filter(pl.col("ocel_event_id").is_in(chunk.get_column("ocel_id").implode()))
        yield _objects(plain, head, plain.select("ocel_id", _items(attributes, False).alias("attributes")),
                       _relationships(links, "ocel_event_id", "ocel_object_id"))


def _object_texts(tables: Ocel) -> Iterator[str]:
    head = [pl.col("ocel_id").alias("id"), pl.col("ocel_type").alias("type")]
    for kind, values in tables.values.items():
        attributes = tables.object_attributes(kind)
        for chunk in _chunks(tables.objects.filter(pl.col("ocel_type") == kind)):
            ids = chunk.get_column("ocel_id")
            # A filter keeps the values sorted by object and time: an attribute's first entry is its initial value.
            history = (_plain(values.filter(pl.col("ocel_id").is_in(ids.implode())), JSON_TIME)
                       .select("ocel_id", _items(attributes, True).alias("item"))
                       .group_by("ocel_id", maintain_order=True).agg(pl.col("item").str.join(",").alias("attributes")))
            links = tables.object_object.filter(pl.col("ocel_source_id").is_in(ids.implode()))
            yield _objects(chunk, head, history, _relationships(links, "ocel_source_id", "ocel_target_id"))


def write_json(tables: Ocel, handle: IO[bytes]) -> None:
    """The JSON format (ocel-standard.org/specification/formats/json): eventTypes, objectTypes, events (id, type,
    time, attributes {name, value}, relationships {objectId, qualifier}) and objects (id, type, attributes {name,
    time, value}, relationships). Written JSON_CHUNK events or objects at a time, so the text held is bounded."""
    def declared(attributes: dict[str, str]) -> list[dict[str, str]]:
        return [{"name": name, "type": kind} for name, kind in attributes.items()]

    event_types = [{"name": kind, "attributes": declared(tables.event_attributes())}
                   for kind in tables.events.get_column("ocel_type").unique().sort()]
    object_types = [{"name": kind, "attributes": declared(tables.object_attributes(kind))} for kind in tables.values]
    handle.write(f'{{"eventTypes": {json.dumps(event_types)},\n"objectTypes": {json.dumps(object_types)},\n'
                 '"events": [\n'.encode())
    for texts, tail in ((_event_texts(tables), '\n],\n"objects": [\n'), (_object_texts(tables), "\n]}\n")):
        for n, text in enumerate(texts):
            handle.write(((",\n" if n else "") + text).encode())
        handle.write(tail.encode())
