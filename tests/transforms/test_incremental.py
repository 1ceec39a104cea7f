"""Issue #11: the transform is incremental (only the cases touched by new raw rows are recomputed) and its result
equals a full rebuild: after every run of a sequence (audit readable or withdrawn, deletions included), after
a transform killed between its outputs and its state, and never from a stale state. Plus the touched-case
rules on hand-made frames."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from config.settings import Settings
from config.tables import load_tables
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.webapi import PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms import build_state
from transforms.build import BuildResult
from transforms.cases import attribute_context, context_cases
from transforms.incremental import touched_cases

OUTPUTS = ("event_log.parquet", "cases.parquet")


def outputs(data_dir: Path) -> dict[str, pl.DataFrame]:
    frames = {name: pl.read_parquet(data_dir / name) for name in OUTPUTS}
    with duckdb.connect(str(data_dir / "l2c.duckdb"), read_only=True) as con:
        for table in ("event_log", "cases", "quality_issues", "quotes", "invoices"):
            frames[f"duckdb.{table}"] = con.sql(f"select * from {table}").pl()
    return frames


def full_rebuild(sandbox: Sandbox, data_dir: Path, scratch: Path) -> dict[str, pl.DataFrame]:
    """A from-scratch transform of a copy of the same lake and org metadata (no transform state)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(data_dir / "raw", scratch / "raw")
    (scratch / "state").mkdir()  # the columns' date behaviours, which the quality report reads
    shutil.copy2(data_dir / "state" / "metadata.json", scratch / "state" / "metadata.json")
    result = transform(settings_for(sandbox, scratch))
    assert result.mode == "full" and result.reason == "no previous build"
    return outputs(scratch)


def assert_same(incremental: dict[str, pl.DataFrame], full: dict[str, pl.DataFrame]) -> None:
    for name, frame in full.items():
        got = incremental[name]
        if name.startswith("duckdb."):  # a table is a set of rows: compare in one order
            got, frame = got.sort(got.columns, nulls_last=True), frame.sort(frame.columns, nulls_last=True)
        assert got.equals(frame), name


def changed_cases(before: pl.DataFrame, after: pl.DataFrame) -> set[str]:
    """Cases whose events differ between two logs (computed from the logs alone)."""
    columns = after.columns
    gone = before.join(after, on=columns, how="anti", nulls_equal=True)
    new = after.join(before, on=columns, how="anti", nulls_equal=True)
    return set(gone.get_column("case_id")) | set(new.get_column("case_id"))


@pytest.mark.parametrize("audit", ["readable", "withdrawn"])
def test_every_incremental_transform_equals_a_full_rebuild(tmp_path: Path, audit: str) -> None:
    withdrawn = {PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY} if audit == "withdrawn" else set()
    with Sandbox(tmp_path / "sb", OrgState(seed=17, leads=700), SandboxOptions(withdrawn_privileges=withdrawn)) as sb:
        settings = settings_for(sb, tmp_path / "data")
        assert extract(settings).exit_code == 0
        first = transform(settings)
        assert first.mode == "full"
        previous = pl.read_parquet(first.event_log)
        for days in (1.0, 3.0, 0.25, 6.0):
            sb.advance(days)
            assert extract(settings).exit_code == 0
            result = transform(settings)
            assert result.mode == "incremental", result.reason
            mine = outputs(settings.data_dir)
            assert_same(mine, full_rebuild(sb, settings.data_dir, tmp_path / "full"))
            # Only touched cases: at least every case whose events changed, far fewer than all of them.
            changed = changed_cases(previous, mine["event_log.parquet"])
            assert len(changed) <= result.recomputed < result.cases / 2, (len(changed), result.recomputed)
            previous = mine["event_log.parquet"]
        deleted = previous.filter(pl.col("activity").str.ends_with(" Deleted"))
        if audit == "readable":
            assert deleted.height > 0  # the sequence covered deletions


def test_a_rerun_with_nothing_new_does_nothing(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=2, leads=200)) as sb:
        settings = settings_for(sb, tmp_path / "data")
        assert extract(settings).exit_code == 0
        transform(settings)
        stamps = {name: (settings.data_dir / name).stat().st_mtime_ns for name in (*OUTPUTS, "l2c.duckdb")}
        assert extract(settings).exit_code == 0  # nothing changed at the source: no new page
        again = transform(settings)
    assert again.mode == "unchanged" and again.recomputed == 0
    assert stamps == {name: (settings.data_dir / name).stat().st_mtime_ns for name in stamps}


