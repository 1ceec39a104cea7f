"""connector/lake.py: deterministic durable pages, idempotent rewrites, current() ordering and deletions, schema
evolution, crash safety (a child SIGKILLed mid-write), and incremental pages equal to one full read."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.lake import Lake
from connector.rows import deletions_frame
from ground.errors import L2CError
from tests.connector.conftest import PAUSE_BEFORE_RENAME

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
SCHEMA = pl.Schema({"leadid": pl.String(), "name": pl.String(), "amount": pl.Decimal(38, 4), "_version": pl.Int64()})


def page(*rows: tuple[str, str | None, int | None], amount: str = "1.0000") -> pl.DataFrame:
    return pl.DataFrame([{"leadid": i, "name": n, "amount": Decimal(amount), "_version": v} for i, n, v in rows],
                        schema=SCHEMA)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path)


def names(lake: Lake) -> dict[str, str | None]:
    current = lake.current("lead", "leadid")
    return dict(zip(current.get_column("leadid").to_list(), current.get_column("name").to_list(), strict=True))


def test_page_name_lineage_and_exact_values(lake: Lake, tmp_path: Path) -> None:
    path = lake.write_page("lead", "sync-1", 7, page(("a", "Zoë \"q\"", 3), amount="922337203685477.5807"),
                           run_id="r1", extracted_at=at(0).astimezone(datetime.now().astimezone().tzinfo))
    assert path == tmp_path / "raw" / "lead" / "sync-1" / "rows-000007.parquet"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows-000007.parquet"]  # no temp file left
    landed = pl.read_parquet(path)
    assert landed.columns == [*SCHEMA, "_run_id", "_extracted_at", "_stream", "_page", "_op", "_deleted_at"]
    row = landed.row(0, named=True)
    assert row["amount"] == Decimal("922337203685477.5807") and row["name"] == "Zoë \"q\""
    assert row["_extracted_at"] == at(0) and landed.schema["_extracted_at"] == pl.Datetime("us", "UTC")
    assert (row["_run_id"], row["_stream"], row["_page"], row["_op"], row["_deleted_at"]) == (
        "r1", "sync-1", 7, "upsert", None)


def test_rewriting_a_page_replaces_it(lake: Lake) -> None:
    lake.write_page("lead", "s", 1, page(("a", "first try", 1), ("b", "B", 2)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "s", 1, page(("a", "A", 1), ("b", "B", 2)), run_id="r2", extracted_at=at(1))
    assert len(lake.pages("lead")) == 1
    assert lake.scan("lead").select(pl.len()).collect().item() == 2
    assert names(lake) == {"a": "A", "b": "B"}
    once = Lake(lake.root.parent / "once")
    once.write_page("lead", "s", 1, page(("a", "A", 1), ("b", "B", 2)), run_id="x", extracted_at=at(5))
    assert once.fingerprint("lead", "leadid") == lake.fingerprint("lead", "leadid")


def test_fingerprint_sees_content_not_lineage(tmp_path: Path) -> None:
    one, two, other = Lake(tmp_path / "1"), Lake(tmp_path / "2"), Lake(tmp_path / "3")
    one.write_page("lead", "full", 1, page(("a", "A", 1), ("b", "B", 2)), run_id="r1", extracted_at=at(0))
    two.write_page("lead", "delta-9", 3, page(("b", "B", 2)), run_id="r7", extracted_at=at(9))
    two.write_page("lead", "delta-9", 4, page(("a", "A", 1)), run_id="r8", extracted_at=at(10))
    other.write_page("lead", "full", 1, page(("a", "A", 1), ("b", "B", 2), amount="1.0001"), run_id="r1",
                     extracted_at=at(0))
    assert one.fingerprint("lead") == one.fingerprint("lead", "leadid") == two.fingerprint("lead")
    assert other.fingerprint("lead") != one.fingerprint("lead")


def test_highest_version_wins_whatever_the_extraction_order(lake: Lake) -> None:
    lake.write_page("lead", "s1", 1, page(("a", "v2", 2)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "s2", 1, page(("a", "v1 read late", 1)), run_id="r2", extracted_at=at(1))
    assert names(lake) == {"a": "v2"}


def test_equal_versions_break_by_extraction_time_then_page(lake: Lake) -> None:
    lake.write_page("lead", "s1", 2, page(("a", "earlier", None)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "s2", 1, page(("a", "later", None)), run_id="r2", extracted_at=at(1))
    lake.write_page("lead", "s3", 1, page(("b", "page 1", 4)), run_id="r3", extracted_at=at(2))
    lake.write_page("lead", "s3", 2, page(("b", "page 2", 4)), run_id="r3", extracted_at=at(2))
    assert names(lake) == {"a": "later", "b": "page 2"}


def test_deletion_hides_older_versions_and_a_recreation_comes_back(lake: Lake) -> None:
    lake.write_page("lead", "s1", 1, page(("a", "A", 5), ("b", "B", 6)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "d1", 1, deletions_frame(["a", "never-seen"], "leadid"), run_id="r2",
                    extracted_at=at(1), kind="deletions")
    assert names(lake) == {"b": "B"}
    lake.write_page("lead", "s2", 1, page(("a", "stale re-read", 5)), run_id="r3", extracted_at=at(2))
    assert names(lake) == {"b": "B"}  # the version the deletion already superseded does not come back
    lake.write_page("lead", "s3", 1, page(("a", "re-created", 9)), run_id="r4", extracted_at=at(3))
    assert names(lake) == {"a": "re-created", "b": "B"}
    deleted = lake.scan("lead").filter(pl.col("_op") == "delete").collect()
    assert deleted.get_column("_deleted_at").to_list() == [at(1), at(1)]


def test_deletion_in_the_same_page_as_the_row_comes_after_it(lake: Lake) -> None:
    lake.write_page("lead", "d", 1, page(("a", "A", 3)), run_id="r", extracted_at=at(0))
    lake.write_page("lead", "d", 1, deletions_frame(["a"], "leadid"), run_id="r", extracted_at=at(0),
                    kind="deletions")
    assert names(lake) == {}


def test_deletion_date_from_the_frame_is_kept(lake: Lake) -> None:
    gone = deletions_frame(["a"], "leadid").with_columns(pl.lit(at(-48)).alias("_deleted_at"))
    lake.write_page("lead", "audit", 1, gone, run_id="r", extracted_at=at(0), kind="deletions")
    assert lake.scan("lead").collect().get_column("_deleted_at").to_list() == [at(-48)]


def test_new_column_is_null_in_older_pages(lake: Lake) -> None:
    lake.write_page("lead", "s1", 1, page(("a", "A", 1)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "s2", 1, page(("b", "B", 2)).with_columns(pl.lit(7, pl.Int32).alias("score")),
                    run_id="r2", extracted_at=at(1))
    current = lake.current("lead", "leadid")
    assert current.select("leadid", "score").rows() == [("a", None), ("b", 7)]
    assert current.columns[:5] == ["leadid", "name", "amount", "score", "_version"]


def test_a_column_that_changed_type_is_a_clear_error(lake: Lake) -> None:
    lake.write_page("lead", "s1", 1, page(("a", "A", 1)), run_id="r1", extracted_at=at(0))
    lake.write_page("lead", "s2", 1, page(("b", "B", 2)).with_columns(pl.col("amount").cast(pl.Float64)),
                    run_id="r2", extracted_at=at(1))
    with pytest.raises(L2CError, match="column amount is Decimal.* in older pages of lead but Float64"):
        lake.current("lead", "leadid")


def test_quarantine_lands_apart(lake: Lake) -> None:
    lake.write_page("lead", "s", 1, page(("a", "A", 1)), run_id="r", extracted_at=at(0))
    lake.write_quarantine("lead", "s", 1, [({"leadid": "b", "amount": Decimal("1.00001")}, "amount: too precise")],
                          run_id="r", extracted_at=at(0))
    assert names(lake) == {"a": "A"}
    held = lake.scan_quarantine("lead").collect()
    assert held.select("reason", "_op").rows() == [("amount: too precise", "quarantine")]
    assert '"amount": "1.00001"' in held.item(0, "record")


def test_empty_table_and_helpers(lake: Lake) -> None:
    assert lake.current("lead", "leadid").height == 0 and not lake.has_rows("lead")
    assert lake.versions("lead", "leadid", ["a"]).height == 0
    lake.write_page("lead", "s", 1, page(("a", "A", 1), ("b", "B", 2)), run_id="r", extracted_at=at(0))
    lake.write_page("lead", "t", 1, page(("a", "A2", 3)), run_id="r", extracted_at=at(1))
    assert lake.has_rows("lead")
    assert lake.versions("lead", "leadid", pl.Series(["a"])).rows() == [("a", 1), ("a", 3)]
    assert lake.stream_ids("lead", "t", "leadid").get_column("leadid").to_list() == ["a"]


@pytest.mark.parametrize("bad", ["../x", ".hidden", "a/b", "", "a\x00"])
def test_unsafe_path_components_are_refused(lake: Lake, bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe file name"):
        lake.write_page(bad, "s", 1, page(), run_id="r", extracted_at=at(0))
    with pytest.raises(ValueError, match="not a safe file name"):
        lake.write_page("lead", bad, 1, page(), run_id="r", extracted_at=at(0))


def test_naive_extraction_time_is_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        lake.write_page("lead", "s", 1, page(), run_id="r", extracted_at=datetime(2024, 1, 1))


# --- a crash in the middle of write_page ------------------------------------------------------------------

CHILD_WRITE = """
import io
from datetime import UTC, datetime
from decimal import Decimal
import polars as pl
from connector.lake import Lake
frame = pl.DataFrame({{"leadid": ["a", "z"], "name": ["NEW", "NEW"], "amount": [Decimal("9"), Decimal("9")],
                      "_version": [99, 99]}}, schema_overrides={{"amount": pl.Decimal(38, 4)}})
{patch}
Lake({data_dir!r}).write_page("lead", "s", 1, frame, run_id="crashed", extracted_at=datetime.now(UTC))
print("the crash point was never reached", file=sys.stderr)
"""

PATCHES = {
    # half of the Parquet bytes are on disk when the process dies
    "torn": """
