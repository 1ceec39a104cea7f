"""Audit rows -> events: the fast readings (one JSON parse per details text, the duplicate check before a
dedupe) give what the plain readings give, including on input they were not made for: a lake that holds an
audit page twice, and details that are not JSON or hold an array where a value was expected."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from config.activities import Rule
from connector.extract import extract
from connector.lake import Lake
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms.build import distinct
from transforms.events import _value, _with_values, events_from_audit

UPDATE = 2


def test_distinct_drops_only_repeated_keys() -> None:
    rows = pl.LazyFrame({"auditid": ["a", "b", "a", "c", "b"], "n": [1, 2, 1, 3, 2]})
    once = distinct(rows, "auditid").collect()
    assert sorted(once.get_column("auditid").to_list()) == ["a", "b", "c"]
    clean = pl.LazyFrame({"auditid": ["a", "b", "c"], "n": [1, 2, 3]})
    assert_frame_equal(distinct(clean, "auditid").collect(), clean.collect())  # untouched, order kept


def test_a_lake_holding_an_audit_page_twice_gives_the_same_event_log(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=3, leads=300)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
    once = pl.read_parquet(transform(settings, full=True).event_log)
    raw = tmp_path / "data" / "raw"
    for table in ("audit", "audit_details"):  # e.g. a page copied by hand into another stream's folder
        page = sorted(raw.glob(f"{table}/*/rows-*.parquet"))[0]
        copy = raw / table / "copied-by-hand" / page.name
        copy.parent.mkdir()
        shutil.copy(page, copy)
    landed = Lake(tmp_path / "data").scan("audit").select(pl.len(), pl.col("auditid").n_unique()).collect()
    assert landed.item(0, 0) > landed.item(0, 1)  # the lake does hold audit rows twice now
    twice = pl.read_parquet(transform(settings, full=True).event_log)
    assert twice.get_column("event_id").n_unique() == twice.height
    assert_frame_equal(twice, once)


DETAILS = pl.DataFrame({
    "auditid": ["1", "2", "3", "4", "5", "6"],
    "new_values": ['{"salesstage": 2, "name": {"nested": [1]}}', '{"_ownerid_value": "u-1"}', '{"salesstage": true}',
                   '{"salesstage": "x\\"y"}', "{}", None],
    "old_values": ['{"salesstage": 1}', '{"_ownerid_value": null}', "{}", '{"salesstage": null}', "{}", None],
})


def by_paths(details: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return details.with_columns(_value(f"{side}_values", column).alias(f"{side}:{column}")
                                for column in columns for side in ("new", "old"))


def test_one_parse_per_text_reads_what_json_paths_read() -> None:
    columns = ["ownerid", "salesstage"]
    assert_frame_equal(_with_values(DETAILS, columns), by_paths(DETAILS, columns))


def test_details_that_are_not_json_or_not_scalars_are_read_path_by_path() -> None:
    columns = ["salesstage"]
    for spoiled in ("not json", '{"salesstage": [1, 2]}'):
        details = DETAILS.with_columns(pl.when(pl.col("auditid") == "5").then(pl.lit(spoiled))
                                       .otherwise(pl.col("new_values")).alias("new_values"))
        read = _with_values(details, columns)
        assert_frame_equal(read, by_paths(details, columns))
        assert read.filter(pl.col("auditid") == "1").item(0, "new:salesstage") == "2"  # the good rows still read


def test_a_changed_rule_fires_on_the_good_rows_beside_a_malformed_detail() -> None:
    audit = pl.LazyFrame({
        "auditid": ["1", "2", "5"], "createdon": pl.Series([1, 2, 3]).cast(pl.Datetime("us", "UTC")),
        "operation": [UPDATE] * 3, "action": [0] * 3, "objecttypecode": ["opportunity"] * 3,
        "_objectid_value": ["o1", "o2", "o5"], "_userid_value": ["u"] * 3})
    details = DETAILS.with_columns(pl.when(pl.col("auditid") == "5").then(pl.lit("not json"))
                                   .otherwise(pl.col("new_values")).alias("new_values"))
    rule = Rule(name="Stage 2", table="opportunity", trigger="changed", column="salesstage", to=2)
    events = events_from_audit(audit, details.lazy(), [rule]).collect()
    assert events.select("object_id", "activity").rows() == [("o1", "Stage 2")]
