"""Issue #10's acceptance: extraction against the sandbox over HTTPS lands exactly the org's rows, changes,
deletions and the audit details the rules need; it survives throttling, missing features and SIGKILL.

Expected values come from the simulator's OrgData (the org's own record), never from the connector.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from config.tables import load_tables
from connector.audit import BATCH_SIZE
from connector.extract import extract
from connector.lake import Lake
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.schema import TABLES
from sandbox.webapi import PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY
from tests.conftest import settings_for
from tests.connector.conftest import expected_details

L2C = str(Path(sys.executable).with_name("l2c"))




def assert_lake_matches_org(lake: Lake, sandbox: Sandbox) -> None:
    """Every declared table's live rows equal the org's rows at its clock, column by column."""
    for cfg in load_tables().table:
        table = TABLES[cfg.name]
        pk = table.primary_id
        org = sandbox.org.rows[cfg.name]
        landed = lake.current(cfg.name, pk)
        assert sorted(landed.get_column(pk).to_list()) == sorted(org.get_column(pk).to_list()), cfg.name
        keep = [pk, "versionnumber"] + (["statecode"] if "statecode" in org.columns else [])
        joined = org.select(keep).join(landed, on=pk, how="left", suffix="_lake")
        assert (joined.get_column("versionnumber") == joined.get_column("_version")).all(), cfg.name
        if "statecode" in org.columns:
            assert (joined.get_column("statecode") == joined.get_column("statecode_lake")).all(), cfg.name




@pytest.fixture(scope="module")
def org_10k(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Sandbox(tmp_path_factory.mktemp("sandbox10k"), OrgState(seed=11, leads=10_000)) as sandbox:
        yield sandbox


def test_full_extract_of_10k_leads_lands_exactly_the_org(org_10k: Sandbox, tmp_path: Path) -> None:
    result = extract(settings_for(org_10k, tmp_path))
    assert result.exit_code == 0, result.errors
    lake = Lake(tmp_path)
    assert_lake_matches_org(lake, org_10k)
    audit = lake.current("audit", "auditid")
    assert sorted(audit.get_column("auditid").to_list()) == sorted(
        org_10k.org.audits.filter(pl.col("objecttypecode").is_in([t.name for t in load_tables().audited]))
        .get_column("auditid").to_list())
    details = lake.scan("audit_details")
    assert details is not None
    landed = details.select("auditid").collect().get_column("auditid").to_list()
    needed = expected_details(org_10k)
    assert set(landed) == needed
    # Batches sent during the listing and the final sweep never ask for a detail twice: each landed once, in
    # the fewest $batch requests of 500.
    assert len(landed) == len(needed)
    assert result.requests["audit_detail"]["requests"] == math.ceil(len(needed) / BATCH_SIZE)
    assert result.requests["audit_detail"]["parts"] == len(needed)


def test_incremental_after_advance_lands_the_changes_and_a_quiet_run_costs_one_request(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=5, leads=600)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        before = Lake(tmp_path / "data").current("quote", "quoteid").height
        sandbox.advance(6)  # within the 7 days a delta token lives
        result = extract(settings)
        assert result.exit_code == 0, result.errors
        assert sum(r.deletions for r in result.tables.values()) > 0  # the advance deleted something
        assert_lake_matches_org(Lake(tmp_path / "data"), sandbox)
        assert Lake(tmp_path / "data").current("quote", "quoteid").height != before
        quiet = extract(settings)
        assert quiet.exit_code == 0
        tables = len(load_tables().table)
        # one delta call per table plus the audit query
        assert quiet.requests["total"]["requests"] <= tables + 1, quiet.requests


def test_an_expired_delta_token_resyncs_and_reconciles_deletions(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=6, leads=1000)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        first = sandbox.org
        sandbox.advance(9)  # past organization.expirechangetrackingindays (7)
        # Records landed by the first run and deleted since (one created and deleted in between is never seen).
        existed = pl.concat([first.rows[t].select(pl.col(TABLES[t].primary_id).alias("id")) for t in first.rows])
        deleted = sandbox.org.deleted.filter(pl.col("version") > first.max_version).join(existed, on="id")
        assert deleted.height > 0, "precondition: the org deleted something in those days"
        result = extract(settings)
        assert result.exit_code == 0, result.errors
        assert any("delta token expired" in note for note in result.notes)
        assert sum(r.deletions for r in result.tables.values()) == deleted.height
        assert_lake_matches_org(Lake(tmp_path / "data"), sandbox)


def test_throttled_extract_is_identical_and_never_early(tmp_path: Path) -> None:
    options = SandboxOptions(throttle_fraction=0.3, throttle_retry_after=1, throttle_seed=3)
    with Sandbox(tmp_path / "calm", OrgState(seed=8, leads=300)) as calm:
        assert extract(settings_for(calm, tmp_path / "a")).exit_code == 0
    with Sandbox(tmp_path / "storm", OrgState(seed=8, leads=300), options) as storm:
        result = extract(settings_for(storm, tmp_path / "b", L2C_MAX_CONCURRENCY=4))
        assert result.exit_code == 0, result.errors
        assert result.requests["total"]["429s"] > 0
        assert storm.protection.violations(grace_s=0.5) == []
    for name in [t.name for t in load_tables().table] + ["audit"]:
        assert Lake(tmp_path / "a").fingerprint(name) == Lake(tmp_path / "b").fingerprint(name), name


def test_without_change_tracking_and_audit_the_run_completes_and_says_so(tmp_path: Path) -> None:
    options = SandboxOptions(change_tracking_off={"lead"},
                             withdrawn_privileges={PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY})
    with Sandbox(tmp_path / "sb", OrgState(seed=2, leads=300), options) as sandbox:
        result = extract(settings_for(sandbox, tmp_path / "data"))
        assert result.exit_code == 0, result.errors
        assert result.tables["lead"].mode == "watermark"
        notes = " ".join(result.notes)
        assert "change tracking is off" in notes and "audit history not readable" in notes
        assert_lake_matches_org(Lake(tmp_path / "data"), sandbox)


def test_sigkill_at_random_points_then_rerun_gives_the_same_lake(tmp_path: Path) -> None:
    options = SandboxOptions()
    options.faults.latency_ms = 40  # a full run takes many seconds, so kills land mid-way
    with Sandbox(tmp_path / "sb", OrgState(seed=4, leads=1500), options) as sandbox:
        reference = tmp_path / "reference"
        assert extract(settings_for(sandbox, reference, L2C_PAGE_SIZE=100)).exit_code == 0
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAVERSE_", "AZURE_", "L2C_"))}
        env.update(sandbox.env())
        env.update(L2C_DATA_DIR=str(tmp_path / "killed"), L2C_PAGE_SIZE="100")
        rng = random.Random(20261123)
        kills = 0
        for _ in range(12):
            proc = subprocess.Popen([L2C, "extract"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + rng.uniform(0.4, 1.5)
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        assert kills >= 10
        final = subprocess.run([L2C, "extract"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
        for name in [t.name for t in load_tables().table] + ["audit", "audit_details"]:
            assert Lake(reference).fingerprint(name) == Lake(tmp_path / "killed").fingerprint(name), name


# A child `l2c extract` SIGKILLed right after the lead table's resume point is saved: its first page is landed,
# the rest of the initial sync is not.
KILL_AFTER_LEAD_RESUME = """
import os, signal, sys
from connector.state import StateStore
real_save = StateStore.save
def save(self, state):
    path = real_save(self, state)
    if state.table == "lead" and state.resume:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