real = pl.DataFrame.write_parquet
def torn(self, handle, **kwargs):
    buffer = io.BytesIO()
    real(self, buffer, **kwargs)
    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    handle.flush()
    pause()
pl.DataFrame.write_parquet = torn
""",
    # the whole file is written and about to be fsynced, not yet renamed
    "before_rename": PAUSE_BEFORE_RENAME,
}


@pytest.mark.parametrize("crash", sorted(PATCHES))
def test_killed_write_leaves_the_previous_page(lake: Lake, tmp_path: Path, crash: str,
                                               lake_kill_during: Callable[[str], None]) -> None:
    lake.write_page("lead", "s", 1, page(("a", "OLD", 1)), run_id="r1", extracted_at=at(0))
    before = lake.fingerprint("lead", "leadid")
    lake_kill_during(CHILD_WRITE.format(patch=PATCHES[crash], data_dir=str(tmp_path)))
    leftovers = [p for p in (tmp_path / "raw" / "lead" / "s").iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the child did die mid-write
    assert names(lake) == {"a": "OLD"} and lake.fingerprint("lead", "leadid") == before
    assert lake.cleanup() == leftovers and not leftovers[0].exists()
    lake.write_page("lead", "s", 1, page(("a", "NEW", 2)), run_id="r2", extracted_at=at(1))  # the rerun
    assert names(lake) == {"a": "NEW"}


# --- incremental pages equal one full read ----------------------------------------------------------------

# A source history: each step upserts (a new version) or deletes an id; `cuts` split it into incremental syncs.
STEPS = st.lists(st.tuples(st.sampled_from("abcdef"), st.booleans()), min_size=1, max_size=30)


def _replay(steps: list[tuple[str, bool]]) -> list[dict[str, tuple[str, int]]]:
    """The table after each step: id -> (name, version)."""
    table: dict[str, tuple[str, int]] = {}
    states = []
    for version, (key, delete) in enumerate(steps, start=1):
        if delete:
            table.pop(key, None)
        else:
            table[key] = (f"{key}@{version}", version)
        states.append(dict(table))
    return states


def _land(lake: Lake, stream: str, number: int, rows: dict[str, tuple[str, int]], gone: list[str],
          when: datetime) -> None:
    frame = page(*[(k, name, v) for k, (name, v) in sorted(rows.items())])
    lake.write_page("lead", stream, number, frame, run_id=stream, extracted_at=when)
    if gone:
        lake.write_page("lead", stream, number, deletions_frame(sorted(gone), "leadid"), run_id=stream,
                        extracted_at=when, kind="deletions")


@settings(max_examples=40, deadline=None)
@given(STEPS, st.sets(st.integers(0, 29)), st.sets(st.integers(0, 29)))
def test_incremental_pages_equal_one_full_read(steps: list[tuple[str, bool]], cuts: set[int],
                                               rewrites: set[int]) -> None:
    states = _replay(steps)
    final = states[-1]
    with tempfile.TemporaryDirectory() as root:
        full, incremental = Lake(os.path.join(root, "full")), Lake(os.path.join(root, "inc"))
        _land(full, "full", 1, final, [], at(100))
        bounds = sorted({c for c in cuts if c < len(steps) - 1} | {len(steps) - 1})
        previous: dict[str, tuple[str, int]] = {}
        start = 0
        for number, end in enumerate(bounds, start=1):
            touched = {key for key, _ in steps[start:end + 1]}
            now = states[end]
            # A delta: the changed rows as they are now, then every touched id that no longer exists.
            rows = {k: now[k] for k in touched if k in now and now[k] != previous.get(k)}
            gone = [k for k in touched if k not in now]
            _land(incremental, f"delta-{number}", 1, rows, gone, at(number))
            if number in rewrites:  # a resumed run lands the same page again
                _land(incremental, f"delta-{number}", 1, rows, gone, at(number) + timedelta(minutes=5))
            previous, start = now, end + 1
        expected = {k: name for k, (name, _) in final.items()}
        assert names(incremental) == expected == names(full)
        assert incremental.fingerprint("lead", "leadid") == full.fingerprint("lead", "leadid")