def _advanced(tmp_path: Path, sb: Sandbox, days: float = 2.0) -> Settings:
    settings = settings_for(sb, tmp_path / "data")
    assert extract(settings).exit_code == 0
    transform(settings)
    sb.advance(days)
    assert extract(settings).exit_code == 0
    return settings


@pytest.mark.parametrize("fails_in", ["state", "database"])
def test_a_transform_killed_before_its_state_is_redone_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails_in: str) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=4, leads=400)) as sb:
        settings = _advanced(tmp_path, sb)
        with monkeypatch.context() as patch:
            def killed(*args: object, **kwargs: object) -> None:
                raise KeyboardInterrupt
            if fails_in == "state":  # outputs and database staged, state not
                patch.setattr(build_state.TransformState, "save", killed)
            else:  # the outputs staged, the database not
                patch.setattr("sql.load.load", killed)
            with pytest.raises(KeyboardInterrupt):
                transform(settings)
        # Nothing was published (the outputs, the database and the state go together): the build is done again.
        assert not list(settings.data_dir.glob(".*.tmp"))
        redone = transform(settings)
        assert redone.mode == "incremental"
        assert_same(outputs(settings.data_dir), full_rebuild(sb, settings.data_dir, tmp_path / "full"))


def test_changed_rules_or_a_changed_page_force_a_full_rebuild(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=5, leads=200)) as sb:
        settings = _advanced(tmp_path, sb)
        rules = tmp_path / "activities.toml"
        packaged = Path(build_state.__file__).parents[1] / "config" / "activities.toml"
        rules.write_text(packaged.read_text("utf-8").replace('name = "Invoice Sent"', 'name = "Invoice Mailed"'))
        renamed = transform(settings_for(sb, settings.data_dir, L2C_ACTIVITY_MAP=str(rules)))
        assert (renamed.mode, renamed.reason) == ("full", "the activity rules, table declarations or transform "
                                                          "code changed")
        log = pl.read_parquet(renamed.event_log)
        assert "Invoice Mailed" in log.get_column("activity").to_list()
        assert "Invoice Sent" not in log.get_column("activity").to_list()
        back = transform(settings)
        assert back.mode == "full"
        page = next((settings.data_dir / "raw" / "lead").rglob("rows-*.parquet"))
        os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 1))
        touched = transform(settings)
        assert (touched.mode, touched.reason) == (
            "full", "a landed page the previous build read has changed or vanished")
        (settings.data_dir / "cases.parquet").unlink()
        assert transform(settings).reason == "cases.parquet is missing"
        forced: BuildResult = transform(settings, full=True)
        assert (forced.mode, forced.reason) == ("full", "asked for (--full)")
        state = build_state.state_dir(settings.data_dir) / build_state.STATE_FILE
        state.write_text(state.read_text().replace('"events"', '"event_count"'))  # edited by hand
        rebuilt = transform(settings)
        assert (rebuilt.mode, rebuilt.reason) == ("full", f"the previous build's state {state} is unusable: unknown "
                                                          "field event_count")
        assert rebuilt.events == forced.events and transform(settings).mode == "unchanged"  # state rewritten


# --- which cases new rows touch, on hand-made frames ----------------------------------------------------------

def _objects(*pairs: tuple[str, str]) -> pl.LazyFrame:
    return pl.LazyFrame(pairs, schema=["object_type", "object_id"], orient="row")


def _map(*rows: tuple[str, str, str | None, str | None]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema={"object_type": pl.Utf8, "object_id": pl.Utf8, "case_id": pl.Utf8,
                                      "case_type": pl.Utf8}, orient="row")


NO_USERS = pl.LazyFrame(schema={"case_id": pl.Utf8, "user_id": pl.Utf8})
NO_CONTEXT = pl.LazyFrame(schema={"case_id": pl.Utf8})
OLD = _map(("lead", "L1", "L1", "lead"), ("lead", "L2", "L2", "lead"), ("opportunity", "O1", "O1", "opportunity"),
           ("quote", "Q1", "O1", "opportunity"), ("salesorder", "S1", "O1", "opportunity"),
           ("invoice", "I1", "O1", "opportunity"), ("opportunity", "O2", "O2", "opportunity"),
           ("invoice", "I9", None, None))