StateStore.save = save
from l2c.cli import main
sys.exit(main(["extract"]))
"""


def test_an_initial_sync_resumed_days_later_loses_no_change_made_meanwhile(tmp_path: Path) -> None:
    # The delta link's start is the sync's first request ([PD] use-change-tracking-synchronize-data-external-
    # systems.md): the rows of the landed first page that changed before the resume come in the first delta.
    with Sandbox(tmp_path / "sb", OrgState(seed=42, leads=600),
                 SandboxOptions(expire_change_tracking_days=90)) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAVERSE_", "AZURE_", "L2C_"))}
        env.update(sandbox.env(), L2C_DATA_DIR=str(tmp_path / "data"), L2C_PAGE_SIZE="500")
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_LEAD_RESUME], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        first_page = Lake(tmp_path / "data").current("lead", "leadid")
        assert 0 < first_page.height < sandbox.org.rows["lead"].height  # one page of the sync, not all
        sandbox.advance(10)
        now = sandbox.org.rows["lead"].select("leadid", "versionnumber")
        changed = first_page.join(now, on="leadid").filter(pl.col("versionnumber") > pl.col("_version"))
        assert changed.height > 0, "precondition: the days changed a lead of the landed page"
        settings = settings_for(sandbox, tmp_path / "data", L2C_PAGE_SIZE=500)
        assert extract(settings).exit_code == 0  # resumes the sync at its nextLink
        assert extract(settings).exit_code == 0  # the first delta
        assert_lake_matches_org(Lake(tmp_path / "data"), sandbox)


def test_first_audit_backfill_is_split_into_ranges_read_side_by_side(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=9, leads=800)) as sandbox:
        result = extract(settings_for(sandbox, tmp_path / "data", L2C_MAX_CONCURRENCY=4, L2C_PAGE_SIZE=500))
        assert result.exit_code == 0, result.errors
        streams = Lake(tmp_path / "data").scan("audit").select("_stream").unique().collect().get_column("_stream")
        assert sorted(s.rsplit("-", 1)[1] for s in streams.to_list()) == ["r00", "r01", "r02", "r03"]
        landed = Lake(tmp_path / "data").current("audit", "auditid").height
        audited = [t.name for t in load_tables().audited]
        assert landed == sandbox.org.audits.filter(pl.col("objecttypecode").is_in(audited)).height
        assert not list((tmp_path / "data" / "state").glob("audit-range-*"))  # plans removed once complete


def test_a_table_without_change_tracking_gets_its_deletions_from_the_audit(tmp_path: Path) -> None:
    options = SandboxOptions(change_tracking_off={"quote", "salesorder", "invoice"})
    with Sandbox(tmp_path / "sb", OrgState(seed=6, leads=1000), options) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        first = sandbox.org
        sandbox.advance(12)  # a watermark has no token to expire
        gone = sandbox.org.deleted.filter(pl.col("version") > first.max_version)
        assert gone.height > 0, "precondition: the org deleted quotes, orders or invoices in those days"
        result = extract(settings)
        assert result.exit_code == 0, result.errors
        assert result.audit is not None and sum(result.audit.deletions.values()) == gone.height
        assert_lake_matches_org(Lake(tmp_path / "data"), sandbox)


def test_audit_is_read_by_its_watermark_whatever_the_metadata_says_of_change_tracking(tmp_path: Path) -> None:
    """The docs list Audit among the system tables with change tracking on, the sandbox can say either; l2c reads
    audit by its createdon watermark in both cases (connector/audit.py AUDIT_READ_MODE): the same rows land and
    no request ever asks `audits` for a tracked read (nor a $batch part)."""
    landed: dict[bool, pl.DataFrame] = {}
    for tracked in (True, False):
        options = SandboxOptions(change_tracking_off=set() if tracked else {"audit"})
        with Sandbox(tmp_path / f"sb-{tracked}", OrgState(seed=3, leads=300), options) as sandbox:
            assert sandbox.server is not None
            real = sandbox.server.app
            seen: list[tuple[str, str, bytes]] = []
            said: list[bool] = []  # what EntityDefinitions told the connector about audit

            def record(request: Any, real: Any = real, seen: list[Any] = seen, said: list[bool] = said) -> Any:
                seen.append((request.path, request.headers.get("Prefer", ""), request.body))
                response = real(request)
                if request.path.endswith("/EntityDefinitions") and response.status == 200:
                    said += [row["ChangeTrackingEnabled"] for row in json.loads(response.body)["value"]
                             if row["LogicalName"] == "audit"]
                return response

            sandbox.server.app = record
            data = tmp_path / f"data-{tracked}"
            assert extract(settings_for(sandbox, data)).exit_code == 0
            sandbox.advance(2)
            result = extract(settings_for(sandbox, data))
            assert result.exit_code == 0, result.errors
            assert result.audit is not None and result.audit.rows > 0  # the incremental read found new rows
            assert said == [tracked]
            audit_reads = [prefer for path, prefer, _ in seen if "/api/data/v9.2/audits" in path]
            assert len(audit_reads) >= 2 and not any("track-changes" in p.lower() for p in audit_reads)
            assert not any(b"track-changes" in body for path, _, body in seen if path.endswith("/$batch"))
            audited = [t.name for t in load_tables().audited]
            expected = sandbox.org.audits.filter(pl.col("objecttypecode").is_in(audited)).get_column("auditid")
            landed[tracked] = Lake(data).current("audit", "auditid").sort("auditid")
            assert sorted(landed[tracked].get_column("auditid").to_list()) == sorted(expected.to_list())
    bookkeeping = {"_run_id", "_extracted_at", "_stream", "_page"}  # when and by which run, not what
    columns = [c for c in landed[True].columns if c not in bookkeeping]
    assert "_objectid_value" in columns and landed[True].select(columns).equals(landed[False].select(columns))


def test_lost_pages_of_a_table_read_by_watermark_are_read_again_and_its_deletions_kept(tmp_path: Path) -> None:
    """Issue #24: a table without change tracking has its rows by watermark and its deletions from the audit
    (pages `audit-deletes-*` in its folder). Losing either kind of page, the next extract reads the table again
    in full and reconciles what the read no longer returns, so the lake equals a clean extract's."""
    options = SandboxOptions(change_tracking_off={"quote"})
    with Sandbox(tmp_path / "sb", OrgState(seed=42, leads=300), options) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data", L2C_PAGE_SIZE=50)
        assert extract(settings).exit_code == 0
        sandbox.advance(30)  # three quotes landed by the first run are deleted
        second = extract(settings)
        assert second.exit_code == 0
        lake = Lake(settings.data_dir)
        # The deletions the audit gave of quotes landed before (those of the backfill were never landed as rows).
        deletions = [p for p in lake.pages("quote") if p.parent.name == f"audit-deletes-audit-{second.run_id}"]
        assert deletions, "precondition: quotes were deleted and the audit said so"
        rows = [p for p in lake.pages("quote") if p.name.startswith("rows-")]
        deletions[0].unlink()
        rows[1].write_bytes(rows[1].read_bytes()[:-100])  # cut short
        result = extract(settings)
        assert result.exit_code == 0, result.errors
        assert_lake_matches_org(lake, sandbox)
        assert result.tables["quote"].mode == "watermark" and result.tables["quote"].deletions > 0
        assert sorted(str(d.page) for d, _ in result.damaged) == sorted(map(str, [deletions[0], rows[1]]))
        clean = settings_for(sandbox, tmp_path / "clean", L2C_PAGE_SIZE=50)
        assert extract(clean).exit_code == 0
    # (Not the audit's: a lookup label is computed when a row is read, so an audit row read before its quote was
    # deleted names it, and one read by a clean run after does not.)
    for table in [t.name for t in load_tables().table]:
        assert lake.fingerprint(table) == Lake(clean.data_dir).fingerprint(table), table
