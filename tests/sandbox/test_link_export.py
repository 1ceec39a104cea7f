"""The sandbox's Synapse Link CSV export (append-only and in-place) against docs/LINK.md D2-D7 and the simulator."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from ground.errors import ConfigError
from sandbox.link_csv import export_columns, render
from sandbox.link_export import CURSOR, LinkOptions, export_link
from sandbox.link_versions import LINK_TABLES, collapsed_changes
from sandbox.orgdata import BASE_CLOCK, OrgData
from sandbox.schema import TABLES
from sandbox.simulator import simulate
from tests.sandbox.link_reading import (
    attributes,
    live_rows,
    newest,
    read_rows,
    sink,
    table_files,
    versions_expected,
)

META = ("OptionsetMetadata", "GlobalOptionsetMetadata", "StateMetadata", "StatusMetadata", "TargetMetadata")
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def appended(org: OrgData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("append") / "link"
    export_link(org, out, LinkOptions())
    return out


def _rows(root: Path, table: str) -> list[dict[str, str]]:
    return read_rows(table_files(root, table), attributes(root / "model.json")[table])


def test_layout_follows_d2(appended: Path, org: OrgData) -> None:
    assert (appended / "model.json").stat().st_size > 0
    assert (appended / CURSOR).exists()
    for name in META:
        assert (appended / "OptionsetMetadata" / f"{name}.csv").exists(), name
    for table in LINK_TABLES:
        assert (appended / "Microsoft.Athena.TrickleFeedService" / f"{table}-model.json").exists()
        years = {str(y) for y in org.rows[table].get_column("createdon").dt.year().unique().to_list()}
        stems = {p.stem for p in table_files(appended, table)}
        assert years <= stems and all(re.fullmatch(r"\d{4}", s) for s in stems), (table, stems)
    assert "audit" not in {p.name for p in appended.iterdir()}  # audit only with Delta (LINK.md §7)


def test_model_json_shape_and_d4_order(appended: Path) -> None:
    document = json.loads((appended / "model.json").read_text(encoding="utf-8"))
    assert (document["name"], document["version"]) == ("cdm", "1.0")
    assert [e["name"] for e in document["entities"]] == list(LINK_TABLES)
    for entity in document["entities"]:
        table = TABLES[entity["name"]]
        assert entity["$type"] == "LocalEntity"
        notes = {a["name"]: a["value"] for a in entity["annotations"]}
        assert notes["Athena:InitialSyncState"] == "Completed" and notes["Athena:PartitionGranularity"] == "Year"
        names = [a["name"] for a in entity["attributes"]]
        assert names[:3] == ["Id", "SinkCreatedOn", "SinkModifiedOn"] and names[-1] == "IsDelete"
        assert [n for n in names[3:-1] if not n.endswith("idtype")] == [c.name for c in table.columns]
        types = {a["name"]: a["dataType"] for a in entity["attributes"]}
        assert types["Id"] == "guid" and types["createdon"] == "dateTimeOffset" and types["IsDelete"] == "boolean"
        for partition in entity["partitions"]:
            assert partition["location"].startswith("https://") and ".dfs.core.windows.net/dataverse-" in \
                partition["location"]
            relative = partition["location"].split("/", 4)[4]
            assert (appended / relative).is_file() and relative == f"{table.logical_name}/{partition['name']}.csv"


def test_csv_dialect_no_header_quoting_round_trip(appended: Path, org: OrgData) -> None:
    raw = (appended / "lead" / "2025.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.endswith(b"\n") and b"\r\n" not in raw
    first = raw.split(b"\n", 1)[0].decode()
    assert re.match(rf"^{GUID},\"\d{{1,2}}/\d{{1,2}}/\d{{4}} ", first)  # no header; GUID bare, times quoted
    assert not first.endswith(",")
    names = {row["name"] for row in _rows(appended, "account")}
    assert set(org.rows["account"].get_column("name").to_list()) <= names  # '"Acme" Ltd', "Smith, Jones & ..."
    assert any('"' in n for n in names) and any("," in n for n in names)
    # embedded newlines and quotes survive the csv module
    frame = pl.DataFrame({"s": ['a "b"\nc', None, "x,y"], "n": [1, None, 3]})
    text = render(frame, [("s", "string"), ("n", "int")]).decode()
    assert list(csv.reader(io.StringIO(text))) == [['a "b"\nc', "1"], ["", ""], ["x,y", "3"]]
    assert text == "\"a \"\"b\"\"\nc\",1\n,\n\"x,y\",3\n"  # "" doubling; null = empty unquoted


def test_value_formats_follow_d5(appended: Path) -> None:
    for row in _rows(appended, "opportunity"):
        assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)", row["SinkModifiedOn"])
        assert row["IsDelete"] in ("True", "False")
        if row["IsDelete"] == "False":
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.0000000\+00:00", row["createdon"])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["modifiedon"])
            assert re.fullmatch(r"(-?\d+\.\d\d)?", row["estimatedvalue"])
            assert row["owneridtype"] == "systemuser" and re.fullmatch(r"\d+", row["statecode"])
            assert sink(row["SinkModifiedOn"]) > sink(row["SinkCreatedOn"]) - timedelta(seconds=1)


@pytest.mark.parametrize("table", LINK_TABLES)
def test_newest_version_is_the_live_row_and_deletes_are_rows(appended: Path, org: OrgData, table: str) -> None:
    rows = _rows(appended, table)
    latest = newest(rows)
    live = live_rows(org, table)
    alive = {i: r for i, r in latest.items() if r["IsDelete"] == "False"}
    assert set(alive) == set(live)
    for record_id, expected in live.items():
        got = alive[record_id]
        assert {k: got[k] for k in expected} == expected, record_id
    gone = set(org.deleted.filter(pl.col("table") == table).get_column("id").to_list())
    assert {i for i, r in latest.items() if r["IsDelete"] == "True"} == gone
    pk = TABLES[table].primary_id
    for row in rows:
        if row["IsDelete"] == "True":  # D6: only Id, pk, Sink* and IsDelete
            assert {k for k, v in row.items() if v} == {"Id", pk, "SinkCreatedOn", "SinkModifiedOn", "IsDelete"}


@pytest.mark.parametrize("table", LINK_TABLES)
def test_versions_per_record_are_the_batches_it_changed_in(appended: Path, org: OrgData, table: str) -> None:
    rows = _rows(appended, table)
    seen = {(r["Id"], r["versionnumber"], r["IsDelete"]) for r in rows}  # retried duplicates count once
    counts = pl.DataFrame({"id": [k[0] for k in seen]}, schema={"id": pl.Utf8}).group_by("id").len()
    expected = versions_expected(org, table, 900)
    joined = expected.join(counts, on="id", how="full", coalesce=True)
    assert joined.filter(pl.col("versions").fill_null(0) != pl.col("len").fill_null(0)).is_empty()
    assert joined.height == expected.height


def test_retries_duplicate_a_few_rows_with_a_later_sink_time(appended: Path) -> None:
    rows = [r for t in LINK_TABLES for r in _rows(appended, t)]
    by_key: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        by_key.setdefault((row["Id"], row["versionnumber"]), []).append(row)
    twice = [v for v in by_key.values() if len(v) > 1]
    assert 0 < len(twice) < len(rows) // 20
    for first, second in twice:
        assert sink(second["SinkModifiedOn"]) > sink(first["SinkModifiedOn"])
        assert {k: v for k, v in first.items() if k != "SinkModifiedOn"} == \
            {k: v for k, v in second.items() if k != "SinkModifiedOn"}


def test_append_after_advance_keeps_old_bytes_and_equals_a_fresh_export(appended: Path, org: OrgData,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "link"
    shutil.copytree(appended, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv") if "OptionsetMetadata" not in p.parts}
    later = simulate(7, 120, BASE_CLOCK + timedelta(days=20))
    result = export_link(later, out, LinkOptions())
    assert not result.noop and result.rows > 0
    grew = 0
    for relative, old in before.items():
        new = (out / relative).read_bytes()
        assert new.startswith(old), relative
        grew += len(new) > len(old)
    assert grew > 0
    fresh = tmp_path / "fresh"
    export_link(later, fresh, LinkOptions())
    for path in fresh.rglob("*.csv"):
        assert (out / path.relative_to(fresh)).read_bytes() == path.read_bytes(), path
    stamp = (out / CURSOR).stat().st_mtime_ns
    assert export_link(later, out, LinkOptions()).noop and (out / CURSOR).stat().st_mtime_ns == stamp


def test_a_killed_append_is_cut_back_on_the_next_export(appended: Path, org: OrgData, tmp_path: Path) -> None:
    out = tmp_path / "link"
    shutil.copytree(appended, out)
    with open(out / "lead" / "2025.csv", "ab") as handle:
        handle.write(b"torn,half-written row")  # appended by a killed export that never recorded its cursor
    later = simulate(7, 120, BASE_CLOCK + timedelta(days=20))
    export_link(later, out, LinkOptions())
    fresh = tmp_path / "fresh"
    export_link(later, fresh, LinkOptions())
    assert (out / "lead" / "2025.csv").read_bytes() == (fresh / "lead" / "2025.csv").read_bytes()


def test_in_place_holds_the_current_rows_only(org: OrgData, tmp_path: Path) -> None:
    out = tmp_path / "inplace"
    export_link(org, out, LinkOptions(mode="in-place"))
    for table in LINK_TABLES:
        rows = _rows(out, table)
        live = live_rows(org, table)
        assert sorted(r["Id"] for r in rows) == sorted(live) and all(r["IsDelete"] == "False" for r in rows)
    later = simulate(7, 120, BASE_CLOCK + timedelta(days=20))
    export_link(later, out, LinkOptions(mode="in-place"))
    assert sorted(r["Id"] for r in _rows(out, "lead")) == sorted(live_rows(later, "lead"))


def test_a_folder_of_another_export_or_other_files_is_refused(org: OrgData, appended: Path,
                                                              tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds another sandbox Link export: mode"):
        export_link(org, appended, LinkOptions(mode="in-place"))
    with pytest.raises(ConfigError, match="seed 7"):
        export_link(simulate(8, 120), appended, LinkOptions())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no sandbox Link export"):
        export_link(org, tmp_path / "other", LinkOptions())
    with pytest.raises(ConfigError, match="at least 15"):
        export_link(org, tmp_path / "x", LinkOptions(incremental=True, interval_minutes=5))


def test_collapsed_changes_are_truth_events_overwritten_in_their_batch(org: OrgData) -> None:
    quarter, day = collapsed_changes(org, 15), collapsed_changes(org, 24 * 60)
    assert quarter.height > 0 and day.height > quarter.height
    assert quarter.columns == org.truth.columns
    hs = 1_735_689_600  # HISTORY_START
    audits = org.audits.with_columns(batch=(pl.col("createdon").dt.epoch("s") - hs) // (24 * 3600))
    for event in day.head(20).to_dicts():
        batch = (int(event["timestamp"].timestamp()) - hs) // (24 * 3600)
        same = audits.filter(pl.col("_objectid_value") == event["object_id"], pl.col("batch") == batch)
        assert same.height > 1 and same.get_column("createdon").max() >= event["timestamp"]


def test_export_columns_match_model(appended: Path) -> None:
    names = attributes(appended / "model.json")
    for table in LINK_TABLES:
        assert names[table] == [n for n, _ in export_columns(TABLES[table])]


@pytest.mark.bench
@pytest.mark.parametrize("options", [LinkOptions(), LinkOptions(mode="in-place"), LinkOptions(incremental=True),
                                     LinkOptions(format="delta")], ids=["append", "inplace", "folders", "delta"])
def test_default_org_exports_in_under_20_seconds(options: LinkOptions, tmp_path: Path) -> None:
    org = simulate(42, 1000)
    result = export_link(org, tmp_path / "link", options)
    assert result.seconds < 20, result
