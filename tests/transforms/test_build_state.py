"""transforms/build_state.py: the transform's state round trips, is written as it was before the pydantic model
(tests/connector/state_fixtures), and a state it cannot build on is no error but the reason of a full build,
one line naming the file and the first problem, for every field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import DROP, with_field
from transforms.build_state import FORMAT, FRAMES, TransformState, frame_path
from transforms.outputs import state_dir

FIXTURES = sorted((Path(__file__).parents[1] / "connector" / "state_fixtures").glob("*/transform/state.json"))
STATE = TransformState(fingerprint="ab12", pages={"raw/lead/sync-1/rows-000001.parquet": [1234, 1709283600000000000]},
                       generation=3, events=10, cases=4, orphans=1, quality={"orphan_record": 1},
                       tables=["quality_issues"], outputs={"event_log.parquet": [2345, 3735928559]})


def _frames(data_dir: Path, generation: int) -> None:
    for name in (*FRAMES, *STATE.tables):
        path = frame_path(data_dir, name, generation)
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"x": [1]}).write_parquet(path)


def test_round_trip(tmp_path: Path) -> None:
    _frames(tmp_path, STATE.generation)
    STATE.save(tmp_path)
    assert TransformState.load(tmp_path) == STATE
    written = (state_dir(tmp_path) / "state.json").read_text()
    assert written == json.dumps({**STATE.model_dump(), "format": FORMAT}, indent=1, sort_keys=True)


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.parents[1].name)
def test_a_state_of_the_previous_format_is_the_reason_of_a_full_build(tmp_path: Path, fixture: Path) -> None:
    """The fixtures (format 2) predate the database tables a state names (format 3) and the outputs' stamps
    (format 4): a full build, saying why."""
    state_dir(tmp_path).mkdir(parents=True)
    shutil.copyfile(fixture, state_dir(tmp_path) / "state.json")
    _frames(tmp_path, json.loads(fixture.read_text())["generation"])
    assert TransformState.read(tmp_path) == "the previous build was made by another l2c version (state format 2)"
    assert TransformState.load(tmp_path) is None


def _changed(where: str, value: Any) -> dict[str, Any]:
    return with_field(STATE.model_dump(), where.split("/", 1), value)  # a field, or a field and a page's path


PAGE = "raw/lead/sync-1/rows-000001.parquet"
FIELDS: list[tuple[str, Any, str]] = [
    ("format", 1, "the previous build was made by another l2c version (state format 1)"),
    ("format", DROP, "the previous build was made by another l2c version (state format None)"),
    ("fingerprint", DROP, "{unusable}: missing field fingerprint"),
    ("fingerprint", 12, "{unusable}: bad value in fingerprint: Input should be a valid string"),
    ("pages", DROP, "{unusable}: missing field pages"),
    ("pages", [PAGE], "{unusable}: bad value in pages: Input should be a valid dictionary"),
    (f"pages/{PAGE}", [1234], f"{{unusable}}: bad value in pages.{PAGE}: List should have at least 2 items after "
                              "validation, not 1"),
    (f"pages/{PAGE}", [1, 2, 3], f"{{unusable}}: bad value in pages.{PAGE}: List should have at most 2 items after "
                                 "validation, not 3"),
    (f"pages/{PAGE}", ["1234", 5], f"{{unusable}}: bad value in pages.{PAGE}.0: Input should be a valid integer"),
    ("generation", DROP, "{unusable}: missing field generation"),
    ("generation", -1, "{unusable}: bad value in generation: Input should be greater than or equal to 0"),
    ("events", "10", "{unusable}: bad value in events: Input should be a valid integer"),
    ("cases", 4.5, "{unusable}: bad value in cases: Input should be a valid integer"),
    ("orphans", True, "{unusable}: bad value in orphans: Input should be a valid integer"),
    ("quality", DROP, "{unusable}: missing field quality"),
    ("quality/orphan_record", -1, "{unusable}: bad value in quality.orphan_record: Input should be greater than or "
                                  "equal to 0"),
    ("tables", DROP, "{unusable}: missing field tables"),
    ("tables", "quality_issues", "{unusable}: bad value in tables: Input should be a valid list"),
    ("outputs", DROP, "{unusable}: missing field outputs"),
    ("outputs", ["event_log.parquet"], "{unusable}: bad value in outputs: Input should be a valid dictionary"),
    ("outputs/event_log.parquet", [2345], "{unusable}: bad value in outputs.event_log.parquet: List should have at "
                                          "least 2 items after validation, not 1"),
    ("outputs/event_log.parquet", [2345, -1], "{unusable}: bad value in outputs.event_log.parquet.1: Input should "
                                              "be greater than or equal to 0"),
    ("parts", 2, "{unusable}: unknown field parts"),
]


@pytest.mark.parametrize(("where", "value", "reason"), FIELDS, ids=[f"{w}={v!r}" for w, v, _ in FIELDS])
def test_every_field_is_checked_and_a_bad_one_is_the_reason_of_a_full_build(
        tmp_path: Path, where: str, value: Any, reason: str) -> None:
    _frames(tmp_path, STATE.generation)
    path = state_dir(tmp_path) / "state.json"
    path.write_text(json.dumps(_changed(where, value)))
    assert TransformState.read(tmp_path) == reason.format(unusable=f"the previous build's state {path} is unusable")
    assert TransformState.load(tmp_path) is None


def test_every_field_is_in_the_table() -> None:
    assert {w.split("/")[0] for w, _, _ in FIELDS} >= set(TransformState.model_fields)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no previous build"),
    ("{", "{unusable}: not readable JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
          "(char 1))"),
    ("[]", "{unusable}: not a JSON object"),
])
def test_no_state_or_no_json(tmp_path: Path, content: str | None, reason: str) -> None:
    path = state_dir(tmp_path) / "state.json"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    assert TransformState.read(tmp_path) == reason.format(unusable=f"the previous build's state {path} is unusable")


def test_outputs_missing_damaged_or_replaced_since_they_were_published(tmp_path: Path) -> None:
    _frames(tmp_path, STATE.generation)
    state = STATE.model_copy(deep=True)
    state.outputs.clear()
    for name in (*FRAMES, *state.tables):
        state.record(tmp_path, frame_path(tmp_path, name, state.generation))
    log = tmp_path / "event_log.parquet"
    pl.DataFrame({"x": [1, 2, 3]}).write_parquet(log)
    state.record(tmp_path, log)
    state.save(tmp_path)
    assert TransformState.read(tmp_path) == state and state.damaged(tmp_path) is None
    frame_path(tmp_path, "orphans", state.generation).unlink()
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 1
    log.write_bytes(bytes(data))  # the same size, one bit changed
    case_map = frame_path(tmp_path, "case_map", state.generation)
    case_map.write_bytes(case_map.read_bytes() + b"\n")
    assert state.damaged(tmp_path) == (
        "event_log.parquet was damaged or replaced (its checksum changed since l2c published it); "
        f"state/transform/{case_map.name} was damaged or replaced ({case_map.stat().st_size} bytes, "
        f"{case_map.stat().st_size - 1} when l2c published it); state/transform/orphans-000003.parquet is missing")
