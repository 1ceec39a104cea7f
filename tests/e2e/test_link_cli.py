"""`l2c run` with L2C_SOURCE=link over a hand-written append-only export of a tiny org (docs/LINK.md): the event
log has the version-diff events the test computes from the rows it wrote, a rerun lands nothing, and an
appended export lands only the new rows and gives the same log as one run over the final export."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from tests.connector.link_export import LEAD1, OPP2, LinkExport, tiny_org
from tests.e2e.conftest import run_l2c

# (table, column, value it moves to, activity): the snapshot conditions of config/activities.toml's rules.
MOVES = [("lead", "statecode", 1, "Lead Qualified"), ("lead", "statecode", 2, "Lead Disqualified"),
         ("opportunity", "salesstage", 1, "Stage Entered: Develop"),
         ("opportunity", "salesstage", 2, "Stage Entered: Propose"),
         ("opportunity", "salesstage", 3, "Stage Entered: Close"),
         ("opportunity", "statecode", 1, "Opportunity Won"), ("opportunity", "statecode", 2, "Opportunity Lost"),
         ("opportunity", "statecode", 0, "Opportunity Reopened")]
NAMES = {"0a000000-0000-0000-0000-000000000001": "Dana Diaz", "0a000000-0000-0000-0000-000000000002": "Eli Ford"}


def expected_moves(org: dict[str, list[dict[str, Any]]]) -> set[tuple[str, str, datetime, str]]:
    """(object id, activity, modifiedon of the newer version, its modifiedby's name) of every move between two
    consecutive versions of a record, by versionnumber."""
    out = set()
    for table, column, value, activity in MOVES:
        versions: dict[str, list[dict[str, Any]]] = {}
        for row in org[table]:
            if not row.get("IsDelete"):
                versions.setdefault(row["Id"], []).append(row)
        for rows in versions.values():
            rows = sorted(rows, key=lambda r: r["versionnumber"])
            for older, newer in zip(rows, rows[1:], strict=False):
                if newer[column] == value and older[column] != value:
                    out.add((newer["Id"], activity, newer["modifiedon"], NAMES[newer["modifiedby"]]))
    return out


def write(root: Path, org: dict[str, list[dict[str, Any]]]) -> None:
    export = LinkExport(root)
    for table, rows in org.items():
        export.append(table, rows)
    export.write_model()
    export.write_metadata()


def link_events(data: Path) -> set[tuple[str, str, datetime, str]]:
    log = pl.read_parquet(data / "event_log.parquet").filter(pl.col("source") == "link_versions")
    return {(r["object_id"], r["activity"], r["timestamp"], r["resource"]) for r in log.iter_rows(named=True)}


def test_l2c_run_reads_a_link_export_incrementally_and_equals_a_full_run(tmp_path: Path) -> None:
    org = tiny_org()
    root = tmp_path / "export"
    first_half = {t: rows[: len(rows) // 2 + 1] for t, rows in org.items()}
    write(root, first_half)
    env = {"L2C_SOURCE": "link", "L2C_LINK_URL": str(root)}
    done = run_l2c(tmp_path, "run", **env)
    assert done.returncode == 0, done.stderr
    assert "Synapse Link / Fabric Link export" in done.stdout and "sandbox" not in done.stdout.lower()
    assert link_events(tmp_path / "data") == expected_moves(first_half)

    again = run_l2c(tmp_path, "run", **env)
    assert again.returncode == 0 and re.search(r"extract \S+: 0 rows", again.stdout), again.stdout

    # The Link appends the rest, then OPP2 is reopened.
    rest = {t: rows[len(rows) // 2 + 1:] for t, rows in org.items()}
    lost = next(r for r in org["opportunity"] if r["Id"] == OPP2 and r["statecode"] == 2)
    when = lost["modifiedon"] + timedelta(days=1)
    reopened = {**lost, "statecode": 0, "statuscode": 1, "versionnumber": 5000, "modifiedon": when,
                "SinkModifiedOn": when, "modifiedby": "0a000000-0000-0000-0000-000000000002"}
    rest["opportunity"].append(reopened)
    export = LinkExport(root)
    for table, rows in rest.items():
        export.append(table, rows)
    final = {t: org[t] + ([reopened] if t == "opportunity" else []) for t in org}
    landed = run_l2c(tmp_path, "run", **env)
    assert landed.returncode == 0, landed.stderr
    new_rows = sum(1 for rows in rest.values() for row in rows if not row.get("IsDelete"))  # deletions apart
    assert re.search(rf"extract \S+: {new_rows} rows", landed.stdout), landed.stdout
    expected = expected_moves(final)
    assert (OPP2, "Opportunity Reopened", when, "Eli Ford") in expected
    assert link_events(tmp_path / "data") == expected
    assert any(e[0] == LEAD1 and e[1] == "Lead Qualified" for e in expected)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    full = run_l2c(fresh, "run", **env)
    assert full.returncode == 0, full.stderr
    incremental = pl.read_parquet(tmp_path / "data" / "event_log.parquet").sort("event_id")
    rebuilt = pl.read_parquet(fresh / "data" / "event_log.parquet").sort("event_id")
    assert incremental.equals(rebuilt)
    deleted = pl.read_parquet(tmp_path / "data" / "event_log.parquet").filter(pl.col("object_id") == LEAD1)
    assert deleted.height > 0 and all(t.tzinfo is not None for t in deleted.get_column("timestamp"))
    assert datetime(2025, 1, 1, tzinfo=UTC) < when
