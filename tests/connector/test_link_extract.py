"""`extract_link` over hand-written exports (tests/connector/link_export.py, per docs/LINK.md): what lands, the
checkpoints, and each error. Expected values come from the rows the tests wrote, never from the reader."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from config.settings import load_settings
from config.tables import load_tables
from connector.extract import ExtractResult
from connector.lake import Lake
from connector.link import extract_link
from connector.metadata import cached_attributes, primary_ids
from connector.rows import column_specs, polars_schema
from connector.state import StateStore
from ground.errors import ConfigError, SourceUnavailable
from tests.connector.link_export import LEAD1, LEAD2, LEAD3, USER, LinkExport, line, tiny_org


def run(export: Path, data: Path) -> ExtractResult:
    settings = load_settings(_env_file=None, L2C_SOURCE="link", L2C_LINK_URL=str(export), L2C_DATA_DIR=str(data))
    return extract_link(settings)


def csv_export(root: Path, org: dict[str, list[dict[str, Any]]] | None = None) -> LinkExport:
    export = LinkExport(root)
    for table, rows in (org or tiny_org()).items():
        export.append(table, rows)
    export.write_model()
    export.write_metadata()
    return export


def landed(data: Path, table: str) -> pl.DataFrame:
    return Lake(data).scan(table).collect()


def test_settings_need_the_link_url_and_no_dataverse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="L2C_LINK_URL is not set"):
        load_settings(_env_file=None, L2C_SOURCE="link")
    settings = load_settings(_env_file=None, L2C_SOURCE="link", L2C_LINK_URL=str(tmp_path))
    assert not settings.uses_sandbox and settings.link_language == 1033


def test_an_append_only_export_lands_the_web_api_columns_labels_names_versions_and_deletions(tmp_path: Path) -> None:
    org = tiny_org()
    csv_export(tmp_path / "export", org)
    result = run(tmp_path / "export", tmp_path / "data")
    assert result.exit_code == 0, result.error_lines()
    data = tmp_path / "data"
    # The metadata cache the transform types the lake by: every declared column, pk = <table>id.
    attributes = cached_attributes(data / "state")
    assert primary_ids(data / "state")["lead"] == "leadid"
    for cfg in load_tables(None).table:
        if not Lake(data).has_rows(cfg.name):
            continue
        names = {a["LogicalName"]: a["AttributeType"] for a in attributes[cfg.name]}
        api = [f"_{c}_value" if names[c] in ("Lookup", "Owner", "Customer") else c for c in cfg.columns]
        expected = polars_schema(column_specs(attributes[cfg.name], api))
        schema = Lake(data).scan(cfg.name).collect_schema()
        assert {k: schema[k] for k in expected} == dict(expected), cfg.name
    leads = landed(data, "lead")
    rows = leads.filter(pl.col("_op") == "upsert").sort("_version")
    assert rows.get_column("_version").to_list() == [r["versionnumber"] for r in org["lead"] if "versionnumber" in r]
    first = rows.row(0, named=True)
    assert first["leadid"] == LEAD1 and first["companyname"] == 'Bikes "R" Us'
    assert first["leadsourcecode__label"] == "Web" and first["statecode__label"] == "Open"
    assert first["statuscode__label"] == "New" and first["estimatedamount"] == Decimal("1200.5000")
    assert (first["_ownerid_value"], first["_ownerid_value__label"], first["_ownerid_value__type"]) == (
        USER, "Dana Diaz", "systemuser")
    assert first["_parentaccountid_value__label"] == "Bikes Inc"
    assert rows.row(3, named=True)["_modifiedby_value__label"] == "Eli Ford"
    assert rows.row(1, named=True)["subject"] == "Line one\nline two"
    deletion = leads.filter(pl.col("_op") == "delete").row(0, named=True)
    assert deletion["leadid"] == LEAD3 and deletion["_deleted_at"] == org["lead"][-1]["SinkModifiedOn"]
    opp = landed(data, "opportunity").sort("_version").row(-1, named=True)
    assert opp["estimatedclosedate"] == date(2025, 4, 30) and opp["actualclosedate"] == date(2025, 3, 9)
    assert opp["salesstage__label"] == "Close" and opp["_customerid_value__type"] == "account"
    assert opp["_originatingleadid_value__label"] == "Ann Lee" and opp["discountpercentage"] == Decimal("2.5")
    assert (opp["_transactioncurrencyid_value__label"], opp["_transactioncurrencyid_value__type"]) == (
        "Euro", "transactioncurrency")


def test_a_second_run_lands_nothing_and_an_append_lands_only_the_new_complete_rows(tmp_path: Path) -> None:
    org = tiny_org()
    export = csv_export(tmp_path / "export", org)
    data = tmp_path / "data"
    run(tmp_path / "export", data)
    pages = sorted(p.name for p in (data / "raw").rglob("*.parquet"))
    again = run(tmp_path / "export", data)
    assert again.exit_code == 0 and sum(t.rows + t.deletions for t in again.tables.values()) == 0
    assert sorted(p.name for p in (data / "raw").rglob("*.parquet")) == pages
    # A retried commit (same Id + versionnumber) and a new version, then a half-written record.
    newer = {**org["opportunity"][-1], "name": "40 bikes, signed", "versionnumber": 2000,
             "SinkModifiedOn": datetime(2025, 3, 4, tzinfo=UTC), "modifiedon": datetime(2025, 3, 4, tzinfo=UTC)}
    export.append("opportunity", [org["opportunity"][-1], newer])
    path = tmp_path / "export" / "opportunity" / "2025.csv"
    half = line("opportunity", {**newer, "Id": "0f000000-0000-0000-0000-00000000000f", "versionnumber": 3000,
                                "opportunityid": "0f000000-0000-0000-0000-00000000000f"})
    with path.open("a") as handle:
        handle.write(half[: len(half) // 2])
    third = run(tmp_path / "export", data)
    assert third.tables["opportunity"].rows == 1
    assert landed(data, "opportunity").filter(pl.col("_version") == 2000).get_column("name").to_list() == [
        "40 bikes, signed"]
    state = StateStore(data).load("opportunity").link
    assert state is not None and state.files["opportunity/2025.csv"].consumed == path.stat().st_size - len(half) // 2
    with path.open("a") as handle:  # the writer finishes the record
        handle.write(half[len(half) // 2:])
    fourth = run(tmp_path / "export", data)
    assert fourth.tables["opportunity"].rows == 1 and fourth.tables["lead"].rows == 0


def test_a_rewritten_in_place_export_is_read_again_whole_and_records_gone_are_undated_deletions(
        tmp_path: Path) -> None:
    org = tiny_org()
    export = LinkExport(tmp_path / "export")
    latest: dict[str, dict[str, Any]] = {}
    for row in org["lead"]:
        if not row.get("IsDelete"):
            latest[row["Id"]] = row
    for table, rows in org.items():
        export.rewrite(table, list({r["Id"]: r for r in rows if not r.get("IsDelete")}.values()))
    export.write_model()
    export.write_metadata()
    data = tmp_path / "data"
    run(tmp_path / "export", data)
    current = Lake(data).current("lead", "leadid")
    assert sorted(current.get_column("leadid")) == sorted(latest)
    # In place: lead 2 updated, lead 3 hard-deleted (its row removed), files rewritten.
    updated = {**latest[LEAD2], "subject": "Call back", "versionnumber": 5000}
    export.rewrite("lead", [latest[LEAD1], updated])
    export.write_model()
    result = run(tmp_path / "export", data)
    assert result.tables["lead"].rows == 1 and result.tables["lead"].deletions == 1
    assert any("read again whole" in note for note in result.notes)
    gone = landed(data, "lead").filter(pl.col("_op") == "delete").row(0, named=True)
    assert gone["leadid"] == LEAD3 and gone["_deleted_at"] == gone["_extracted_at"]  # no date invented
    assert sorted(Lake(data).current("lead", "leadid").get_column("leadid")) == sorted([LEAD1, LEAD2])


def test_incremental_folders_read_only_complete_ones_in_time_order(tmp_path: Path) -> None:
    org = tiny_org()
    root = tmp_path / "export"
    export = LinkExport(root)
    leads = org["lead"]
    for table in ("systemuser", "transactioncurrency", "account"):
        export.append(table, org[table], folder="2025-03-03T09.00.00Z")
    export.append("lead", leads[:3], folder="2025-03-03T09.00.00Z")
    export.append("lead", leads[3:5], folder="2025-03-03T10.00.00Z")
    export.append("lead", leads[5:], folder="2025-03-03T11.00.00Z")  # no model.json: never finalised
    export.append("opportunity", org["opportunity"], folder="2025-03-03T12.00.00Z")  # the current one
    for folder in ("2025-03-03T09.00.00Z", "2025-03-03T10.00.00Z"):
        export.write_model(folder, partitions=False)
        export.write_metadata(folder)
    export.write_model(partitions=False)
    (root / "Changelog").mkdir()
    (root / "Changelog" / "changelog.info").write_text("2025-03-03T12.00.00Z\n")
    data = tmp_path / "data"
    first = run(root, data)
    assert first.tables["lead"].rows == 5 and first.tables["lead"].deletions == 0
    assert first.tables["opportunity"].rows == 0
    assert StateStore(data).load("lead").link.folder == "2025-03-03T10.00.00Z"  # type: ignore[union-attr]
    # The writer finishes 12:00 and starts 13:00: the opportunities land, the lead delete row of the abandoned
    # 11:00 folder is re-committed later (docs/LINK.md §3), here into 12:00.
    export.append("lead", leads[5:], folder="2025-03-03T12.00.00Z")
    export.write_model("2025-03-03T12.00.00Z", partitions=False)
    (root / "Changelog" / "changelog.info").write_text("2025-03-03T13.00.00Z\n")
    second = run(root, data)
    assert second.tables["opportunity"].rows == len(org["opportunity"]) and second.tables["lead"].deletions == 1
    assert run(root, data).tables["lead"].rows == 0


def test_a_delta_export_lands_the_newest_version_and_a_new_version_only_what_changed(tmp_path: Path) -> None:
    org = tiny_org()
    root = tmp_path / "export"
    export = LinkExport(root)
    latest = {t: list({r["Id"]: r for r in rows}.values()) for t, rows in org.items()}
    for table, rows in latest.items():
        export.write_delta(table, rows)
    export.write_delta_metadata()
    data = tmp_path / "data"
    first = run(root, data)
    assert first.exit_code == 0, first.error_lines()
    assert first.tables["lead"].rows == 2 and first.tables["lead"].deletions == 1  # lead 3: soft-deleted row
    lead = landed(data, "lead").filter(pl.col("leadid") == LEAD1).row(0, named=True)
    assert lead["statecode__label"] == "Qualified" and lead["_modifiedby_value__label"] == "Eli Ford"
    assert run(root, data).tables["lead"].rows == 0
    changed = [{**r, "subject": "Renewal", "versionnumber": 9000} if r["Id"] == LEAD1 else r for r in latest["lead"]]
    export.write_delta("lead", changed)
    third = run(root, data)
    assert (third.tables["lead"].rows, third.tables["lead"].deletions) == (1, 0)
    assert third.tables["opportunity"].rows == 0


def test_a_missing_root_or_one_that_is_no_export_is_source_unavailable(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere", tmp_path / "data")
    assert result.exit_code == 4 and "not a Synapse Link / Fabric Link export" in result.error_lines()[0]
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty", tmp_path / "data")
    assert result.exit_code == 4 and "has no model.json and no deltalake/" in result.error_lines()[0]


def test_a_bad_row_fails_its_table_alone_and_keeps_its_checkpoint(tmp_path: Path) -> None:
    export = csv_export(tmp_path / "export")
    data = tmp_path / "data"
    run(tmp_path / "export", data)
    before = StateStore(data).load("lead").link
    with (tmp_path / "export" / "lead" / "2025.csv").open("a") as handle:
        handle.write(f"{LEAD1}," + "x," * 40 + "\n")
    export.append("opportunity", [{**tiny_org()["opportunity"][0], "versionnumber": 7777}])
    result = run(tmp_path / "export", data)
    assert result.exit_code == 4 and isinstance(result.errors["lead"], SourceUnavailable)
    assert "lead/2025.csv: row 6 has more fields" in str(result.errors["lead"])
    assert StateStore(data).load("lead").link == before
    assert result.tables["opportunity"].rows == 1


def test_a_value_that_does_not_parse_names_file_row_and_column(tmp_path: Path) -> None:
    org = tiny_org()
    org["account"][0]["revenue"] = "12.345678"  # more decimals than money keeps: never rounded
    csv_export(tmp_path / "export", org)
    result = run(tmp_path / "export", tmp_path / "data")
    assert "account/2025.csv: row 1, column revenue: '12.345678'" in str(result.errors["account"])
    assert result.tables["lead"].rows > 0


def test_a_corrupt_delta_file_fails_its_table(tmp_path: Path) -> None:
    root = tmp_path / "export"
    export = LinkExport(root)
    for table, rows in tiny_org().items():
        export.write_delta(table, list({r["Id"]: r for r in rows}.values()))
    export.write_delta_metadata()
    for parquet in (root / "deltalake" / "lead_partitioned").rglob("*.parquet"):
        parquet.write_bytes(parquet.read_bytes()[:40])
    result = run(root, tmp_path / "data")
    assert result.exit_code == 4 and "lead_partitioned" in str(result.errors["lead"])
    assert StateStore(tmp_path / "data").load("lead").link is None
    assert result.tables["opportunity"].rows > 0


def test_a_declared_table_the_export_lacks_is_a_config_error_for_that_table(tmp_path: Path) -> None:
    org = tiny_org()
    csv_export(tmp_path / "export", org)
    model = json.loads((tmp_path / "export" / "model.json").read_text())
    model["entities"] = [e for e in model["entities"] if e["name"] != "invoice"]
    (tmp_path / "export" / "model.json").write_text(json.dumps(model))
    shutil.rmtree(tmp_path / "export" / "invoice", ignore_errors=True)
    result = run(tmp_path / "export", tmp_path / "data")
    assert result.exit_code == 2 and "table invoice does not exist in the Link export" in str(result.errors["invoice"])
    assert result.tables["lead"].rows > 0


def test_a_table_whose_initial_sync_is_not_completed_is_skipped_with_a_note(tmp_path: Path) -> None:
    csv_export(tmp_path / "export")
    model = json.loads((tmp_path / "export" / "model.json").read_text())
    for entity in model["entities"]:
        if entity["name"] == "opportunity":
            entity["annotations"][1]["value"] = "NotStarted"
    (tmp_path / "export" / "model.json").write_text(json.dumps(model))
    result = run(tmp_path / "export", tmp_path / "data")
    assert result.exit_code == 0 and "opportunity" not in result.errors
    assert "opportunity: not read: its initial sync in the Link export is NotStarted" in result.notes
    assert not Lake(tmp_path / "data").has_rows("opportunity") and result.tables["lead"].rows > 0
