"""Issue #13, bad input, through the real `l2c` against the sandbox over HTTPS.

Malformed configuration (`.env`, L2C_TABLES, L2C_ACTIVITY_MAP) ends in exit 2 and one line naming the setting,
file or line and what to do, and leaves a previous run's data directory as it was (a run that got as far as the
org's metadata adds only its own manifest, marked failed). Malformed rows, served by the sandbox for a few named
records (sandbox/corrupt.py), end in exit 0: each bad record is typed as it came (a null time, a choice value
without a label, an unknown audit action), or quarantined and counted in the run output and manifest; the event
log builds and differs from the org's ground truth only where the input was bad.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from config.tables import load_tables
from connector.lake import Lake
from sandbox import corrupt
from sandbox.orgdata import OrgData
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from tests.conftest import in_catalogue
from tests.e2e.conftest import L2C, clean_env

SEED, LEADS = 7, 200
EVENT = ["object_type", "object_id", "activity", "timestamp"]
AUDITED = [table.name for table in load_tables().audited]


def l2c(cwd: Path, sandbox: Sandbox, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The console script in `cwd` (where a `.env` is read), pointed at `sandbox`, data in `cwd/data`."""
    env = clean_env(cwd, **sandbox.env(), **extra)
    return subprocess.run([L2C, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


# --- malformed configuration --------------------------------------------------------------------------------

TABLES_TOML = resources.files("config").joinpath("tables.toml").read_text("utf-8")
ACTIVITIES_TOML = resources.files("config").joinpath("activities.toml").read_text("utf-8")
FROB_RULE = '\n[[activity]]\nname = "Frob"\ntable = "frobnicate"\ntrigger = "created"\n'
QUOTE_CREATED = ('\n[[activity]]\nname = "Quote Created"\ntable = "quote"\ntrigger = "created"\n'
                 'record_date = "createdon"\n')  # the packaged rule #13, a second time
CONTRACT_RULE = ('\n[[activity]]\nname = "Contract Signed"\ntable = "opportunity"\ntrigger = "changed"\n'
                 'column = "new_contractsigned"\nto = true\n')


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


# (files written beside the run, environment, command, what the one error line says, what it says to do). The
# activity map is read by `l2c transform`, and by `run` before its extract.
BAD_CONFIGS = [
    pytest.param({".env": "L2C_PAGE_SIZE=abc\n"}, {}, "run", "invalid setting L2C_PAGE_SIZE",
                 "fix it in the environment or .env", id="env-page-size-not-a-number"),
    pytest.param({".env": "L2C_MAX_CONCURRENCY=0\n"}, {}, "run", "invalid setting L2C_MAX_CONCURRENCY: Input should "
                 "be greater than or equal to 1", "fix it in the environment or .env", id="env-concurrency-0"),
    pytest.param({".env": "L2C_SINCE=2025-01-01\nL2C_PAGE_SIZE 100\n"}, {}, "run", ".env: line 2 is not NAME=value",
                 "fix or remove it", id="env-line-without-equals"),
    pytest.param({"tables.toml": _edit(TABLES_TOML, 'name = "lead"', 'name = "lead')}, {"L2C_TABLES": "tables.toml"},
                 "run", "tables.toml is not valid TOML: Illegal character '\\n' (at line",
                 "fix the syntax at that line", id="tables-syntax"),
    pytest.param({"tables.toml": TABLES_TOML + '\n[[table]]\nname = "frobnicate"\ncolumns = ["frobnicateid"]\n'},
                 {"L2C_TABLES": "tables.toml"}, "run", "table frobnicate does not exist in this Dataverse environment",
                 "check the `name`", id="tables-unknown-table"),
    pytest.param({"tables.toml": _edit(TABLES_TOML, '"leadid", "subject"', '"leadid", "favouritecolour", "subject"')},
                 {"L2C_TABLES": "tables.toml"}, "run", "table lead: column favouritecolour does not exist",
                 "fix `columns` of table lead", id="tables-unknown-column"),
    pytest.param({"activities.toml": _edit(ACTIVITIES_TOML, "\n[[activity]]\n", "\n[[activity]\n")},
                 {"L2C_ACTIVITY_MAP": "activities.toml"}, "transform", "activities.toml is not valid TOML:",
                 "fix the syntax at that line", id="activities-syntax"),
    pytest.param({"activities.toml": ACTIVITIES_TOML + FROB_RULE}, {"L2C_ACTIVITY_MAP": "activities.toml"},
                 "transform", "rule 'Frob': table frobnicate is not declared", "declare it",
                 id="activities-unknown-table"),
    pytest.param({"activities.toml": ACTIVITIES_TOML + CONTRACT_RULE}, {"L2C_ACTIVITY_MAP": "activities.toml"},
                 "transform", "rule 'Contract Signed': column new_contractsigned is not among the declared columns "
                 "of opportunity", "add it to the table's `columns`", id="activities-unknown-column"),
    pytest.param({"activities.toml": ACTIVITIES_TOML + FROB_RULE}, {"L2C_ACTIVITY_MAP": "activities.toml"},
                 "run", "rule 'Frob': table frobnicate is not declared", "declare it",
                 id="run-activities-unknown-table"),
    pytest.param({"activities.toml": ACTIVITIES_TOML + QUOTE_CREATED}, {"L2C_ACTIVITY_MAP": "activities.toml"},
                 "run", "rules #13 and #30 ('Quote Created' on quote) are the same rule, declared twice",
                 "remove one of them", id="run-activities-same-rule-twice"),
]


def digests(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("files", "env", "command", "message", "hint"), BAD_CONFIGS)
def test_bad_configuration_exits_2_and_leaves_the_data_directory_alone(
        served: Outcome, tmp_path: Path, files: dict[str, str], env: dict[str, str], command: str, message: str,
        hint: str) -> None:
    work = tmp_path / "work"
    shutil.copytree(served.data.parent, work, ignore=shutil.ignore_patterns("sb"))
    for name, text in files.items():
        (work / name).write_text(text, "utf-8")
    before = digests(work / "data")
    done = l2c(work, served.sandbox, command, **env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].startswith("l2c: error: "), done.stderr
    assert message in lines[0] and hint in lines[0], lines[0]
    after = digests(work / "data")
    assert {k: v for k, v in after.items() if k in before} == before  # no file changed or vanished
    # A run that got as far as the org's metadata leaves only its own record: a failed manifest.
    for name in set(after) - set(before):
        assert re.fullmatch(r"runs/[^/]+\.json", name), name
        manifest = json.loads((work / "data" / name).read_text())
        assert (manifest["status"], manifest["exit_code"]) == ("failed", 2)


# --- malformed rows ------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    sandbox: Sandbox
    done: subprocess.CompletedProcess[str]
    data: Path
    targets: dict[str, dict[str, list[str]]]  # kind -> table -> spoiled ids
    org: OrgData

    def lake(self, table: str) -> pl.DataFrame:
        return Lake(self.data).scan(table).collect()

    def quarantined(self, table: str, key: str) -> dict[str, str]:
        """id -> reason of the records quarantined for `table`."""
        frame = Lake(self.data).scan_quarantine(table).collect()
        if frame.is_empty():
            return {}
        return {json.loads(record)[key]: reason for record, reason in frame.select("record", "reason").iter_rows()}

    def log(self) -> pl.DataFrame:
        return pl.read_parquet(self.data / "event_log.parquet")

    def issues(self, check: str) -> pl.DataFrame:
        with duckdb.connect(str(self.data / "l2c.duckdb"), read_only=True) as con:
            cursor = con.execute('select * from quality_issues where "check" = ?', [check])
            names = [column[0] for column in cursor.description]
            return pl.DataFrame(cursor.fetchall(), schema=names, orient="row")

    def audit_rows(self, kind: str) -> pl.DataFrame:
        return self.org.audits.filter(pl.col("auditid").is_in(self.targets[kind]["audit"]))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """A sandbox serving every kind of bad row at once (the kinds spoil different records), and one `l2c run`."""
    base = tmp_path_factory.mktemp("corrupt")
    with Sandbox(base / "sb", OrgState(seed=SEED, leads=LEADS), SandboxOptions(corrupt=frozenset(corrupt.KINDS))) as sb:
        done = l2c(base, sb, "run")
        spoiled = {kind: corrupt.targets(sb.store, kind) for kind in corrupt.KINDS}
        yield Outcome(sb, done, base / "data", spoiled, sb.org)


def test_malformed_rows_end_in_exit_0_with_every_quarantined_record_counted(served: Outcome) -> None:
    done = served.done
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "l2c: error" not in done.stderr
    unparseable, broken = served.targets["unparseable"], served.targets["broken-detail"]
    leads = served.quarantined("lead", "leadid")
    audits = served.quarantined("audit", "auditid")
    details = served.quarantined("audit_details", "auditid")
    assert sorted(leads) == sorted(unparseable["lead"])
    assert all(reason.startswith("modifiedon: not a valid timestamp") for reason in leads.values()), leads
    assert sorted(audits) == sorted(unparseable["audit"])
    assert all(reason.startswith("createdon: not a valid timestamp") for reason in audits.values()), audits
    assert sorted(details) == sorted(broken["audit"])
    assert all("not an object" in reason for reason in details.values()), details
    # The run summary and the manifest count them: as many as records were spoiled beyond typing.
    assert re.search(r"^lead: delta, \d+ rows, 3 quarantined, ", done.stdout, flags=re.M), done.stdout
    assert "note: audit: 6 quarantined" in done.stdout, done.stdout
    manifest = json.loads(next((served.data / "runs").glob("*.json")).read_text())
    counted = {name: run["quarantined"] for name, run in manifest["tables"].items() if run["quarantined"]}
    assert counted == {"lead": 3, "audit": 6}
    assert sum(counted.values()) == len(leads) + len(audits) + len(details) == 9


def test_null_timestamps_land_as_nulls_and_the_quality_report_names_them(served: Outcome) -> None:
    spoiled = served.targets["null-timestamps"]
    leads = served.lake("lead").filter(pl.col("leadid").is_in(spoiled["lead"]))
    assert leads.height == 3 and leads.get_column("createdon").is_null().all()
    opportunities = served.lake("opportunity").filter(pl.col("opportunityid").is_in(spoiled["opportunity"]))
    assert opportunities.height == 3 and opportunities.get_column("modifiedon").is_null().all()
    audits = served.lake("audit").filter(pl.col("auditid").is_in(spoiled["audit"]))
    assert audits.height == 3 and audits.get_column("createdon").is_null().all()
    missing = served.issues("missing_timestamp")
    assert set(spoiled["lead"]) <= set(missing.get_column("object_id"))
    for auditid in spoiled["audit"]:  # the events of those audit rows are kept, without a time, and reported
        assert missing.get_column("detail").str.contains(f"audit/{auditid}/", literal=True).any(), auditid


def test_unknown_choice_values_land_as_numbers_without_labels(served: Outcome) -> None:
    ids = served.targets["unknown-choice"]["opportunity"]
    rows = served.lake("opportunity").filter(pl.col("opportunityid").is_in(ids))
    assert rows.height == 3
    assert rows.get_column("statecode").to_list() == [corrupt.UNKNOWN_STATE] * 3
    assert rows.get_column("statuscode").to_list() == [corrupt.UNKNOWN_STATUS] * 3
    assert rows.get_column("statecode__label").is_null().all() and rows.get_column("statuscode__label").is_null().all()


def test_an_unknown_audit_action_lands_typed_and_makes_no_event(served: Outcome) -> None:
    ids = served.targets["unknown-action"]["audit"]
    rows = served.lake("audit").filter(pl.col("auditid").is_in(ids))
    assert rows.get_column("action").to_list() == [corrupt.UNKNOWN_ACTION] * 3
    assert rows.get_column("action__label").is_null().all()
    event_ids = served.log().get_column("event_id")
    assert not any(event_ids.str.starts_with(f"audit/{auditid}/").any() for auditid in ids)
    flagged = served.issues("unreadable_audit").get_column("detail").to_list()  # the quality report says so
    assert sorted(flagged) == sorted(f"audit row {i}: unknown action code {corrupt.UNKNOWN_ACTION}" for i in ids)


def test_audit_details_that_do_not_parse_land_verbatim_or_in_quarantine(served: Outcome) -> None:
    ids = served.targets["bad-detail"]["audit"]
    details = served.lake("audit_details").filter(pl.col("auditid").is_in(ids))
    assert details.height == 3
    for new, old in details.select("new_values", "old_values").iter_rows():
        assert json.loads(new)["salesstage"] == corrupt.UNPARSEABLE_STAGE
        assert corrupt.UNKNOWN_COLUMN in json.loads(new) and corrupt.UNKNOWN_COLUMN in json.loads(old)
    log = served.log()
    assert not any(log.get_column("event_id").str.starts_with(f"audit/{auditid}/").any() for auditid in ids)
    # A detail that is not an object is quarantined (previous test) and gives no event: none is invented.
    for row in served.audit_rows("broken-detail").iter_rows(named=True):
        assert log.filter(pl.col("event_id").str.starts_with(f"audit/{row['auditid']}/")).height == 0, row


def _events(frame: pl.DataFrame) -> Counter[tuple[Any, ...]]:
    return Counter(frame.select(EVENT).iter_rows())


def test_the_event_log_differs_from_the_truth_only_where_the_input_was_bad(served: Outcome) -> None:
    log, truth = served.log(), in_catalogue(served.org.truth)
    missing = _events(truth) - _events(log)
    extra = _events(log) - _events(truth)
    # Explained: the events of a quarantined lead (kept out of the log, reported as orphans) ...
    orphans = set(served.issues("orphan_record").get_column("object_id"))
    assert orphans == set(served.targets["unparseable"]["lead"])
    explained = {e for e in missing if e[0] == "lead" and e[1] in orphans}
    # ... the fact of an audit row with an unknown action, or with a detail that does not parse ...
    for kind in ("unknown-action", "bad-detail", "broken-detail"):
        at = set(served.audit_rows(kind).select("_objectid_value", "createdon").iter_rows())
        explained |= {e for e in missing if (e[1], e[3]) in at}
    # ... and a creation whose audit row has no time (it is in the log, without one).
    undated = served.audit_rows("null-timestamps").get_column("_objectid_value").to_list()
    explained |= {e for e in missing if e[1] in undated and e[2] == "Lead Captured"}
    assert set(missing) == explained, set(missing) - explained
    assert sum(missing.values()) == len(explained)  # each of them once
    assert {(e[1], e[2], e[3]) for e in extra} == {(lead, "Lead Captured", None) for lead in undated}


def test_duplicate_and_shuffled_audit_rows_land_as_served_and_make_each_event_once(served: Outcome) -> None:
    audit = served.lake("audit")
    doubled = served.targets["duplicate-audit"]["audit"]
    counts = audit.group_by("auditid").len()
    assert sorted(counts.filter(pl.col("len") > 1).get_column("auditid").to_list()) == sorted(doubled)
    # Pages came in reverse order; still every audit row of a declared table is landed or quarantined.
    audited = served.org.audits.filter(pl.col("objecttypecode").is_in(AUDITED))
    landed = set(counts.get_column("auditid")) | set(served.quarantined("audit", "auditid"))
    assert landed == set(audited.get_column("auditid"))
    event_ids = served.log().get_column("event_id")
    assert event_ids.is_unique().all()
    for auditid in doubled:  # each an opportunity's Create: one event, not two
        assert event_ids.str.starts_with(f"audit/{auditid}/").sum() == 1, auditid


def test_names_with_quotes_land_exactly_and_reach_the_database(served: Outcome) -> None:
    ids = served.targets["quoted-names"]["account"]
    accounts = Lake(served.data).current("account", "accountid").filter(pl.col("accountid").is_in(ids))
    assert dict(accounts.select("accountid", "name").iter_rows()) == dict(zip(ids, corrupt.QUOTED_NAMES, strict=True))
    assert set(corrupt.QUOTED_NAMES) <= set(served.log().get_column("account"))
    with duckdb.connect(str(served.data / "l2c.duckdb"), read_only=True) as con:
        for name in corrupt.QUOTED_NAMES:
            assert con.execute("select count(*) from accounts where account = ?", [name]).fetchone() == (1,), name
            found = con.execute("select count(*) from cases where account = ?", [name]).fetchone()
            assert found is not None and found[0] > 0, name


def test_dates_in_the_other_shape_than_their_metadata_land_converted_and_are_reported(served: Outcome) -> None:
    """A DateOnly value served as a timestamp, or a timestamp column's value as a bare date (stale or wrong
    metadata): nothing valid is quarantined for its shape; the quality report names each record."""
    spoiled = served.targets["other-date-shapes"]
    org_opps = served.org.rows["opportunity"].filter(pl.col("opportunityid").is_in(spoiled["opportunity"]))
    opps = Lake(served.data).current("opportunity", "opportunityid").filter(
        pl.col("opportunityid").is_in(spoiled["opportunity"]))
    assert opps.select("opportunityid", "estimatedclosedate").sort("opportunityid").equals(
        org_opps.select("opportunityid", "estimatedclosedate").sort("opportunityid"))  # the same calendar days
    orders = Lake(served.data).current("salesorder", "salesorderid").filter(
        pl.col("salesorderid").is_in(spoiled["salesorder"]))
    org_orders = served.org.rows["salesorder"].filter(pl.col("salesorderid").is_in(spoiled["salesorder"]))
    assert orders.select("salesorderid", "submitdate").sort("salesorderid").equals(
        org_orders.select("salesorderid", pl.col("submitdate").dt.truncate("1d")).sort("salesorderid"))
    assert not set(served.quarantined("opportunity", "opportunityid")) & set(spoiled["opportunity"])
    found = served.issues("metadata_value_mismatch")
    assert sorted(found.get_column("object_id")) == sorted(spoiled["opportunity"] + spoiled["salesorder"])
    assert set(found.get_column("severity")) == {"warning"}
    assert found.filter(pl.col("object_type") == "opportunity").get_column("detail").str.contains(
        "estimatedclosedate = .* is a full timestamp, but the column's metadata says DateOnly").all()


def test_a_renamed_users_labels_land_as_served(served: Outcome) -> None:
    renamed = served.targets["renamed-users"]["systemuser"]
    opps = Lake(served.data).current("opportunity", "opportunityid")
    theirs = opps.filter(pl.col("_ownerid_value").is_in(renamed))
    assert theirs.height > 0 and theirs.get_column("_ownerid_value__label").str.ends_with(corrupt.RENAMED).all()
    others = opps.filter(~pl.col("_ownerid_value").is_in(renamed))
    assert not others.get_column("_ownerid_value__label").str.ends_with(corrupt.RENAMED).any()
