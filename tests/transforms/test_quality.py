"""transforms/quality.py: on a clean sandbox org the report holds exactly what the simulator planted (UserLocal
date-only values of users off UTC), in table quality_issues and in the run's counts; faults injected into the
frames (lost links, a re-landed version with other content, events before their creation, missing times)
are each reported, and nothing else is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from connector.extract import extract
from connector.lake import Lake
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from tests.sql.org import BuiltOrg, build_org
from transforms.build import LakeInputs, read_lake
from transforms.cases import case_map
from transforms.eventlog import build
from transforms.quality import CHECKS, counts, describe, quality_issues


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> BuiltOrg:
    return build_org(tmp_path_factory.mktemp("quality"))


@pytest.fixture(scope="module")
def inputs(org: BuiltOrg) -> LakeInputs:
    return read_lake(org.settings)


@pytest.fixture(scope="module")
def clean(inputs: LakeInputs) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(event_log, orphans) of the org as extracted."""
    built = build(inputs.events(), inputs.records, inputs.users(), case_map(inputs.records, inputs.deleted_details,
                                                                             inputs.model, inputs.keys), inputs.model)
    return built.log, built.orphans


def report(inputs: LakeInputs, log: pl.DataFrame, orphans: pl.DataFrame, *,
           records: dict[str, pl.LazyFrame] | None = None,
           landed: dict[str, pl.LazyFrame] | None = None) -> pl.DataFrame:
    return quality_issues(log, records or inputs.records, orphans, keys=inputs.keys,
                          landed=inputs.landed if landed is None else landed,
                          created_activities=inputs.created_activities, user_local_dates=USER_LOCAL_DATES)


def found(issues: pl.DataFrame, check: str) -> set[str]:
    return set(issues.filter(pl.col("check") == check).get_column("object_id").to_list())


# The UserLocal columns of Format DateOnly that the sandbox fills (Microsoft's table reference: quote.md,
# salesorder.md, invoice.md), each entered in a form by the record's owner: the owner's local midnight in UTC.
USER_LOCAL_DATES = {"quote": ("effectivefrom", "effectiveto"), "salesorder": ("submitdate", "datefulfilled"),
                    "invoice": ("datedelivered",)}


