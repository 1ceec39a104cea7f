"""The Delta layout of the sandbox's Link export (docs/LINK.md §6, §7, D2, D6, D10), read back with deltalake."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from sandbox.link_export import LinkOptions, export_link
from sandbox.link_versions import LINK_TABLES
from sandbox.orgdata import BASE_CLOCK, OrgData
from sandbox.schema import TABLES
from sandbox.simulator import simulate

OPTIONS = LinkOptions(format="delta")
META = ("OptionsetMetadata", "GlobalOptionsetMetadata", "StateMetadata", "StatusMetadata", "TargetMetadata")


@pytest.fixture(scope="module")
def exported(org: OrgData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "link"
    export_link(org, out, OPTIONS)
    return out


def _read(root: Path, name: str) -> pl.DataFrame:
    return pl.from_arrow(DeltaTable(str(root / "deltalake" / f"{name}_partitioned")).to_pyarrow_table())  # type: ignore[return-value]


@pytest.mark.parametrize("table", LINK_TABLES)
def test_latest_row_per_id_is_the_live_row(exported: Path, org: OrgData, table: str) -> None:
    frame = _read(exported, table)
    assert frame.get_column("Id").n_unique() == frame.height  # MERGE: one row per Id
    assert frame.schema["IsDelete"] == pl.Boolean and frame.schema["SinkModifiedOn"] == pl.Datetime("us", "UTC")
    assert frame.schema["versionnumber"] == pl.Int64 and frame.schema["PartitionId"] == pl.Utf8
    t = TABLES[table]
    alive = frame.filter(~pl.col("IsDelete"))
    live = org.rows[table]
    assert sorted(alive.get_column("Id").to_list()) == sorted(live.get_column(t.primary_id).to_list())
    expected = live.rename({c.api_name: c.name for c in t.columns}).sort(t.primary_id)
    got = alive.sort("Id").select(expected.columns)
    for c in t.columns:
        want = expected.get_column(c.name)
        if want.dtype == pl.Date:
            want = want.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        elif want.dtype == pl.Float64:
            want = pl.Series([None if v is None else Decimal(f"{v:.2f}") for v in want.to_list()])
            assert got.get_column(c.name).to_list() == want.to_list(), c.name
            continue
        assert got.get_column(c.name).to_list() == want.to_list(), c.name
    assert (alive.get_column("PartitionId") == alive.get_column("createdon").dt.year().cast(pl.Utf8)).all()
    gone = org.deleted.filter(pl.col("table") == table).get_column("id").to_list()
    assert sorted(frame.filter(pl.col("IsDelete")).get_column("Id").to_list()) == sorted(gone)


def test_metadata_tables_are_delta_tables(exported: Path) -> None:
    for name in META:
        assert _read(exported, name).height > 0 or name == "GlobalOptionsetMetadata", name
    status = _read(exported, "StatusMetadata")
    assert status.columns == ["EntityName", "State", "Status", "IsUserLocalizedLabel", "LocalizedLabelLanguageCode",
                              "LocalizedLabel"]
    won = status.filter(pl.col("EntityName") == "opportunity", pl.col("Status") == 3)
    assert won.select("State", "LocalizedLabel").row(0) == (1, "Won")


def _api_value(column: Any, text: str | None) -> Any:
    """A §7 changedata value decoded back to the Web API JSON value of the simulator's _old/_new."""
    if text is None:
        return None
    if column.is_lookup:
        target, _, guid = text.partition(",")
        assert target == column.targets[0]
        return guid
    if column.type == "DateTime":
        if column.date_only and column.behavior == "DateOnly":
            assert text.endswith("T00:00:00Z")
            return date.fromisoformat(text[:10]).isoformat()
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
        return text
    if column.type in ("Integer", "Picklist", "State", "Status", "BigInt"):
        return int(text)
    if column.type in ("Money", "Decimal"):
        return float(text)
    if column.type == "Boolean":
        assert text in ("True", "False")
        return text == "True"
    return text


def test_audit_table_decodes_back_to_the_simulator_audits(exported: Path, org: OrgData) -> None:
    audit = _read(exported, "audit")
    assert audit.height == org.audits.height
    joined = audit.join(org.audits, on="auditid", suffix="_sim")
    assert joined.height == org.audits.height
    assert (joined.get_column("objectid") == joined.get_column("_objectid_value")).all()
    assert (joined.get_column("createdon") == joined.get_column("createdon_sim")).all()
    assert set(audit.get_column("objecttypecode").unique()) <= set(LINK_TABLES)
    for row in joined.to_dicts():
        table = TABLES[row["objecttypecode"]]
        old, new = json.loads(row["_old"]), json.loads(row["_new"])
        changed = json.loads(row["changedata"])["changedAttributes"]
        decoded_old, decoded_new = {}, {}
        for item in changed:
            column = table.by_name[item["logicalName"]]
            decoded_old[column.api_name] = _api_value(column, item["oldValue"])
            decoded_new[column.api_name] = _api_value(column, item["newValue"])
        if row["operation"] == 1:
            assert decoded_new == new and all(v is None for v in decoded_old.values())
        elif row["operation"] == 3:
            assert decoded_old == old and all(v is None for v in decoded_new.values())
        else:
            assert (decoded_old, decoded_new) == (old, new), row["auditid"]


def test_advance_adds_a_delta_version(exported: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "link"
    shutil.copytree(exported, out)
    version = DeltaTable(str(out / "deltalake" / "lead_partitioned")).version()
    later = simulate(7, 120, BASE_CLOCK + timedelta(days=20))
    export_link(later, out, OPTIONS)
    table = DeltaTable(str(out / "deltalake" / "lead_partitioned"))
    assert table.version() == version + 1
    leads = pl.from_arrow(table.to_pyarrow_table())
    assert sorted(leads.filter(~pl.col("IsDelete")).get_column("Id").to_list()) == \
        sorted(later.rows["lead"].get_column("leadid").to_list())
    assert _read(out, "audit").height == later.audits.height
    assert export_link(later, out, OPTIONS).noop
