"""`l2c export --format pa-incremental`: the first export writes every event, a second with nothing new writes no
file, and after the org moves on (new leads, leads that became opportunities, stage changes) the next file holds
exactly the events new to the log. Names sort in write order, all files share the CSV export's header, and the
folder read as one holds every event of the log exactly once, plus what an append-only refresh cannot take
back (events that vanished, or moved case, keep their first rows: counted and warned about). A crash between
writing and renaming duplicates and loses nothing; two exports cannot append at once.

Expected values come from the event logs of the two org states, never from the exporter.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pm4py
import polars as pl
import pytest

from connector.extract import extract
from exports import Exported, pa_incremental, tabular
from ground.errors import ConfigError, RunLocked
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from tests.exports.conftest import ORDER, Built, data_dir_with, log_dfg, synthetic_log

NAME = re.compile(r"^\d{14}\.csv$")
ATTRIBUTES = ["case_id", "owner", "stage", "outcome"]


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Story:
    folder: Path
    old: pl.DataFrame  # the event log at the first export
    new: pl.DataFrame  # after the org moved on
    first: Exported
    again: Exported  # nothing new
    second: Exported
    warnings: list[str] = field(default_factory=list)


def ids(frame: pl.DataFrame, column: str = "event_id") -> list[str]:
    return frame.get_column(column).to_list()


def folder(path: Path) -> pl.DataFrame:
    """Every *.csv of the folder as one table, the way Power Automate reads a folder."""
    return pl.read_csv(path / "*.csv", infer_schema=False)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("pa")
    out = root / "powerautomate"
    handler = Warnings()
    logging.getLogger("l2c.exports").addHandler(handler)
    try:
        with Sandbox(root / "sb", OrgState(seed=23, leads=150)) as sandbox:
            settings = settings_for(sandbox, root / "data")
            assert extract(settings).exit_code == 0
            old = pl.read_parquet(transform(settings).event_log)
            first = pa_incremental.export(settings, out)
            again = pa_incremental.export(settings, out)
            sandbox.advance(6.0)
            assert extract(settings).exit_code == 0
            new = pl.read_parquet(transform(settings).event_log)
            second = pa_incremental.export(settings, out, batch_size=64)  # many batches, some with nothing new
            full = tabular.export(settings, root / "full.csv")
    finally:
        logging.getLogger("l2c.exports").removeHandler(handler)
    assert full.events == new.height
    yield Story(out, old, new, first, again, second, handler.messages)


def test_first_export_writes_every_event_and_a_rerun_nothing(story: Story) -> None:
    assert len(story.first.files) == 1
    written = pl.read_csv(story.first.files[0], infer_schema=False)
    assert sorted(ids(written, "Event ID")) == sorted(ids(story.old))
    assert (story.first.events, story.first.cases) == (story.old.height, story.old.get_column("case_id").n_unique())
    assert (story.again.events, story.again.files) == (0, [])


def test_next_export_holds_exactly_the_new_events(story: Story) -> None:
    new_ids = set(ids(story.new)) - set(ids(story.old))
    assert new_ids  # the org moved on
    assert len(story.second.files) == 1
    written = pl.read_csv(story.second.files[0], infer_schema=False)
    assert sorted(ids(written, "Event ID")) == sorted(new_ids)
    assert story.second.events == len(new_ids)
    # the new rows carry the new log's values, in its order
    expected = story.new.filter(pl.col("event_id").is_in(list(new_ids))).sort(ORDER)
    assert ids(written, "Event ID") == ids(expected)
    assert ids(written, "Case ID") == ids(expected, "case_id")


def test_names_sort_in_write_order_and_headers_match_the_full_export(story: Story) -> None:
    files = sorted(story.folder.iterdir())
    assert [p.name for p in files] == [p.name for p in story.first.files + story.second.files]
    assert all(NAME.fullmatch(p.name) for p in files)
    headers = {p.read_bytes().split(b"\n", 1)[0] for p in [*files, story.folder.parent / "full.csv"]}
    assert len(headers) == 1


def test_the_folder_holds_every_event_once_and_shows_what_append_only_cannot_undo(story: Story) -> None:
    union = folder(story.folder)
    counts = union.group_by("Event ID").len()
    assert counts.get_column("len").max() == 1  # nothing twice
    old_ids, new_ids = set(ids(story.old)), set(ids(story.new))
    assert set(ids(union, "Event ID")) == old_ids | new_ids  # every event of the log, plus what left it
    vanished = old_ids - new_ids
    assert union.height == story.new.height + len(vanished)

    # events exported at the first state keep their first rows: the limitation, made visible
    both = story.old.join(story.new, on="event_id", suffix="_new")
    moved = both.filter(pl.col("case_id") != pl.col("case_id_new"))
    changed = both.filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in ATTRIBUTES))
    assert moved.height > 0 and changed.height > moved.height  # leads became opportunities, stages moved on
    exported = union.filter(pl.col("Event ID").is_in(ids(changed))).sort("Event ID")
    stale = changed.sort("event_id")
    assert ids(exported, "Case ID") == ids(stale, "case_id")  # the old case, not the new one
    assert exported.get_column("Stage").to_list() == stale.get_column("stage").to_list()
    assert [m for m in story.warnings if "append" in m] == [
        f"{len(vanished)} exported events are no longer in the event log and {moved.height} now belong to another "
        "case; an incremental refresh can only append, so Power Automate keeps their old rows until a full refresh "
        "(`l2c export --format csv`)"]


def test_pm4py_reads_the_folder_as_one_log(story: Story) -> None:
    frame = pd.concat([pd.read_csv(p) for p in sorted(story.folder.glob("*.csv"))], ignore_index=True)
    frame = pm4py.format_dataframe(frame, case_id="Case ID", activity_key="Activity", timestamp_key="Start Timestamp")
    current = frame[frame["Event ID"].isin(ids(story.new))]
    assert len(current) == story.new.height
    # every case no event moved into or out of reads back as the log has it
    moved = story.old.join(story.new, on="event_id", suffix="_new").filter(pl.col("case_id") != pl.col("case_id_new"))
    affected = set(ids(moved, "case_id")) | set(ids(moved, "case_id_new"))
    dfg, starts, ends = pm4py.discover_dfg(current[~current["case:concept:name"].isin(affected)])
    steady = story.new.filter(~pl.col("case_id").is_in(list(affected)))
    assert (dict(dfg), dict(starts), dict(ends)) == log_dfg(steady)


def test_vanished_moved_and_changed_events_stay_as_first_exported(
        built: Built, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t0 = datetime(2025, 5, 1, 8, tzinfo=UTC)
    base = [{"event_id": f"e{i}", "case_id": "lead-1", "activity": "Lead Captured", "owner": "Ana",
             "timestamp": t0.replace(hour=8 + i)} for i in range(3)]
    before = synthetic_log(built.log.schema, base)
    after = synthetic_log(built.log.schema, [
        {**base[0], "owner": "Bo"},  # owner changed
        {**base[1], "case_id": "opp-1"},  # moved when the lead became an opportunity
        # base[2] vanished (record deleted)
        {"event_id": "e3", "case_id": "opp-1", "activity": "Opportunity Created", "timestamp": t0.replace(hour=12)},
    ])
    out = tmp_path / "pa"
    settings = data_dir_with(tmp_path / "data", before, built.settings)
    pa_incremental.export(settings, out)
    data_dir_with(tmp_path / "data", after, built.settings)
    with caplog.at_level(logging.WARNING, logger="l2c.exports"):
        done = pa_incremental.export(settings, out)
    assert "1 exported events are no longer in the event log and 1 now belong to another case" in caplog.text
    assert (done.events, done.cases) == (1, 1)
    union = folder(out).sort("Event ID")
    assert ids(union, "Event ID") == ["e0", "e1", "e2", "e3"]
    assert union.get_column("Owner").to_list() == ["Ana", "Ana", "Ana", None]  # first exported values
    assert ids(union, "Case ID") == ["lead-1", "lead-1", "lead-1", "opp-1"]


def crash_before_rename(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """os.replace raises once, after leaving behind what a SIGKILL there would: the complete temp file."""
    left: list[str] = []
    real = os.replace

    def crash(src: Any, dst: Any) -> None:
        monkeypatch.setattr(os, "replace", real)
        leftover = Path(src).with_name(f".{Path(dst).name}.424242.deadbeef.tmp")
        os.link(src, leftover)
        left.append(leftover.name)
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    return left


def test_a_crash_before_the_rename_loses_and_duplicates_nothing(
        built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pa"
    left = crash_before_rename(monkeypatch)
    with pytest.raises(OSError, match="killed"):
        pa_incremental.export(built.settings, out)
    assert list(out.glob("*.csv")) == []  # nothing Power Automate would read
    assert [p.name for p in out.iterdir()] == left and left[0].startswith(".") and left[0].endswith(".tmp")

    done = pa_incremental.export(built.settings, out)
    assert [p.name for p in out.iterdir()] == [done.files[0].name]  # the leftover is gone
    union = folder(out)
    assert sorted(ids(union, "Event ID")) == sorted(ids(built.log))
    assert pa_incremental.export(built.settings, out).files == []


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_names_follow_the_newest_file_when_the_clock_does_not(built: Built, tmp_path: Path) -> None:
    t0 = datetime(2025, 5, 1, 8, tzinfo=UTC)
    rows = [{"event_id": f"e{i}", "case_id": "c", "activity": "A", "timestamp": t0.replace(minute=i)}
            for i in range(3)]
    out = tmp_path / "pa"
    noon = datetime(2025, 6, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    names: list[str] = []
    for step, clock in enumerate([noon, noon, noon.replace(hour=11)]):  # same second twice, then a clock skew
        settings = data_dir_with(tmp_path / "data", synthetic_log(built.log.schema, rows[: step + 1]), built.settings)
        names += [p.name for p in pa_incremental.export(settings, out, now=at(clock)).files]
    assert names == ["20250601120000.csv", "20250601120001.csv", "20250601120002.csv"]


def test_a_second_export_into_the_same_folder_waits_its_turn(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "pa"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RunLocked, match="another l2c export"):
            pa_incremental.export(built.settings, out)
    finally:
        os.close(fd)
    assert pa_incremental.export(built.settings, out).events == built.log.height


def test_a_foreign_csv_in_the_folder_is_refused(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "pa"
    out.mkdir()
    (out / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="header"):
        pa_incremental.export(built.settings, out)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="folder"):
        pa_incremental.export(built.settings, tmp_path / "file")
