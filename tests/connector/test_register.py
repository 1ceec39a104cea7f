"""connector/register.py and Lake.damaged / set_aside / read_again: a landed page that goes missing, is cut short
or changes is named; one unchanged (or restored with the same bytes) is not; the register survives a torn line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from connector.lake import Lake
from connector.register import Gone
from ground.errors import ConfigError


def land(lake: Lake, table: str, page: int) -> Path:
    frame = pl.DataFrame({f"{table}id": [f"{table}-{page}-{i}" for i in range(50)], "_version": list(range(50))})
    return lake.write_page(table, "sync-1", page, frame, run_id="r1")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path)


def test_a_landed_page_is_registered_and_checked_by_size_then_checksum(lake: Lake) -> None:
    pages = [land(lake, "lead", n) for n in (1, 2, 3, 4)]
    assert set(lake.register.load("lead")) == {f"sync-1/{p.name}" for p in pages}
    assert lake.damaged() == []
    size = pages[1].stat().st_size
    pages[0].unlink()
    os.truncate(pages[1], 10)
    data = bytearray(pages[2].read_bytes())
    data[len(data) // 2] ^= 0xFF
    pages[2].write_bytes(bytes(data))  # same size, another mtime, other bytes
    os.utime(pages[3], ns=(1, 1))  # touched: same bytes
    found = {d.page.name: d.why for d in lake.damaged()}
    assert found == {pages[0].name: "missing", pages[1].name: f"10 bytes where {size} landed "
                     "(truncated or overwritten)", pages[2].name: "changed since it landed (its checksum differs)"}


def test_an_unknown_page_is_adopted_when_it_reads_and_named_when_it_does_not(lake: Lake, tmp_path: Path) -> None:
    pages = [land(lake, "quote", n) for n in (1, 2)]
    lake.register.path("quote").unlink()  # a lake landed by an l2c before the register
    os.truncate(pages[1], 100)
    assert [(d.page, d.why.split(" (")[0]) for d in lake.damaged(adopt=True)] == [
        (pages[1], "not a readable Parquet file")]
    assert set(lake.register.load("quote")) == {f"sync-1/{pages[0].name}"}  # the whole one, as found
    # A page the last transform read, neither on disk nor known: missing.
    pages[0].unlink()
    assert {(d.page, d.why) for d in lake.damaged(["raw/quote/sync-1/rows-000009.parquet"])} >= {
        (tmp_path / "raw/quote/sync-1/rows-000009.parquet", "missing"), (pages[0], "missing")}


def test_a_page_set_aside_is_waited_for_until_its_table_is_read_again(lake: Lake, tmp_path: Path) -> None:
    page = land(lake, "lead", 1)
    os.truncate(page, 100)
    damaged = lake.damaged()
    lake.set_aside(damaged, "run-2", read_again={"lead"})
    assert not page.exists() and (tmp_path / "damaged/run-2/lead/sync-1" / page.name).stat().st_size == 100
    assert lake.damaged() == [] and [d.page for d in lake.waiting()] == [page]
    lake.read_again("lead", "run-3")
    assert lake.waiting() == [] and lake.register.load("lead")[f"sync-1/{page.name}"] == Gone(
        damaged[0].why, "run-2", "run-3")
    assert lake.damaged([f"raw/lead/sync-1/{page.name}"]) == []  # known as gone: not missing


def test_a_torn_last_line_is_skipped_and_cut_a_bad_line_is_refused(lake: Lake, tmp_path: Path) -> None:
    land(lake, "lead", 1)
    path = lake.register.path("lead")
    with open(path, "ab") as handle:
        handle.write(b'{"page": "sync-1/rows-0000')  # a crash in the middle of an append
    assert set(Lake(tmp_path).register.load("lead")) == {"sync-1/rows-000001.parquet"}
    land(Lake(tmp_path), "lead", 2)  # a later run appends after cutting it
    assert set(Lake(tmp_path).register.load("lead")) == {"sync-1/rows-000001.parquet", "sync-1/rows-000002.parquet"}
    path.write_bytes(b"not json\n" + path.read_bytes())
    with pytest.raises(ConfigError, match=rf"register of landed pages {path} is unusable: line 1 is not one l2c"):
        lake.damaged()


def test_the_register_is_user_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        land(Lake(tmp_path), "lead", 1)
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "state", tmp_path / "state" / "pages", tmp_path / "state" / "pages" / "lead.jsonl")}
    assert modes == {"state": 0o700, "state/pages": 0o700, "state/pages/lead.jsonl": 0o600}