def _touched(touched: pl.LazyFrame, new: pl.LazyFrame, users: pl.LazyFrame = NO_USERS,
             context: pl.LazyFrame = NO_CONTEXT) -> tuple[set[str], set[tuple[str, str]]]:
    cases, objects = touched_cases(touched, OLD, new, users, context, "systemuser")
    return set(cases.get_column("case_id")), set(objects.iter_rows())


def test_a_qualified_lead_moves_into_its_new_opportunity_and_leaves_its_lead_case() -> None:
    new = pl.concat([OLD.filter(pl.col("object_id") != "L2"),
                     _map(("lead", "L2", "O3", "opportunity"), ("opportunity", "O3", "O3", "opportunity"))])
    cases, objects = _touched(_objects(("opportunity", "O3")), new)
    assert cases == {"L2", "O3"}  # L2's old lead case loses its events, even though the lead row did not change
    assert objects == {("lead", "L2"), ("opportunity", "O3")}


def test_an_invoice_follows_its_order_to_another_opportunity() -> None:
    new = OLD.with_columns(pl.when(pl.col("object_id").is_in(["S1", "I1"])).then(pl.lit("O2"))
                           .otherwise(pl.col("case_id")).alias("case_id"))
    cases, objects = _touched(_objects(("salesorder", "S1")), new)
    assert cases == {"O1", "O2"}
    assert objects == {("opportunity", "O1"), ("quote", "Q1"), ("opportunity", "O2"), ("salesorder", "S1"),
                       ("invoice", "I1")}


def test_an_orphan_is_recomputed_when_its_rows_change_and_placed_when_it_gains_a_case() -> None:
    assert _touched(_objects(("invoice", "I9")), OLD) == (set(), {("invoice", "I9")})
    placed = OLD.with_columns(pl.when(pl.col("object_id") == "I9").then(pl.lit("O2")).otherwise(pl.col("case_id"))
                              .alias("case_id"), pl.when(pl.col("object_id") == "I9").then(pl.lit("opportunity"))
                              .otherwise(pl.col("case_type")).alias("case_type"))
    assert _touched(_objects(("salesorder", "S7")), placed) == (
        {"O2"}, {("opportunity", "O2"), ("invoice", "I9"), ("salesorder", "S7")})


def test_a_changed_user_or_account_touches_the_cases_it_appears_in() -> None:
    users = pl.LazyFrame({"case_id": ["O1", "O2", "L1"], "user_id": ["U1", "U2", "U1"]})
    assert _touched(_objects(("systemuser", "U1")), OLD, users)[0] == {"O1", "L1"}
    # The cases whose records point at a changed account (transforms.cases.context_cases, below).
    context = pl.LazyFrame({"case_id": ["O2", "L2"]})
    assert _touched(_objects(("account", "A1")), OLD, users, context)[0] == {"O2", "L2"}
    # Untouched cases; the records themselves are recomputed (a custom rule on their table gives orphan events).
    assert _touched(_objects(("account", "A2"), ("systemuser", "U3")), OLD, users) == (
        set(), {("account", "A2"), ("systemuser", "U3")})


def test_the_cases_a_changed_account_can_reach_are_those_whose_records_point_at_it() -> None:
    model = load_tables()
    keys = {t.name: f"{t.name}id" for t in model.modelled}
    assert attribute_context(model) == ["account"]  # the default attribute queries read accounts (the region)
    records = {
        "opportunity": pl.LazyFrame({"opportunityid": ["O1", "O2"], "_parentaccountid_value": ["A9", "A1"],
                                     "_customerid_value": ["A9", None]}),
        "lead": pl.LazyFrame({"leadid": ["L1", "L2"], "_parentaccountid_value": [None, "A1"]}),
        "quote": pl.LazyFrame({"quoteid": ["Q1"], "_customerid_value": ["A1"], "_opportunityid_value": ["O1"]}),
    }
    found = context_cases(records, OLD, _objects(("account", "A1")), model, keys).collect()
    # O1 reads A9, not A1; its quote's customer is A1, so O1 may read it too (the rule is every lookup).
    assert set(found.get_column("case_id")) == {"O1", "O2", "L2"}
