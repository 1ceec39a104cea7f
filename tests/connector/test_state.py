"""connector/state.py: round trips, 0600 files, refused (never reset) corrupt state, atomic saves under SIGKILL,
and the run manifest."""

from __future__ import annotations

import json
import stat
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.state import RunManifest, StateStore, TableState
from ground.errors import ConfigError
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
    document = {"format": 1, **json.loads(json.dumps(FULL.__dict__))}
    document.update(changes)
    return {k: v for k, v in document.items() if v != "<drop>"}


CORRUPT = [
    ("{not json", "not readable JSON"),
    ("[]", "not a JSON object"),
    ("", "not readable JSON"),
    (json.dumps(_doc(format=2)), "format 2, this l2c reads format 1"),
    (json.dumps(_doc(watermark="<drop>")), r"missing fields \['watermark'\]"),
    (json.dumps(_doc(cursor="x")), r"unknown fields \['cursor'\]"),
    (json.dumps(_doc(watermark="2024-03-01T09:00:00")), "bad value in watermark"),  # no zone
    (json.dumps(_doc(watermark="yesterday")), "bad value in watermark"),
    (json.dumps(_doc(mode="full")), "bad value in mode"),
    (json.dumps(_doc(rows_total=-1)), "bad value in rows_total"),
    (json.dumps(_doc(rows_total=True)), "bad value in rows_total"),
    (json.dumps(_doc(boundary_ids="b1")), "bad value in boundary_ids"),
    (json.dumps(_doc(resume={"stream": "s", "page_no": 1})),
     r"bad value in resume \(resume: missing fields \['next_link', 'started_at'\]\)"),
    (json.dumps(_doc(resume={**FULL.resume, "signpost": "x"})),  # type: ignore[dict-item]
     r"bad value in resume \(resume: unknown fields \['signpost'\]\)"),
    (json.dumps(_doc(resume={**FULL.resume, "full": "yes"})), r"bad value in resume \(resume: bad value in full\)"),  # type: ignore[dict-item]
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
    with pytest.raises(ValueError, match="state of opportunity not saved: bad value in watermark"):
        store.save(replace(FULL, watermark="2024-03-01 09:00"))
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
    assert loaded == manifest and loaded.status == "ok" and loaded.finished_at == "2024-03-01T09:05:00Z"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_run_and_corrupt_manifest(tmp_path: Path) -> None:
    manifest = RunManifest.start("run-1")
    manifest.finish(4)
    manifest.save(tmp_path)
    assert RunManifest.load(tmp_path, "run-1").status == "failed"
    path = tmp_path / "runs" / "run-1.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "exit_code": "4"}))
    with pytest.raises(ConfigError, match=r"run manifest .*run-1.json is unusable: bad value in exit_code"):
        RunManifest.load(tmp_path, "run-1")
