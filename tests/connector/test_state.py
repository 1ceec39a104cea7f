"""connector/state.py: round trips, 0600 files, refused (never reset) corrupt state, atomic saves under SIGKILL,
the run manifest, and every field's validation as a table of (change to a valid document, message). Files
written before the pydantic models: tests/connector/test_state_compat.py."""

from __future__ import annotations

import json
import stat
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.state import Resume, RunManifest, StateStore, TableRun, TableState
from ground.errors import ConfigError, LocalEnvironmentError
from tests.conftest import DROP, with_field
from tests.connector.conftest import PAUSE_BEFORE_RENAME

FULL = TableState(
    table="opportunity", mode="delta",
    delta_link="https://org.crm.dynamics.com/api/data/v9.2/opportunities?$deltatoken=919042%2108%2f22%2f2017",
    watermark="2024-03-01T09:00:00Z", boundary_ids=["b1", "b2"], signpost="2024-03-01T09:05:00+00:00",
    resume={"stream": "sync-1", "next_link": "https://org/api/data/v9.2/opportunities?$skiptoken=x", "page_no": 4,
            "started_at": "2024-03-01T09:00:00Z", "full": True, "reconcile": False},
    last_success="2024-03-01T09:06:00Z", last_error="Zoë's \"quoted\" error", rows_total=12345,
    token_issued_at="2024-03-01T09:06:00Z",
)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path)


def test_round_trip_and_permissions(store: StateStore, tmp_path: Path) -> None:
    path = store.save(FULL)
    assert path == tmp_path / "state" / "opportunity.state.json"
    assert store.load("opportunity") == FULL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_missing_file_is_a_fresh_table(store: StateStore) -> None:
    assert store.load("lead") == TableState(table="lead")


def test_all_lists_states_only(store: StateStore) -> None:
    store.save(TableState(table="quote", rows_total=1))
    store.save(FULL)
    (store.directory / "metadata.json").write_text("{}")  # another module's cache beside the states
    assert [s.table for s in store.all()] == ["opportunity", "quote"]


@settings(max_examples=60, deadline=None)
@given(st.builds(
    TableState, table=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    mode=st.sampled_from([None, "delta", "watermark"]), delta_link=st.none() | st.text(),
    watermark=st.none() | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    boundary_ids=st.lists(st.text(max_size=40)), last_error=st.none() | st.text(), rows_total=st.integers(0, 2**62),
))
def test_any_state_round_trips(state: TableState) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = StateStore(root)
        store.save(state)
        assert store.load(state.table) == state


def _doc(**changes: Any) -> dict[str, Any]:
    document = {"format": 1, **FULL.model_dump(mode="json")}
    document.update(changes)
    return {k: v for k, v in document.items() if v != "<drop>"}


CORRUPT = [
    ("{not json", "not readable JSON"),
    ("[]", "not a JSON object"),
    ("", "not readable JSON"),
    (json.dumps(_doc(format=2)), "format 2, this l2c reads format 1"),
    (json.dumps(_doc(watermark="<drop>")), "missing field watermark"),
    (json.dumps(_doc(cursor="x")), "unknown field cursor"),
    (json.dumps(_doc(watermark="2024-03-01T09:00:00")), "bad value in watermark"),  # no zone
    (json.dumps(_doc(watermark="yesterday")), "bad value in watermark"),
    (json.dumps(_doc(mode="full")), "bad value in mode"),
    (json.dumps(_doc(rows_total=-1)), "bad value in rows_total"),
    (json.dumps(_doc(rows_total=True)), "bad value in rows_total"),
    (json.dumps(_doc(boundary_ids="b1")), "bad value in boundary_ids"),
    (json.dumps(_doc(resume={"stream": "s", "page_no": 1})), r"missing field resume\.next_link"),
    (json.dumps(_doc(resume={**_doc()["resume"], "signpost": "x"})), r"unknown field resume\.signpost"),
    (json.dumps(_doc(resume={**_doc()["resume"], "full": "yes"})), r"bad value in resume\.full"),
    (json.dumps(_doc(table="lead")), "it is the state of table 'lead'"),
]


@pytest.mark.parametrize(("content", "message"), CORRUPT, ids=[m for _, m in CORRUPT])
def test_corrupt_state_is_refused_not_reset(store: StateStore, content: str, message: str) -> None:
    store.directory.mkdir(parents=True)
    path = store.path("opportunity")
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        store.load("opportunity")
    text = str(err.value)
    assert f"state file {path} is unusable" in text and "delete it to extract opportunity again" in text
    assert err.value.exit_code == 2
    assert path.read_text() == content  # left for the user to inspect