def expected_shifts(org: BuiltOrg) -> pl.DataFrame:
    """(object_id, column, zone) of UserLocal date-only values entered by users whose offset is not zero."""
    users = org.rows["systemuser"].select("systemuserid", "address1_utcoffset")
    parts = []
    for table, columns in USER_LOCAL_DATES.items():
        rows = org.rows[table].join(users, left_on="_ownerid_value", right_on="systemuserid")
        for column in columns:
            parts.append(rows.filter(pl.col(column).is_not_null() & (pl.col("address1_utcoffset") != 0)).select(
                pl.col(f"{table}id").alias("object_id"), pl.lit(column).alias("column"), "address1_utcoffset"))
    offset = pl.col("address1_utcoffset")
    zone = pl.format("UTC{}{}:{}", pl.when(offset >= 0).then(pl.lit("+")).otherwise(pl.lit("-")),
                     (offset.abs() // 60).cast(pl.Utf8).str.zfill(2), (offset.abs() % 60).cast(pl.Utf8).str.zfill(2))
    return pl.concat(parts).select("object_id", "column", zone.alias("zone")).sort("object_id", "column")


def test_a_clean_org_reports_only_the_planted_dateonly_shifts(org: BuiltOrg) -> None:
    with duckdb.connect(str(org.result.database), read_only=True) as con:
        issues = pl.DataFrame(con.sql("select * from quality_issues").pl())
    assert set(issues.get_column("check")) == {"dateonly_timezone_shift"}
    planted = {**dict.fromkeys(CHECKS, 0), "dateonly_timezone_shift": issues.height}
    assert org.result.quality == counts(issues) == planted
    detail = pl.col("detail")
    got = issues.select("object_id", detail.str.extract(r"^(\w+) =").alias("column"),
                        detail.str.extract(r"at (UTC[+-]\d\d:\d\d)").alias("zone")).sort("object_id", "column")
    expected = expected_shifts(org)
    assert got.equals(expected)
    # Quotes of users at UTC+00:00 exist and are not reported: the check is not "every value".
    assert 0 < expected.filter(pl.col("column") == "effectivefrom").height < org.rows["quote"].height
    assert issues.get_column("case_id").is_not_null().all()
    assert describe(org.result.quality) == f"quality: {issues.height} DateOnly values shifted by time zone"


def test_incremental_runs_land_no_conflicting_versions(tmp_path: Path) -> None:
    """Re-read boundary rows and deltas after `advance` land versions again: identical, so never reported."""
    with Sandbox(tmp_path / "sandbox", OrgState(seed=13, leads=800)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        for days in (2, 5):
            sandbox.advance(days)
            assert extract(settings).exit_code == 0
        result = transform(settings)
    assert {check for check, n in result.quality.items() if n} == {"dateonly_timezone_shift"}


def test_records_whose_links_are_lost_are_reported_as_orphans(inputs: LakeInputs,
                                                              clean: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    assert clean[1].is_empty()
    records = dict(inputs.records)
    quotes = records["quote"].select("quoteid").collect().get_column("quoteid").sort().head(3).to_list()
    invoices = records["invoice"].select("invoiceid").collect().get_column("invoiceid").sort().head(2).to_list()
    records["quote"] = records["quote"].with_columns(
        pl.when(pl.col("quoteid").is_in(quotes)).then(None).otherwise(pl.col("_opportunityid_value"))
        .alias("_opportunityid_value"))
    records["invoice"] = records["invoice"].with_columns(
        pl.when(pl.col("invoiceid").is_in(invoices)).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("_opportunityid_value", "_salesorderid_value"))
    log, _, orphans, _ = build(inputs.events(), records, inputs.users(),
                               case_map(records, inputs.deleted_details, inputs.model, inputs.keys), inputs.model)
    issues = report(inputs, log, orphans, records=records)
    assert found(issues, "orphan_record") == set(quotes) | set(invoices)
    orphans = issues.filter(pl.col("check") == "orphan_record")
    assert orphans.get_column("severity").unique().to_list() == ["error"]
    assert orphans.get_column("detail").str.contains("links to no case").all()
    assert counts(issues)["orphan_record"] == 5
    assert "5 orphan records (linked to no case)" in describe(counts(issues))


def test_a_version_landed_twice_with_other_content_is_reported(inputs: LakeInputs,
                                                               clean: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    rows = inputs.landed["quote"].collect().sort("quoteid")
    changed, same = rows.row(0, named=True), rows.slice(1, 1)
    relanded = pl.concat([rows, same, rows.slice(0, 1).with_columns(pl.col("totalamount") + 1)])
    issues = report(inputs, *clean, landed={**inputs.landed, "quote": relanded.lazy()})
    assert found(issues, "duplicate_row_version") == {changed["quoteid"]}  # an identical re-read is fine
    detail = issues.filter(pl.col("check") == "duplicate_row_version").get_column("detail").item()
    assert detail == f"version {changed['_version']} landed with 2 different contents"


def test_a_version_relanded_with_only_other_labels_is_not_a_duplicate(
        inputs: LakeInputs, clean: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """A lookup's FormattedValue is computed when the row is read: a renamed owner relabels the same version."""
    rows = inputs.landed["opportunity"].collect().sort("opportunityid")
    relabelled = rows.with_columns(pl.col("_ownerid_value__label") + " (renamed)",
                                   pl.col("statecode__label").str.to_uppercase())
    issues = report(inputs, *clean, landed={**inputs.landed, "opportunity": pl.concat([rows, relabelled]).lazy()})
    assert found(issues, "duplicate_row_version") == set()
    changed = pl.concat([rows, rows.head(2).with_columns(pl.col("_ownerid_value").reverse())])
    issues = report(inputs, *clean, landed={**inputs.landed, "opportunity": changed.lazy()})
    assert found(issues, "duplicate_row_version") == set(rows.head(2).get_column("opportunityid"))


def test_a_renamed_user_after_a_full_resync_reports_no_duplicate_versions(tmp_path: Path) -> None:
    """Expired delta tokens make every change-tracked table land its rows again, same versions; a user renamed
    meanwhile relabels many of them. Only the labels differ: no finding (hundreds before l2c ignored labels)."""
    with Sandbox(tmp_path / "sandbox", OrgState(seed=13, leads=300)) as sandbox:
        settings = settings_for(sandbox, tmp_path / "data")
        assert extract(settings).exit_code == 0
        assert sandbox.webapi is not None
        sandbox.webapi.options.corrupt = frozenset({"renamed-users"})
        sandbox.advance(8)  # past the 7 days a delta token lives
        assert extract(settings).exit_code == 0
        result = transform(settings)
    landed = Lake(settings.data_dir).scan("opportunity").filter(pl.col("_op") == "upsert").collect()
    labels = landed.group_by("opportunityid", "_version").agg(pl.col("_ownerid_value__label").n_unique())
    assert labels.filter(pl.col("_ownerid_value__label") > 1).height > 10  # the same versions, relabelled
    assert result.quality["duplicate_row_version"] == 0


def test_events_before_their_creation_and_missing_times_are_reported(
        inputs: LakeInputs, clean: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    log, orphans = clean
    quote = log.filter(pl.col("activity") == "Quote Activated").get_column("object_id").sort()[0]
    untimed = log.filter(pl.col("activity") == "Invoice Sent").get_column("event_id").sort()[0]
    late_creation = (pl.when((pl.col("object_id") == quote) & (pl.col("activity") == "Quote Created"))
                     .then(pl.col("timestamp").max().over("object_id") + timedelta(hours=1))
                     .when(pl.col("event_id") == untimed).then(None).otherwise(pl.col("timestamp")).alias("timestamp"))
    lead = inputs.records["lead"].select("leadid").collect().get_column("leadid").sort()[0]
    records = {**inputs.records, "lead": inputs.records["lead"].with_columns(
        pl.when(pl.col("leadid") == lead).then(None).otherwise(pl.col("createdon")).alias("createdon"))}
    issues = report(inputs, log.with_columns(late_creation), orphans, records=records)
    assert found(issues, "event_out_of_order") == {quote}
    detail = issues.filter(pl.col("check") == "event_out_of_order").get_column("detail").item()
    assert detail.startswith("created ") and " after " in detail
    missing = issues.filter(pl.col("check") == "missing_timestamp")
    assert set(missing.get_column("object_type")) == {"invoice", "lead"}
    assert lead in missing.get_column("object_id").to_list()
    assert missing.get_column("detail").str.contains(untimed, literal=True).sum() == 1
    assert {c for c, n in counts(issues).items() if n} == {"event_out_of_order", "missing_timestamp",
                                                           "dateonly_timezone_shift"}


def test_describe_names_every_check_found() -> None:
    assert describe(dict.fromkeys(CHECKS, 0)) == "quality: no issues found"
    line = describe({**dict.fromkeys(CHECKS, 0), "orphan_record": 3, "dateonly_timezone_shift": 120})
    assert line == ("quality: 3 orphan records (linked to no case), "
                    "120 DateOnly values shifted by time zone")
