"""sql/views.sql: every analysis view answers on a freshly extracted sandbox org, and its numbers equal the ones
computed here from the simulator's own record (truth events, live rows), never from the event log."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from sandbox.schema import LEAD_SOURCES, PAYMENT_TERMS
from tests.sql.org import BuiltOrg, build_org

VIEWS = ["v_object_activity", "v_lead_to_opportunity_time", "v_sales_cycle_time", "v_quote_approval_time",
         "v_discount_by_rep", "v_rework", "v_quote_to_order", "v_contract_delay", "v_order_fulfilment",
         "v_fulfilment_to_invoice",
         "v_dso_by_terms", "v_conversion_by_lead_source", "v_variants", "v_dfg", "v_quality_summary",
         "event_log_pm4py"]
ORDER = ["case_id", "timestamp", "activity"]  # the event_log order; ties within it never change a trace
DAY_US = 86_400_000_000


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> BuiltOrg:
    return build_org(tmp_path_factory.mktemp("views"))


@pytest.fixture(scope="module")
def con(org: BuiltOrg) -> Iterator[duckdb.DuckDBPyConnection]:
    # A new read-only connection to the file, as `duckdb data/l2c.duckdb "select * from <view>"` opens it.
    with duckdb.connect(str(org.result.database), read_only=True) as connection:
        yield connection


def view(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    return pl.DataFrame(con.sql(sql).pl())


def one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The single row of a query, fetched to the end (DuckDB refuses new work on an unfinished result)."""
    (row,) = con.execute(sql).fetchall()
    return row


def days(end: pl.Expr, start: pl.Expr) -> pl.Expr:
    return (end - start).dt.total_microseconds() / DAY_US


def first(truth: pl.DataFrame, activity: str, name: str, how: str = "min") -> pl.DataFrame:
    """Per object: the first (or last) time of an activity in the truth."""
    picked = pl.col("timestamp").min() if how == "min" else pl.col("timestamp").max()
    return truth.filter(pl.col("activity") == activity).group_by("object_id").agg(picked.alias(name))


