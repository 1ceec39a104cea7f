"""A Link export's `audit` table (docs/LINK.md §7, D10) lands as raw/audit + raw/audit_details in the Web API
path's shapes, so the transform gives source = "audit" events from it unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from config.settings import load_settings
from connector.lake import Lake
from connector.link import extract_link
from tests.connector.link_export import LEAD1, OPP1, USER, USER2, LinkExport, tiny_org
from transforms.build import transform

AUDIT_SCHEMA = {"auditid": pl.Utf8, "createdon": pl.Datetime("us", "UTC"), "operation": pl.Int64,
                "action": pl.Int64, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "userid": pl.Utf8,
                "callinguserid": pl.Utf8, "transactionid": pl.Utf8, "attributemask": pl.Utf8, "changedata": pl.Utf8,
                "IsDelete": pl.Boolean, "SinkModifiedOn": pl.Datetime("us", "UTC"), "Id": pl.Utf8}


def changes(*attributes: tuple[str, str | None, str | None]) -> str:
    return json.dumps({"changedAttributes": [{"logicalName": n, "oldValue": o, "newValue": v}
                                             for n, o, v in attributes]})


def test_the_audit_table_lands_as_the_web_api_audit_and_gives_audit_events(tmp_path: Path) -> None:
    root = tmp_path / "export"
    export = LinkExport(root)
    for table, rows in tiny_org().items():
        export.write_delta(table, list({r["Id"]: r for r in rows}.values()))
    export.write_delta_metadata()
    at = [datetime(2025, 3, 3, 17, 0, 5, tzinfo=UTC), datetime(2025, 3, 3, 13, 30, 2, tzinfo=UTC),
          datetime(2025, 3, 3, 18, 0, 7, tzinfo=UTC)]
    audit = [  # (auditid, createdon, operation, action, objecttypecode, objectid, userid, changedata)
        ("a0000000-0000-0000-0000-000000000001", at[0], 2, 2, "opportunity", OPP1, USER,
         changes(("salesstage", "0", "1"), ("ownerid", f"systemuser,{USER}", f"systemuser,{USER2}"))),
        ("a0000000-0000-0000-0000-000000000002", at[1], 2, 24, "4", LEAD1, USER2, changes(("statecode", "0", "1"))),
        ("a0000000-0000-0000-0000-000000000003", at[2], 2, 2, "opportunity", OPP1, USER2,
         changes(("salesstage", "1", "2"), ("name", None, 'Big "one"'))),
    ]
    frame = pl.DataFrame([(a, c, o, act, t, obj, u, u, None, None, cd, False, c, a)
                          for a, c, o, act, t, obj, u, cd in audit], schema=AUDIT_SCHEMA, orient="row")
    write_deltalake(str(root / "deltalake" / "audit_partitioned"), frame.to_arrow())
    settings = load_settings(_env_file=None, L2C_SOURCE="link", L2C_LINK_URL=str(root),
                             L2C_DATA_DIR=str(tmp_path / "data"))
    result = extract_link(settings)
    assert result.exit_code == 0, result.error_lines()
    assert result.audit is not None and (result.audit.rows, result.audit.details) == (3, 3)
    lake = Lake(tmp_path / "data")
    rows = lake.scan("audit").collect().sort("createdon")
    assert rows.get_column("objecttypecode").to_list() == ["lead", "opportunity", "opportunity"]
    assert rows.get_column("action__label").to_list() == ["Qualify", "Update", "Update"]
    assert rows.get_column("_userid_value__label").to_list() == ["Eli Ford", "Dana Diaz", "Eli Ford"]
    details = lake.scan("audit_details").collect().sort("auditid")
    assert json.loads(details.item(0, "old_values")) == {"salesstage": 0, "_ownerid_value": USER}
    assert json.loads(details.item(0, "new_values")) == {"salesstage": 1, "_ownerid_value": USER2}
    assert json.loads(details.item(2, "new_values")) == {"salesstage": 2, "name": 'Big "one"'}
    assert json.loads(details.item(2, "old_values")) == {"salesstage": 1, "name": None}
    assert extract_link(settings).audit.rows == 0  # type: ignore[union-attr]

    transform(settings)
    log = pl.read_parquet(tmp_path / "data" / "event_log.parquet").filter(pl.col("source") == "audit")
    got = {(r["object_id"], r["activity"], r["timestamp"], r["resource"]) for r in log.iter_rows(named=True)}
    assert got == {(OPP1, "Stage Entered: Develop", at[0], "Dana Diaz"), (LEAD1, "Lead Qualified", at[1], "Eli Ford"),
                   (OPP1, "Stage Entered: Propose", at[2], "Eli Ford")}
