"""`l2c export --format ocel2-sqlite|ocel2-json`: the SQLite file has the spec's tables, columns, keys and
foreign keys (the spec's 24 validation constraints, as pm4py ships them); the JSON file has the structure and
types the spec's schema and format page require; pm4py reads back every event of the log from both; the objects
per type are the lake's records (plus what the log names), every opportunity case is an object, O2O relations
reach every invoice of an opportunity, E2O relations tie each event to its record, case and user; flattening on
"opportunity" gives every event of the opportunity cases; attribute changes follow the landed versions.

Expected values come from `built.log`, l2c.duckdb and the raw lake, never from the exporter.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pm4py
import polars as pl
import pytest
from pm4py.objects.ocel.obj import OCEL
from pm4py.objects.ocel.validation import ocel20_rel_validation

from config.tables import load_tables
from exports import Exported, ocel
from ground.errors import ConfigError
from l2c.cli import main
from sandbox.schema import TABLES
from tests.exports.conftest import Built
from transforms.build import read_lake

FORMATS = ("sqlite", "json")
OCEL_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "time": str, "integer": int, "float": (int, float), "boolean": bool}


@dataclass
class Files:
    sqlite: Path
    json: Path
    done: dict[str, Exported]


# The object types: the default model's tables, keyed as the sandbox org declares them.
PRIMARY_KEYS = {t.name: TABLES[t.name].primary_id for t in load_tables().modelled}


@pytest.fixture(scope="module")
def files(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("ocel")
    done = {"sqlite": ocel.export_sqlite(built.settings, folder / "log.sqlite"),
            "json": ocel.export_json(built.settings, folder / "log.json")}
    return Files(folder / "log.sqlite", folder / "log.json", done)


@pytest.fixture(scope="module")
def read(files: Files) -> dict[str, OCEL]:
    return {"sqlite": pm4py.read_ocel2_sqlite(str(files.sqlite)), "json": pm4py.read_ocel2_json(str(files.json))}


@pytest.fixture(scope="module")
def users(built: Built) -> pl.DataFrame:
    with duckdb.connect(str(built.data_dir / "l2c.duckdb"), read_only=True) as con:
        return con.sql("SELECT event_id, user_id FROM event_resources").pl()


@pytest.fixture(scope="module")
def expected_objects(built: Built, users: pl.DataFrame) -> pl.DataFrame:
    """(type, id, has_events): the lake's records, those only the audit's Delete rows know, what the log names."""
    lake = read_lake(built.settings)
    log = built.log
    return pl.concat([
        *(lake.records[kind].select(pl.lit(kind).alias("type"), pl.col(key).alias("id"), pl.lit(False).alias("e"))
          .collect() for kind, key in PRIMARY_KEYS.items()),
        lake.deleted_details.select(pl.col("objecttypecode").alias("type"), pl.col("objectid").alias("id"),
                                    pl.lit(False).alias("e")).collect(),
        log.select(pl.col("object_type").alias("type"), pl.col("object_id").alias("id"), pl.lit(True).alias("e")),
        log.filter(pl.col("case_type") == "opportunity").select(pl.lit("opportunity").alias("type"),
                                                                pl.col("case_id").alias("id"), pl.lit(True).alias("e")),
        users.join(log, on="event_id", how="semi").select(pl.lit("systemuser").alias("type"),
                                                          pl.col("user_id").alias("id"), pl.lit(True).alias("e")),
    ]).group_by("type", "id").agg(pl.col("e").any().alias("has_events"))


def counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    return dict(frame.get_column(column).value_counts().iter_rows())


def as_polars(frame: Any) -> pl.DataFrame:
    return pl.from_pandas(frame.astype({c: "object" for c in frame.columns if str(frame[c].dtype) == "string"}))


# -- the files follow the spec ---------------------------------------------------------------------------------

SPEC_TABLES = {
    "event": ["ocel_id", "ocel_type"], "object": ["ocel_id", "ocel_type"],
    "event_object": ["ocel_event_id", "ocel_object_id", "ocel_qualifier"],
    "object_object": ["ocel_source_id", "ocel_target_id", "ocel_qualifier"],
    "event_map_type": ["ocel_type", "ocel_type_map"], "object_map_type": ["ocel_type", "ocel_type_map"],
}


def test_sqlite_has_the_spec_tables_columns_and_keys(built: Built, files: Files) -> None:
    satisfied, unsatisfied = ocel20_rel_validation.apply(str(files.sqlite))
    assert unsatisfied == [] and len(satisfied) == 24
    with sqlite3.connect(files.sqlite) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        def columns(table: str) -> list[tuple[str, str]]:
            return [(name, kind) for _, name, kind, *_ in con.execute(f'PRAGMA table_info("{table}")')]

        event_maps = dict(con.execute("SELECT ocel_type, ocel_type_map FROM event_map_type").fetchall())
        object_maps = dict(con.execute("SELECT ocel_type, ocel_type_map FROM object_map_type").fetchall())
        assert tables == {*SPEC_TABLES, *(f"event_{m}" for m in event_maps.values()),
                          *(f"object_{m}" for m in object_maps.values())}
        for table, names in SPEC_TABLES.items():
            assert [name for name, _ in columns(table)] == names
        for table in (f"event_{m}" for m in event_maps.values()):
            assert columns(table)[:2] == [("ocel_id", "TEXT"), ("ocel_time", "TIMESTAMP")]
            assert {name for name, _ in columns(table)[2:]} == {"resource", "source"}
        for table in (f"object_{m}" for m in object_maps.values()):
            assert columns(table)[:3] == [("ocel_id", "TEXT"), ("ocel_time", "TIMESTAMP"),
                                          ("ocel_changed_field", "TEXT")]
        assert set(event_maps) == set(built.log.get_column("activity"))
        assert set(object_maps) == set(PRIMARY_KEYS)
        assert all(m.isalnum() for m in [*event_maps.values(), *object_maps.values()])
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        times = con.execute(f'SELECT ocel_time FROM "event_{event_maps["Lead Captured"]}" LIMIT 1').fetchone()
        assert times is not None and iso(times[0] + "Z")  # ISO 8601 text, in UTC as the spec's example


def iso(text: Any) -> bool:
    """An ISO 8601 date and time with its zone (the JSON format's times)."""
    try:
        return isinstance(text, str) and datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def json_problems(doc: dict[str, Any]) -> list[str]:
    """What the OCEL 2.0 JSON schema (ocel20-schema-json.json) and format page require and `doc` lacks: the four
    top-level arrays; types with a name and attributes {name, type}; events with id, type, ISO 8601 time,
    attributes {name, value}, relationships {objectId, qualifier}; objects with id, type, attributes {name, time,
    value}; every value of its declared type, every relationship to a known object, ids unique."""
    problems = []
    if sorted(doc) != ["eventTypes", "events", "objectTypes", "objects"]:
        return [f"top-level keys {sorted(doc)}"]
    declared: dict[str, dict[str, dict[str, str]]] = {}
    for key in ("eventTypes", "objectTypes"):
        declared[key] = {}
        for kind in doc[key]:
            attributes = kind["attributes"]
            if not isinstance(kind["name"], str) or any(
                    set(a) != {"name", "type"} or a["type"] not in OCEL_TYPES for a in attributes):
                problems.append(f"{key} {kind}")
            declared[key][kind["name"]] = {a["name"]: a["type"] for a in attributes}
    object_ids = [o["id"] for o in doc["objects"]]
    known = set(object_ids)
    if len(known) != len(object_ids) or len({e["id"] for e in doc["events"]}) != len(doc["events"]):
        problems.append("ids are not unique")

    def check(where: str, item: dict[str, Any], keys: set[str], types: dict[str, str], value_keys: set[str]) -> None:
        if not keys <= set(item) or not all(isinstance(item[k], str) for k in ("id", "type")):
            problems.append(f"{where} {item['id']}: keys {sorted(item)}")
            return
        for value in item.get("attributes", []):
            kind = types.get(value["name"])
            content: Any = value["value"]
            typed = kind is not None and isinstance(content, OCEL_TYPES[kind]) and (kind != "time" or iso(content))
            if set(value) != value_keys or not typed or ("time" in value and not iso(value["time"])):
                problems.append(f"{where} {item['id']}: attribute {value} (declared {kind})")
        for link in item.get("relationships", []):
            if set(link) != {"objectId", "qualifier"} or link["objectId"] not in known:
                problems.append(f"{where} {item['id']}: relationship {link}")

    for event in doc["events"]:
        check("event", event, {"id", "type", "time"}, declared["eventTypes"].get(event["type"], {}),
              {"name", "value"})
        if "time" in event and not iso(event["time"]):
            problems.append(f"event {event['id']}: time {event['time']} without a zone")
    for obj in doc["objects"]:
        check("object", obj, {"id", "type"}, declared["objectTypes"].get(obj["type"], {}), {"name", "time", "value"})
    return problems[:10]


def test_json_has_the_structure_and_types_the_spec_requires(built: Built, files: Files) -> None:
    doc = json.loads(files.json.read_text("utf-8"))
    assert json_problems(doc) == []
    assert {t["name"] for t in doc["eventTypes"]} == set(built.log.get_column("activity"))
    assert {t["name"] for t in doc["objectTypes"]} == set(PRIMARY_KEYS)
    quote = next(t for t in doc["objectTypes"] if t["name"] == "quote")
    assert {"discount_pct": "float", "total_amount": "float", "revision": "integer", "state": "string"}.items() <= {
        a["name"]: a["type"] for a in quote["attributes"]}.items()
    assert json_problems({**doc, "events": [{"id": "x", "type": "Lead Captured"}]})  # the check does catch


def test_the_export_reports_what_it_wrote(built: Built, files: Files, expected_objects: pl.DataFrame) -> None:
    for fmt in FORMATS:
        assert (files.done[fmt].events, files.done[fmt].objects) == (built.log.height, expected_objects.height)
    assert {p.name for p in files.sqlite.parent.iterdir()} == {"log.sqlite", "log.json"}  # no temp file left


# -- pm4py reads the same log from both ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_pm4py_reads_every_event_with_its_type_and_time(built: Built, read: dict[str, OCEL], fmt: str) -> None:
    events = as_polars(read[fmt].events).select(
        pl.col("ocel:eid").alias("event_id"), pl.col("ocel:activity").alias("activity"),
        pl.col("ocel:timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias("timestamp"),
        pl.col("resource"))
    assert events.height == built.log.height
    want = built.log.select("event_id", "activity", "timestamp", "resource").sort("event_id")
    assert events.sort("event_id").equals(want)


def test_objects_per_type_are_the_lake_records_and_what_the_log_names(files: Files, expected_objects: pl.DataFrame,
                                                                      read: dict[str, OCEL]) -> None:
    want = counts(expected_objects, "type")
    with sqlite3.connect(files.sqlite) as con:
        assert dict(con.execute("SELECT ocel_type, count(*) FROM object GROUP BY 1").fetchall()) == want
    doc = json.loads(files.json.read_text("utf-8"))
    assert counts(pl.DataFrame({"type": [o["type"] for o in doc["objects"]]}), "type") == want
    # pm4py keeps only objects some event relates to (accounts have none): those are all there.
    with_events = counts(expected_objects.filter("has_events"), "type")
    for fmt in FORMATS:
        assert counts(as_polars(read[fmt].objects), "ocel:type") == with_events


def test_every_opportunity_case_is_an_object(built: Built, read: dict[str, OCEL]) -> None:
    cases = set(built.cases.filter(pl.col("case_type") == "opportunity").get_column("case_id"))
    assert cases
    for fmt in FORMATS:
        objects = as_polars(read[fmt].objects)
        assert cases <= set(objects.filter(pl.col("ocel:type") == "opportunity").get_column("ocel:oid"))


def test_o2o_relations_reach_every_invoice_of_an_opportunity(built: Built, read: dict[str, OCEL]) -> None:
    with duckdb.connect(str(built.data_dir / "l2c.duckdb"), read_only=True) as con:
        row = con.execute("""
            SELECT coalesce(i.opportunity_id, o.opportunity_id) AS opportunity, list(i.invoice_id) AS invoices
            FROM invoices i LEFT JOIN orders o ON o.order_id = i.order_id
            GROUP BY 1 HAVING count(*) > 1
            ORDER BY count(*) - count(i.opportunity_id) DESC, count(*) DESC, 1 LIMIT 1""").fetchone()
    assert row is not None, "the org has no opportunity with several invoices"
    opportunity, invoices = row
    for fmt in FORMATS:
        o2o = as_polars(read[fmt].o2o)
        direct = o2o.filter((pl.col("ocel:oid_2") == opportunity) & (pl.col("ocel:qualifier") == "invoice for"))
        assert set(direct.get_column("ocel:oid")) == set(invoices)
        # ... and through the chain invoice -bills-> order -order for-> opportunity where the order knows it.
        orders = o2o.filter((pl.col("ocel:oid_2") == opportunity) & (pl.col("ocel:qualifier") == "order for"))
        billed = o2o.filter(pl.col("ocel:qualifier") == "bills").join(
            orders.select(pl.col("ocel:oid").alias("ocel:oid_2")), on="ocel:oid_2", how="semi")
        assert set(billed.get_column("ocel:oid")) <= set(invoices)


@pytest.mark.parametrize("fmt", FORMATS)
def test_e2o_ties_each_event_to_its_record_case_and_user(built: Built, read: dict[str, OCEL], users: pl.DataFrame,
                                                         fmt: str) -> None:
    relations = as_polars(read[fmt].relations)

    def pairs(qualifier: str) -> set[tuple[str, str]]:
        return set(relations.filter(pl.col("ocel:qualifier") == qualifier).select("ocel:eid", "ocel:oid").iter_rows())

    log = built.log
    assert pairs("subject") == set(log.select("event_id", "object_id").iter_rows())
    on_others = log.filter((pl.col("case_type") == "opportunity") & (pl.col("object_type") != "opportunity"))
    assert on_others.height > 0
    assert pairs("case") == set(on_others.select("event_id", "case_id").iter_rows())
    assert pairs("performed by") == set(users.join(log, on="event_id", how="semi").iter_rows())
    assert set(relations.get_column("ocel:qualifier")) == {"subject", "case", "performed by"}


def test_flattening_on_opportunity_gives_the_opportunity_cases(built: Built, read: dict[str, OCEL]) -> None:
    in_cases = built.log.filter(pl.col("case_type") == "opportunity")
    for fmt in FORMATS:
        flat = pm4py.ocel_flattening(read[fmt], "opportunity")
        assert len(flat) == in_cases.height
        assert flat.groupby("case:concept:name").size().to_dict() == dict(in_cases.group_by("case_id").len().rows())
        dfg, starts, ends = pm4py.discover_dfg(flat)
        cases = in_cases.get_column("case_id").n_unique()
        assert sum(dfg.values()) == in_cases.height - cases  # each case: one edge between consecutive events
        assert sum(starts.values()) == sum(ends.values()) == cases
        assert {a for edge in dfg for a in edge} <= set(in_cases.get_column("activity"))


# -- attribute values over time --------------------------------------------------------------------------------

def landed_history(built: Built, table: str, column: str) -> dict[str, list[Any]]:
    """Per record, its column's successive distinct non-null values over the landed versions."""
    rows = (read_lake(built.settings).landed[table].select(PRIMARY_KEYS[table], "_version", column)
            .unique([PRIMARY_KEYS[table], "_version"]).sort(PRIMARY_KEYS[table], "_version").collect())
    history = {}
    for record, versions in itertools.groupby(rows.iter_rows(), key=lambda row: row[0]):
        values = [value for _, _, value in versions if value is not None]
        history[record] = [value for value, _ in itertools.groupby(values)]
    return history


@pytest.mark.parametrize(("table", "column", "attribute"), [
    ("opportunity", "statecode__label", "state"), ("opportunity", "salesstage__label", "stage"),
    ("lead", "statecode__label", "state"), ("salesorder", "statecode__label", "state")])
def test_attribute_changes_follow_the_landed_versions(built: Built, files: Files, read: dict[str, OCEL], table: str,
                                                      column: str, attribute: str) -> None:
    want = {record: values for record, values in landed_history(built, table, column).items() if values}
    assert any(len(values) > 1 for values in want.values()), "no record changed between the two extracts"
    with sqlite3.connect(files.sqlite) as con:
        rows = con.execute(f'SELECT ocel_id, ocel_time, "{attribute}" FROM "object_{table}" '
                           f'WHERE ocel_changed_field IS NULL OR ocel_changed_field = ? ORDER BY ocel_id, ocel_time',
                           [attribute]).fetchall()
    got = {record: [value for _, _, value in values if value is not None]
           for record, values in itertools.groupby(rows, key=lambda row: row[0])}
    assert {k: v for k, v in got.items() if v and k in want} == want
    changes = sum(len(values) - 1 for values in want.values())
    for fmt in FORMATS:
        changed = as_polars(read[fmt].object_changes) if len(read[fmt].object_changes) else pl.DataFrame(
            schema={"ocel:oid": pl.Utf8, "ocel:field": pl.Utf8})
        of_table = changed.filter(pl.col("ocel:oid").is_in(list(want)) & (pl.col("ocel:field") == attribute))
        assert of_table.height == changes


# -- writing -------------------------------------------------------------------------------------------------

def test_an_existing_file_is_replaced_whole_by_the_same_bytes(built: Built, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "log.jsonocel"
    out.parent.mkdir()
    out.write_text("old")
    done = ocel.export_json(built.settings, out)
    assert done.path == out and out.read_bytes() == files.json.read_bytes()  # the same file on every run
    assert [p.name for p in out.parent.iterdir()] == ["log.jsonocel"]


def test_the_cli_writes_both_formats(built: Built, files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("L2C_DATA_DIR", str(built.data_dir))
    for fmt, name in (("ocel2-sqlite", "o.sqlite"), ("ocel2-json", "o.json")):
        assert main(["export", "--format", fmt, "--out", str(tmp_path / name)]) == 0
        assert f"export {fmt}: {built.log.height} events" in capsys.readouterr().out
    assert (tmp_path / "o.sqlite").read_bytes() == files.sqlite.read_bytes()
    assert (tmp_path / "o.json").read_bytes() == files.json.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.sqlite"]  # no scratch or temp file left


def test_without_an_event_log_it_says_what_to_run(built: Built, tmp_path: Path) -> None:
    settings = built.settings.model_copy(update={"data_dir": tmp_path})
    for export in (ocel.export_sqlite, ocel.export_json):
        with pytest.raises(ConfigError, match="l2c run"):
            export(settings, tmp_path / "log.out")
    assert not (tmp_path / "log.out").exists()


def test_a_database_from_before_event_resources_asks_for_a_full_transform(built: Built, tmp_path: Path) -> None:
    for name in ("event_log.parquet", "cases.parquet"):
        (tmp_path / name).write_bytes((built.data_dir / name).read_bytes())
    duckdb.connect(str(tmp_path / "l2c.duckdb")).close()
    with pytest.raises(ConfigError, match="event_resources") as caught:
        ocel.export_sqlite(built.settings.model_copy(update={"data_dir": tmp_path}), tmp_path / "log.sqlite")
    assert "l2c transform --full" in str(caught.value)
    assert not (tmp_path / "log.sqlite").exists()


@pytest.mark.parametrize(("types", "tables"), [
    (["Create Order"], {"Create Order": "CreateOrder"}),
    (["Stage Entered: Close", "Stage Entered Close"], {"Stage Entered Close": "StageEnteredClose",
                                                       "Stage Entered: Close": "StageEnteredClose_2"}),
    (["object", "Order", "order"], {"Order": "Order", "object": "object_2", "order": "order_2"}),
    (["???"], {"???": "Type"}),
])
def test_type_tables_are_letters_and_digits_unique_ignoring_case(types: list[str], tables: dict[str, str]) -> None:
    assert ocel.type_tables(types) == tables


def test_times_are_utc() -> None:
    frame = pl.DataFrame({"t": [datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)]}).with_columns(
        pl.col("t").dt.convert_time_zone("Europe/Berlin"))
    assert ocel._plain(frame, ocel.JSON_TIME).item() == "2025-01-02T03:04:05.000006Z"
    assert ocel._plain(frame, ocel.SQLITE_TIME).item() == "2025-01-02 03:04:05.000006"
