"""Late batches in the sandbox's Link export (docs/LINK.md §3, D6, D7; sandbox/link_late.py): an abandoned
incremental folder whose rows the next folder commits again, and append-only rows written after a later batch's.
What is late is found from the export's own structure (a folder without model.json, a file out of time order)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from sandbox.link_export import CURSOR, LinkOptions, export_link
from sandbox.link_late import is_late
from sandbox.link_versions import LINK_TABLES, Cycles
from sandbox.orgdata import BASE_CLOCK, HISTORY_START, OrgData
from sandbox.simulator import simulate
from tests.sandbox.link_reading import Row, attributes, live_rows, newest, read_rows, sink, table_files

INCREMENTAL = LinkOptions(incremental=True)
VERSION = ("Id", "versionnumber", "IsDelete")


@pytest.fixture(scope="module")
def folders(org: OrgData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("late") / "incremental"
    export_link(org, out, INCREMENTAL)
    return out


def _timestamped(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[:2] == "20")


def _folder_rows(root: Path, folder: str) -> dict[str, list[Row]]:
    names = attributes(root / "model.json")  # the root model.json: every table's schema (D2)
    return {t: read_rows(sorted((root / folder / t).glob("*.csv")), names[t]) for t in LINK_TABLES}


def _abandoned(root: Path) -> list[str]:
    current = (root / "Changelog" / "changelog.info").read_text(encoding="utf-8").strip()
    return [f for f in _timestamped(root) if f < current and not (root / f / "model.json").exists()
            and any((root / f / t).is_dir() for t in LINK_TABLES)]


def test_an_abandoned_folder_has_no_model_json_and_its_rows_are_in_the_next_folder(folders: Path) -> None:
    abandoned = _abandoned(folders)
    assert abandoned, "the org has a late batch"
    log = (folders / "Changelog" / "Synapse.log").read_text(encoding="utf-8").splitlines()
    for folder in abandoned:
        assert folder not in log
        after = [f for f in log if f > folder]
        assert after, folder
        following = _folder_rows(folders, after[0])
        for table, rows in _folder_rows(folders, folder).items():
            again = {tuple(r[k] for k in VERSION): r for r in following[table]}
            own_sinks = {sink(r["SinkModifiedOn"]) for r in following[table]}
            for row in rows:
                copy = again[tuple(row[k] for k in VERSION)]
                assert {k: v for k, v in copy.items() if k != "SinkModifiedOn"} == \
                    {k: v for k, v in row.items() if k != "SinkModifiedOn"}
                assert sink(copy["SinkModifiedOn"]) > sink(row["SinkModifiedOn"])
                assert sink(copy["SinkModifiedOn"]) == min(own_sinks)  # the later folder's own write time


@pytest.mark.parametrize("table", LINK_TABLES)
def test_the_latest_row_per_record_of_the_readable_folders_is_the_live_row(folders: Path, org: OrgData,
                                                                           table: str) -> None:
    skipped = set(_abandoned(folders))
    rows = [r for f in _timestamped(folders) if f not in skipped for r in _folder_rows(folders, f)[table]]
    latest = newest(rows)
    alive = {i: r for i, r in latest.items() if r["IsDelete"] == "False"}
    live = live_rows(org, table)
    assert set(alive) == set(live)
    for record_id, expected in live.items():
        assert {k: alive[record_id][k] for k in expected} == expected, record_id


def _out_of_order(root: Path) -> list[tuple[Row, Row]]:
    """(row, an earlier row of the same file with a later SinkModifiedOn) per row written after a later batch."""
    found = []
    names = attributes(root / "model.json")
    for table in LINK_TABLES:
        for path in table_files(root, table):
            newest_so_far: Row | None = None
            for row in read_rows([path], names[table]):
                if newest_so_far and sink(row["SinkModifiedOn"]) < sink(newest_so_far["SinkModifiedOn"]):
                    found.append((row, newest_so_far))
                elif newest_so_far is None or sink(row["SinkModifiedOn"]) > sink(newest_so_far["SinkModifiedOn"]):
                    newest_so_far = row
    return found


def test_append_only_writes_a_late_batchs_rows_after_a_later_batchs(org: OrgData, tmp_path: Path) -> None:
    out = tmp_path / "flat"
    export_link(org, out, LinkOptions())
    late = _out_of_order(out)
    assert late, "a late batch"
    for row, before in late:
        # a whole cycle earlier, not a retry's duplicate (those come later, within the cycle)
        assert sink(before["SinkModifiedOn"]) - sink(row["SinkModifiedOn"]) > timedelta(minutes=10)
    for table in LINK_TABLES:  # still the live rows, file order aside (D6)
        latest = newest(read_rows(table_files(out, table), attributes(out / "model.json")[table]))
        assert {i for i, r in latest.items() if r["IsDelete"] == "False"} == set(live_rows(org, table))


def _late_batch(org: OrgData, cycles: Cycles) -> int:
    """The first late batch of the org's history in which a lead changed (a test setup choice)."""
    starts = org.audits.filter(pl.col("objecttypecode") == "lead").get_column("createdon").dt.epoch("s")
    batches = sorted({(int(t) - int(HISTORY_START.timestamp())) // cycles.interval_s for t in starts})
    return next(b for b in batches if b >= 0 and is_late(b, org.seed))


@pytest.mark.parametrize("options", [LinkOptions(), INCREMENTAL], ids=["append-only", "incremental"])
def test_an_export_that_stops_at_a_late_batch_continues_as_a_fresh_export(org: OrgData, options: LinkOptions,
                                                                          tmp_path: Path) -> None:
    cycles = Cycles(options.interval_minutes * 60)
    batch = _late_batch(org, cycles)
    stopped = simulate(7, 120, datetime.fromtimestamp(cycles.end_of(batch) + 30, UTC))  # the late batch is the newest
    out = tmp_path / "link"
    export_link(stopped, out, options)
    assert json.loads((out / CURSOR).read_text(encoding="utf-8"))["uncommitted"]  # the late rows wait
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.csv") if "OptionsetMetadata" not in p.parts}
    export_link(org, out, options)
    fresh = tmp_path / "fresh"
    export_link(org, fresh, options)
    for relative, old in before.items():
        assert (out / relative).read_bytes().startswith(old), relative  # only ever appended
    for path in fresh.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".log", ".info"):
            assert (out / path.relative_to(fresh)).read_bytes() == path.read_bytes(), path
    assert {p.relative_to(fresh) for p in fresh.rglob("model.json")} == \
        {p.relative_to(out) for p in out.rglob("model.json")}
    assert BASE_CLOCK > stopped.clock
    shutil.rmtree(fresh)