def test_every_view_answers(con: duckdb.DuckDBPyConnection) -> None:
    names = {n for (n,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    assert names == set(VIEWS)  # a new view gets a line here (and an assertion below)
    for name in VIEWS:
        assert one(con, f"select count(*) from {name}")[0] > 0, name


def test_contract_delay_without_a_contract_activity_counts_every_accepted_case_unsigned(
        org: BuiltOrg, con: duckdb.DuckDBPyConnection) -> None:
    """The default catalogue has no Contract Signed (tests/e2e/test_contract.py measures it with one)."""
    accepted = org.truth.filter(pl.col("activity") == "Quote Accepted").get_column("case_id").n_unique()
    assert one(con, "select accepted_cases, signed, unsigned, median_days from v_contract_delay "
                    "where region = '(all)'") == (accepted, 0, accepted, None)


def test_conversion_by_lead_source_equals_the_truth(org: BuiltOrg, con: duckdb.DuckDBPyConnection) -> None:
    leads = org.rows["lead"].select(pl.col("leadid").alias("object_id"), pl.col("leadsourcecode").replace_strict(
        LEAD_SOURCES, return_dtype=pl.Utf8).alias("lead_source"))
    closes = org.truth.filter(pl.col("activity").is_in(["Opportunity Won", "Opportunity Lost", "Opportunity Reopened"]))
    final_won = closes.sort("timestamp").group_by("case_id").agg(
        (pl.col("activity").last() == "Opportunity Won").alias("won"))
    per_lead = (org.truth.filter(pl.col("object_type") == "lead").group_by("object_id").agg(
        pl.col("case_id").first(), (pl.col("activity") == "Lead Captured").any().alias("captured"),
        (pl.col("activity") == "Lead Qualified").any().alias("qualified"),
        (pl.col("activity") == "Lead Disqualified").any().alias("disqualified"))
        .join(leads, on="object_id", how="left").join(final_won, on="case_id", how="left"))
    expected = per_lead.group_by("lead_source").agg(
        pl.col("captured").sum().alias("leads"), pl.col("qualified").sum().alias("qualified"),
        pl.col("disqualified").sum().alias("disqualified"), pl.col("won").fill_null(False).sum().alias("won"),
    ).sort("lead_source")
    got = view(con, "select lead_source, leads, qualified, disqualified, won from v_conversion_by_lead_source "
                    "where lead_source <> '(all)' order by lead_source")
    assert got.equals(expected.cast(got.schema))  # type: ignore[arg-type]
    total = view(con, "select leads, qualified from v_conversion_by_lead_source where lead_source = '(all)'")
    assert total.row(0) == (expected["leads"].sum(), expected["qualified"].sum())
    assert 0 < total["qualified"][0] < total["leads"][0]


def test_days_to_pay_by_payment_terms_equal_the_truth(org: BuiltOrg, con: duckdb.DuckDBPyConnection) -> None:
    invoice = org.truth.filter(pl.col("object_type") == "invoice")
    canceled = invoice.filter(pl.col("activity") == "Invoice Canceled").select("object_id")
    per_invoice = (first(invoice, "Invoice Created", "created")
                   .join(first(invoice, "Payment Received", "paid", how="max"), on="object_id", how="left")
                   .join(canceled, on="object_id", how="anti")
                   .with_columns(days(pl.col("paid"), pl.col("created")).alias("days")))
    terms = org.rows["invoice"].select(pl.col("invoiceid").alias("object_id"), pl.col("paymenttermscode")
                                       .replace_strict(PAYMENT_TERMS, return_dtype=pl.Utf8).alias("payment_terms"))
    expected = per_invoice.join(terms, on="object_id", how="left").group_by("payment_terms").agg(
        pl.len().alias("invoices"), pl.col("days").count().alias("paid"),
        pl.col("days").median().alias("median_days_to_pay")).sort("payment_terms")
    got = view(con, "select payment_terms, invoices, paid, median_days_to_pay from v_dso_by_terms "
                    "where region = '(all)' and payment_terms <> '(all)' order by payment_terms")
    assert got.drop("median_days_to_pay").equals(expected.drop("median_days_to_pay").cast(
        {"invoices": pl.Int64, "paid": pl.Int64}))
    assert got["median_days_to_pay"].to_list() == pytest.approx(expected["median_days_to_pay"].to_list(), abs=1e-6)
    overall = view(con, "select paid, median_days_to_pay from v_dso_by_terms "
                        "where payment_terms = '(all)' and region = '(all)'")
    assert overall["paid"][0] == per_invoice["days"].count() > 20
    assert overall["median_days_to_pay"][0] == pytest.approx(per_invoice["days"].median(), abs=1e-6)


def test_directly_follows_edges_equal_consecutive_truth_events(org: BuiltOrg,
                                                               con: duckdb.DuckDBPyConnection) -> None:
    steps = org.truth.sort(ORDER).with_columns(
        pl.col("activity").shift(-1).over("case_id").alias("to_activity"),
        pl.col("timestamp").shift(-1).over("case_id").alias("next_at"),
    ).filter(pl.col("to_activity").is_not_null())
    expected = steps.group_by(pl.col("activity").alias("from_activity"), "to_activity").agg(
        pl.len().cast(pl.Int64).alias("edges"), (days(pl.col("next_at"), pl.col("timestamp")) * 24).median()
        .alias("median_wait_hours")).sort("from_activity", "to_activity")
    got = view(con, "select from_activity, to_activity, edges, median_wait_hours from v_dfg "
                    "order by from_activity, to_activity")
    assert got.select("from_activity", "to_activity", "edges").equals(
        expected.select("from_activity", "to_activity", "edges"))
    assert got["median_wait_hours"].to_list() == pytest.approx(expected["median_wait_hours"].to_list(), abs=1e-6)
    assert got["edges"].sum() == org.truth.height - org.truth["case_id"].n_unique()


def test_variants_equal_the_truth_traces(org: BuiltOrg, con: duckdb.DuckDBPyConnection) -> None:
    traces = org.truth.sort(ORDER).group_by("case_id", maintain_order=True).agg(
        pl.col("activity").str.join(" -> ").alias("variant"))
    expected = traces.group_by("variant").len("cases").sort(["cases", "variant"], descending=[True, False])
    got = view(con, "select variant, cases, share, cumulative_share from v_variants order by rank")
    assert got.select("variant", "cases").equals(expected.cast({"cases": pl.Int64}))
    assert got["share"].sum() == pytest.approx(1.0)
    assert got["cumulative_share"][-1] == pytest.approx(1.0)


def test_rework_equals_the_truth(org: BuiltOrg, con: duckdb.DuckDBPyConnection) -> None:
    ranks = {"Stage Entered: Develop": 1, "Stage Entered: Propose": 2, "Stage Entered: Close": 3}
    stages = org.truth.filter(pl.col("activity").is_in(list(ranks))).sort(ORDER).with_columns(
        pl.col("activity").replace_strict(ranks, return_dtype=pl.Int32).alias("rank"))
    regressed = stages.filter(pl.col("rank") < pl.col("rank").shift(1).over("case_id"))

    def kind(frame: pl.DataFrame) -> tuple[int, int]:
        return frame.height, frame["case_id"].n_unique()

    expected = {"stage regression": kind(regressed),
                "quote revision": kind(org.truth.filter(pl.col("activity") == "Quote Revised")),
                "reopened": kind(org.truth.filter(pl.col("activity") == "Opportunity Reopened"))}
    got = {rework: (n, cases) for rework, n, cases in con.execute(
        "select rework, occurrences, cases from v_rework where rework <> 'any'").fetchall()}
    assert got == expected
    assert all(n > 0 for n, _ in expected.values())


def test_lead_to_opportunity_and_quote_to_order_times_equal_the_truth(org: BuiltOrg,
                                                                      con: duckdb.DuckDBPyConnection) -> None:
    opportunities = org.truth.filter(pl.col("case_type") == "opportunity")
    per_case = opportunities.group_by("case_id").agg(
        pl.col("timestamp").filter(pl.col("activity") == "Lead Captured").min().alias("captured"),
        pl.col("timestamp").filter(pl.col("activity") == "Opportunity Created").min().alias("created"),
    ).drop_nulls()
    got = view(con, "select opportunities, median_days from v_lead_to_opportunity_time where lead_source = '(all)'")
    assert got["opportunities"][0] == per_case.height > 50
    expected = per_case.select(days(pl.col("created"), pl.col("captured")).median()).item()
    assert got["median_days"][0] == pytest.approx(expected, abs=1e-6)

    orders = org.rows["salesorder"].select(pl.col("salesorderid").alias("object_id"),
                                           pl.col("_quoteid_value").alias("quote_id"))
    accepted = first(org.truth, "Quote Accepted", "accepted").rename({"object_id": "quote_id"})
    delays = (orders.join(first(org.truth, "Sales Order Created", "created"), on="object_id")
              .join(accepted, on="quote_id").select(days(pl.col("created"), pl.col("accepted")).alias("days")))
    got = view(con, "select orders, median_days from v_quote_to_order where region = '(all)'")
    assert got["orders"][0] == delays.height > 20
    assert got["median_days"][0] == pytest.approx(delays["days"].median(), abs=1e-6)


def test_discount_policy_is_one_value_in_table_policy(org: BuiltOrg, tmp_path: Path) -> None:
    above = org.rows["quote"].filter(pl.col("discountpercentage") > 15).height
    copy = tmp_path / "l2c.duckdb"
    shutil.copy(org.result.database, copy)
    total = ("select quotes, discounted_quotes, above_policy, policy_pct from v_discount_by_rep "
             "where dimension = '(all)'")
    with duckdb.connect(str(copy)) as con:
        quotes, discounted, above_policy, policy = one(con, total)
        assert (quotes, policy) == (org.rows["quote"].height, 15.0)
        assert 0 < above_policy == above < discounted
        bands = dict(con.execute("select discount_band, quotes from v_quote_approval_time").fetchall())
        assert bands["above policy"] > 0
        con.execute("update policy set max_discount_pct = 100")
        assert one(con, total)[2] == 0
        assert "above policy" not in dict(con.execute("select discount_band, quotes from v_quote_approval_time")
                                          .fetchall())
        con.execute("update policy set max_discount_pct = 0")
        assert one(con, total)[2] == discounted


def test_segments_come_from_the_accounts(con: duckdb.DuckDBPyConnection) -> None:
    rows: list[Any] = con.execute("select distinct dimension, segment from v_discount_by_rep").fetchall()
    regions = {segment for dimension, segment in rows if dimension == "region"}
    assert regions <= {"North America", "EMEA", "APAC", "LATAM", "(none)"} and len(regions) >= 3
    assert {d for d, _ in rows} == {"(all)", "rep", "region", "industry"}
    cycle = con.execute("select outcome, count(*) from v_sales_cycle_time group by all order by 1").fetchall()
    assert [o for o, _ in cycle] == ["(all)", "Lost", "Won"]