def test_an_invalid_state_is_never_written(store: StateStore) -> None:
    store.save(FULL)
    naive = FULL.model_copy(update={"watermark": datetime(2024, 3, 1, 9)})  # model_copy does not validate
    with pytest.raises(ValueError, match="state of opportunity not saved: bad value in watermark: a time without"):
        store.save(naive)
    assert store.load("opportunity") == FULL


def test_killed_save_leaves_the_previous_state(store: StateStore, tmp_path: Path,
                                               lake_kill_during: Callable[[str], None]) -> None:
    store.save(FULL)
    lake_kill_during(PAUSE_BEFORE_RENAME + f"""
from connector.state import StateStore, TableState
StateStore({str(tmp_path)!r}).save(TableState(table="opportunity", rows_total=1))
""")
    leftovers = [p for p in store.directory.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1  # the child died between writing and renaming
    assert store.load("opportunity") == FULL
    assert store.cleanup() == leftovers and not leftovers[0].exists()


# --- run manifest -------------------------------------------------------------------------------------------

def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = RunManifest.start(now=datetime(2024, 3, 1, 9, tzinfo=UTC))
    assert manifest.run_id.startswith("20240301T090000Z-") and manifest.status == "running"
    path = manifest.save(tmp_path)  # at the start: a killed run still leaves its record
    assert path == tmp_path / "runs" / f"{manifest.run_id}.json"
    run = manifest.table("lead")
    run.rows, run.pages, run.requests, run.throttled, run.retries, run.seconds = 1000, 1, 3, 1, 2, 1.25
    run.watermark_before, run.watermark_after = None, "2024-03-01T09:00:00Z"
    manifest.table("audit").audit_details = 40
    manifest.finish(0, now=datetime(2024, 3, 1, 9, 5, tzinfo=UTC))
    manifest.save(tmp_path)
    loaded = RunManifest.load(tmp_path, manifest.run_id)
    assert loaded == manifest and loaded.status == "ok" and loaded.finished_at == datetime(2024, 3, 1, 9, 5, tzinfo=UTC)
    document = json.loads(path.read_text())
    assert (document["started_at"], document["finished_at"]) == ("2024-03-01T09:00:00Z", "2024-03-01T09:05:00Z")
    assert document["tables"]["lead"]["watermark_after"] == "2024-03-01T09:00:00+00:00"  # as states spell times
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_run_and_corrupt_manifest(tmp_path: Path) -> None:
    manifest = RunManifest.start("run-1")
    manifest.finish(4)
    manifest.save(tmp_path)
    assert RunManifest.load(tmp_path, "run-1").status == "failed"
    for code in (130, 143):  # SIGINT, SIGTERM
        manifest.finish(code)
        assert manifest.status == "interrupted" and manifest.exit_code == code
    path = tmp_path / "runs" / "run-1.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "exit_code": "4"}))
    with pytest.raises(ConfigError, match=r"run manifest .*run-1.json is unusable: bad value in exit_code"):
        RunManifest.load(tmp_path, "run-1")


def test_a_failed_run_keeps_its_line_and_a_manifest_without_one_writes_no_error_field(tmp_path: Path) -> None:
    failed = RunManifest.start("run-2")
    failed.finish(6, error="lead: cannot write data/raw/lead/x.parquet: no space left on the device that holds it")
    failed.save(tmp_path)
    loaded = RunManifest.load(tmp_path, "run-2")
    assert (loaded.status, loaded.exit_code, loaded.error) == ("failed", 6, failed.error)
    document = json.loads((tmp_path / "runs" / "run-2.json").read_text())
    assert list(document)[:7] == ["format", "run_id", "started_at", "finished_at", "status", "exit_code", "error"]
    ok = RunManifest.start("run-3")
    ok.finish(0)
    ok.save(tmp_path)  # as manifests were written before the field existed, so theirs load and save the same bytes
    assert "error" not in json.loads((tmp_path / "runs" / "run-3.json").read_text())
    assert RunManifest.load(tmp_path, "run-3").error is None


def test_a_state_file_l2c_may_not_read_is_the_machine_not_corruption(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(FULL)
    path = store.path(FULL.table)
    path.unlink()
    path.mkdir()  # a path that cannot be read as a file; another user's file is tested for real in tests/reliability
    with pytest.raises(LocalEnvironmentError, match=r"cannot read .*opportunity.state.json: the path cannot be used"):
        store.load(FULL.table)


# --- every field's validation: (what the file holds, the message after "is unusable: ") ---------------------

def _changed(document: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    """`document` with the field at dotted path `where` set to `value` (or removed: DROP)."""
    return with_field(document, where.split("."), value)


NAIVE, DATE_ONLY = "2024-03-01T09:00:00", "2024-03-01"
NO_ZONE, NOT_TIME = "a time without a zone (l2c keeps times in UTC)", "not an ISO 8601 time"
STATE_FIELDS: list[tuple[str, Any, str]] = [
    ("format", DROP, "missing field format"),
    ("format", 2, "format 2, this l2c reads format 1 (written by another version?)"),
    ("format", "1", "format '1', this l2c reads format 1 (written by another version?)"),
    ("format", True, "format True, this l2c reads format 1 (written by another version?)"),
    ("table", DROP, "missing field table"),
    ("table", 7, "bad value in table: Input should be a valid string"),
    ("table", "lead", "it is the state of table 'lead'"),
    ("mode", DROP, "missing field mode"),
    ("mode", "full", "bad value in mode: Input should be 'delta' or 'watermark'"),
    ("delta_link", DROP, "missing field delta_link"),
    ("delta_link", 42, "bad value in delta_link: Input should be a valid string"),
    ("watermark", DROP, "missing field watermark"),
    ("watermark", NAIVE, f"bad value in watermark: {NO_ZONE}"),
    ("watermark", DATE_ONLY, f"bad value in watermark: {NO_ZONE}"),
    ("watermark", "yesterday", f"bad value in watermark: {NOT_TIME}"),
    ("watermark", 1709283600, f"bad value in watermark: {NOT_TIME}"),
    ("boundary_ids", DROP, "missing field boundary_ids"),
    ("boundary_ids", "b1", "bad value in boundary_ids: Input should be a valid list"),
    ("boundary_ids", ["b1", 2], "bad value in boundary_ids.1: Input should be a valid string"),
    ("signpost", DROP, "missing field signpost"),
    ("signpost", NAIVE, f"bad value in signpost: {NO_ZONE}"),
    ("resume", DROP, "missing field resume"),
    ("link", "csv", "bad value in link: Input should be a valid dictionary or instance of LinkState"),
    ("link", {"layout": "parquet"}, "bad value in link.layout: Input should be 'csv', 'incremental' or 'delta'"),
    ("link", {"layout": "csv", "files": {"lead/2025.csv": {"consumed": 10}}},
     "missing field link.files.lead/2025.csv.rows"),
    ("resume", "sync-1", "bad value in resume: Input should be a valid dictionary or instance of Resume"),
    ("resume.cursor", 1, "unknown field resume.cursor"),
    ("resume.stream", DROP, "missing field resume.stream"),
    ("resume.stream", None, "bad value in resume.stream: Input should be a valid string"),
    ("resume.next_link", DROP, "missing field resume.next_link"),
    ("resume.next_link", ["x"], "bad value in resume.next_link: Input should be a valid string"),
    ("resume.page_no", DROP, "missing field resume.page_no"),
    ("resume.page_no", "4", "bad value in resume.page_no: Input should be a valid integer"),
    ("resume.page_no", -1, "bad value in resume.page_no: Input should be greater than or equal to 0"),
    ("resume.started_at", DROP, "missing field resume.started_at"),
    ("resume.started_at", NAIVE, f"bad value in resume.started_at: {NO_ZONE}"),
    ("resume.full", "yes", "bad value in resume.full: Input should be a valid boolean"),
    ("resume.reconcile", 0, "bad value in resume.reconcile: Input should be a valid boolean"),
    ("last_success", DROP, "missing field last_success"),
    ("last_success", NOT_TIME, f"bad value in last_success: {NOT_TIME}"),
    ("last_error", DROP, "missing field last_error"),
    ("last_error", {"code": 1}, "bad value in last_error: Input should be a valid string"),
    ("rows_total", DROP, "missing field rows_total"),
    ("rows_total", -1, "bad value in rows_total: Input should be greater than or equal to 0"),
    ("rows_total", True, "bad value in rows_total: Input should be a valid integer"),
    ("rows_total", 1.0, "bad value in rows_total: Input should be a valid integer"),
    ("token_issued_at", DROP, "missing field token_issued_at"),
    ("token_issued_at", DATE_ONLY, f"bad value in token_issued_at: {NO_ZONE}"),
    ("cursor", "x", "unknown field cursor"),
]


@pytest.mark.parametrize(("where", "value", "message"), STATE_FIELDS, ids=[f"{w}={v!r}" for w, v, _ in STATE_FIELDS])
def test_every_state_field_is_checked(store: StateStore, where: str, value: Any, message: str) -> None:
    store.directory.mkdir(parents=True)
    path = store.path("opportunity")
    content = json.dumps(_changed(_doc(), where, value), indent=2)
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        store.load("opportunity")
    assert str(err.value) == (f"state file {path} is unusable: {message}. l2c writes it and nobody else should: "
                              "restore it from a backup, or delete it to extract opportunity again from the start "
                              "(the pages already in raw/ stay and later versions supersede them)")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert path.read_text() == content  # refused, not reset


def test_the_table_names_every_field() -> None:
    named = {w.split(".")[0] for w, _, _ in STATE_FIELDS} | {w for w, _, _ in STATE_FIELDS if w.startswith("resume.")}
    assert named >= {"format", *TableState.model_fields, *(f"resume.{f}" for f in Resume.model_fields)}
    named = {w for w, _, _ in MANIFEST_FIELDS if not w.startswith("tables.lead.")} | {
        w.removeprefix("tables.lead.") for w, _, _ in MANIFEST_FIELDS if w.startswith("tables.lead.")}
    assert named >= {"format", *RunManifest.model_fields, *TableRun.model_fields}


VALID_STATES: list[tuple[str, Any]] = [
    ("mode", None), ("mode", "watermark"), ("delta_link", None), ("watermark", None),
    ("watermark", "2024-03-01T09:00Z"), ("watermark", "2024-03-01T10:00:00.250+01:00"),
    ("watermark", "2024-03-01 09:00:00+00:00"), ("signpost", None),
    ("resume", None), ("resume.full", DROP), ("resume.reconcile", DROP), ("last_error", ""), ("boundary_ids", []),
]


@pytest.mark.parametrize(("where", "value"), VALID_STATES, ids=[f"{w}={v!r}" for w, v in VALID_STATES])
def test_what_a_state_may_hold(store: StateStore, where: str, value: Any) -> None:
    store.directory.mkdir(parents=True)
    store.path("opportunity").write_text(json.dumps(_changed(_doc(), where, value)))
    state = store.load("opportunity")
    store.save(state)
    assert store.load("opportunity") == state


def _manifest_doc() -> dict[str, Any]:
    manifest = RunManifest.start("run-1", now=datetime(2024, 3, 1, 9, tzinfo=UTC))
    manifest.table("lead").watermark_after = datetime(2024, 3, 1, 9, tzinfo=UTC)
    manifest.table("lead").delta_before, manifest.table("lead").error = "https://org/x?$deltatoken=1", "failed"
    manifest.finish(4, now=datetime(2024, 3, 1, 9, 5, tzinfo=UTC))
    return {"format": 1, **manifest.model_dump(mode="json")}


MANIFEST_FIELDS: list[tuple[str, Any, str]] = [
    ("format", DROP, "missing field format"),
    ("format", 0, "format 0, this l2c reads format 1 (written by another version?)"),
    ("run_id", DROP, "missing field run_id"),
    ("run_id", 1, "bad value in run_id: Input should be a valid string"),
    ("started_at", DROP, "missing field started_at"),
    ("started_at", NAIVE, f"bad value in started_at: {NO_ZONE}"),
    ("finished_at", DROP, "missing field finished_at"),
    ("finished_at", "soon", f"bad value in finished_at: {NOT_TIME}"),
    ("status", DROP, "missing field status"),
    ("status", "done", "bad value in status: Input should be 'running', 'ok', 'failed' or 'interrupted'"),
    ("exit_code", DROP, "missing field exit_code"),
    ("exit_code", "4", "bad value in exit_code: Input should be a valid integer"),
    ("exit_code", False, "bad value in exit_code: Input should be a valid integer"),
    ("tables", DROP, "missing field tables"),
    ("tables", [], "bad value in tables: Input should be a valid dictionary"),
    ("tables.lead", 3, "bad value in tables.lead: Input should be a valid dictionary or instance of TableRun"),
    ("tables.lead.rows", DROP, "missing field tables.lead.rows"),
    ("tables.lead.rows", -5, "bad value in tables.lead.rows: Input should be greater than or equal to 0"),
    ("tables.lead.pages", "1", "bad value in tables.lead.pages: Input should be a valid integer"),
    ("tables.lead.deletions", None, "bad value in tables.lead.deletions: Input should be a valid integer"),
    ("tables.lead.quarantined", DROP, "missing field tables.lead.quarantined"),
    ("tables.lead.requests", 2.5, "bad value in tables.lead.requests: Input should be a valid integer"),
    ("tables.lead.throttled", True, "bad value in tables.lead.throttled: Input should be a valid integer"),
    ("tables.lead.retries", -1, "bad value in tables.lead.retries: Input should be greater than or equal to 0"),
    ("tables.lead.seconds", "1.5", "bad value in tables.lead.seconds: Input should be a valid number"),
    ("tables.lead.seconds", -0.5, "bad value in tables.lead.seconds: Input should be greater than or equal to 0"),
    ("tables.lead.audit_details", DROP, "missing field tables.lead.audit_details"),
    ("tables.lead.watermark_before", "x", f"bad value in tables.lead.watermark_before: {NOT_TIME}"),
    ("tables.lead.watermark_after", NAIVE, f"bad value in tables.lead.watermark_after: {NO_ZONE}"),
    ("tables.lead.delta_before", 5, "bad value in tables.lead.delta_before: Input should be a valid string"),
    ("tables.lead.delta_after", DROP, "missing field tables.lead.delta_after"),
    ("tables.lead.error", ["x"], "bad value in tables.lead.error: Input should be a valid string"),
    ("tables.lead.damaged", "raw/lead/x", "bad value in tables.lead.damaged: Input should be a valid list"),
    ("tables.lead.damaged", [1], "bad value in tables.lead.damaged.0: Input should be a valid string"),
    ("tables.lead.cursor", 1, "unknown field tables.lead.cursor"),
    ("seconds", 1, "unknown field seconds"),
]


@pytest.mark.parametrize(("where", "value", "message"), MANIFEST_FIELDS,
                         ids=[f"{w}={v!r}" for w, v, _ in MANIFEST_FIELDS])
def test_every_manifest_field_is_checked(tmp_path: Path, where: str, value: Any, message: str) -> None:
    path = tmp_path / "runs" / "run-1.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_changed(_manifest_doc(), where, value)))
    with pytest.raises(ConfigError) as err:
        RunManifest.load(tmp_path, "run-1")
    assert str(err.value) == f"run manifest {path} is unusable: {message}. it only records a past run: move it aside"
    assert err.value.exit_code == 2


def test_a_manifest_with_whole_seconds_loads(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "run-1.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_changed(_manifest_doc(), "tables.lead.seconds", 2)))
    assert RunManifest.load(tmp_path, "run-1").tables["lead"].seconds == 2.0


def test_code_that_sets_a_bad_value_fails_where_it_does(store: StateStore) -> None:
    state = store.load("lead")
    with pytest.raises(ValidationError):
        state.mode = "full"  # type: ignore[assignment]
    with pytest.raises(ValidationError):
        state.watermark = datetime(2024, 3, 1, 9)  # naive
    with pytest.raises(ValidationError):
        RunManifest.start(now=datetime(2024, 3, 1, 9))


def test_a_watermark_resume_point_is_written_without_the_delta_flags(store: StateStore) -> None:
    started = datetime(2024, 3, 1, 9, tzinfo=UTC)
    state = TableState(table="lead", mode="watermark", signpost=started,
                       resume=Resume(stream="wm-1", next_link="/api/data/v9.2/leads?$skiptoken=1", page_no=2,
                                     started_at=started))
    written = json.loads(store.save(state).read_text())
    assert written["resume"] == {"stream": "wm-1", "next_link": "/api/data/v9.2/leads?$skiptoken=1", "page_no": 2,
                                 "started_at": "2024-03-01T09:00:00+00:00"}
    # `link` (a Link export's checkpoint) is written only when set, so Web API states keep their bytes.
    assert list(written) == ["format", *(f for f in TableState.model_fields if f != "link")]
    assert store.load("lead") == state and not state.resume.full  # type: ignore[union-attr]


def test_a_manifest_names_damaged_pages_only_for_the_tables_that_had_some(tmp_path: Path) -> None:
    manifest = RunManifest.start("run-1")
    manifest.table("lead").damaged = ["raw/lead/sync-1/rows-000002.parquet: missing"]
    manifest.table("quote").rows = 3
    manifest.save(tmp_path)
    document = json.loads((tmp_path / "runs" / "run-1.json").read_text())
    assert document["tables"]["lead"]["damaged"] == ["raw/lead/sync-1/rows-000002.parquet: missing"]
    assert "damaged" not in document["tables"]["quote"]  # as a manifest written before the field
    assert RunManifest.load(tmp_path, "run-1") == manifest
