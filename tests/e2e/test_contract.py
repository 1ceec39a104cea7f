"""A custom table through configuration alone (issue #23): with config/examples/contract/, `l2c run` extracts the
sandbox org's new_contract table, logs exactly the Contract Signed events of `l2c sandbox truth`, in opportunity
cases; contracts become OCEL objects related to their opportunity, appear on the report's map, and
v_contract_delay measures quote accepted -> contract signed. No product code names the table.

Expected values come from the simulator's truth (`l2c sandbox truth`), never from l2c's outputs.
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.e2e.conftest import run_l2c

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "contract"
CONTRACT = {"L2C_TABLES": str(EXAMPLE / "tables.toml"), "L2C_ACTIVITY_MAP": str(EXAMPLE / "activities.toml"),
            "L2C_SANDBOX_LEADS": "400", "L2C_SANDBOX_SEED": "5"}
EVENT = ["case_id", "activity", "timestamp", "resource", "object_type", "object_id"]


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    done = run_l2c(root, "run", **CONTRACT)
    assert done.returncode == 0, done.stderr
    assert run_l2c(root, "sandbox", "truth", "--out", str(root / "truth.parquet"), **CONTRACT).returncode == 0
    for fmt, name in (("ocel2-sqlite", "log.sqlite"),):
        assert run_l2c(root, "export", "--format", fmt, "--out", str(root / name), **CONTRACT).returncode == 0
    assert run_l2c(root, "report", "--out", str(root / "report.html"), **CONTRACT).returncode == 0
    return root


def test_the_log_holds_exactly_the_truths_contract_signed_events_in_opportunity_cases(contract_run: Path) -> None:
    log = pl.read_parquet(contract_run / "data" / "event_log.parquet")
    truth = pl.read_parquet(contract_run / "truth.parquet")
    signed = log.filter(pl.col("activity") == "Contract Signed")
    expected = truth.filter(pl.col("activity") == "Contract Signed")
    assert expected.height > 20  # the org signs contracts: the comparison has teeth
    assert signed.select(EVENT).sort(EVENT).equals(expected.select(EVENT).sort(EVENT))
    assert set(signed.get_column("case_type")) == {"opportunity"} and set(signed.get_column("source")) == {"audit"}
    # ... and the rest of the log is still the default catalogue's truth.
    rest = log.filter(pl.col("activity") != "Contract Signed").select(EVENT)
    default = truth.filter(pl.col("activity").is_in(rest.get_column("activity").unique().implode()))
    assert rest.height == truth.height - expected.height == default.height


def test_contracts_are_ocel_objects_related_to_their_opportunity(contract_run: Path) -> None:
    truth = pl.read_parquet(contract_run / "truth.parquet").filter(pl.col("activity") == "Contract Signed")
    with sqlite3.connect(contract_run / "log.sqlite") as db:
        contracts = {row[0] for row in db.execute("SELECT ocel_id FROM object WHERE ocel_type = 'new_contract'")}
        relations = set(db.execute("SELECT ocel_source_id, ocel_target_id FROM object_object "
                                   "WHERE ocel_qualifier = 'contract for'"))
        subjects = set(db.execute("SELECT e.ocel_object_id FROM event_object e JOIN event v ON v.ocel_id = "
                                  "e.ocel_event_id WHERE v.ocel_type = 'Contract Signed' AND e.ocel_qualifier = "
                                  "'subject'"))
    signed = dict(truth.select("object_id", "case_id").iter_rows())
    assert set(signed) <= contracts  # every signed contract, and the unsigned ones too
    assert {(c, o) for c, o in relations if c in signed} == set(signed.items())
    assert {row[0] for row in subjects} == set(signed)


def test_the_report_shows_contracts_on_its_map(contract_run: Path) -> None:
    page = (contract_run / "report.html").read_text("utf-8")
    assert 'class="key k-new_contract"><i></i>Contract</span>' in page  # in the legend, with its own colour
    assert '.k-new_contract { --c:' in page
    assert 'data-activity="Contract Signed"' in page  # a node of the process map


def test_v_contract_delay_measures_quote_accepted_to_contract_signed(contract_run: Path) -> None:
    truth = pl.read_parquet(contract_run / "truth.parquet")
    accepted = (truth.filter(pl.col("activity") == "Quote Accepted").group_by("case_id")
                .agg(pl.col("timestamp").min().alias("accepted")))
    signed = truth.filter(pl.col("activity") == "Contract Signed").join(accepted, on="case_id").filter(
        pl.col("timestamp") >= pl.col("accepted")).group_by("case_id").agg(
        ((pl.col("timestamp").min() - pl.col("accepted").first()).dt.total_seconds() / 86400).alias("days"))
    with duckdb.connect(str(contract_run / "data" / "l2c.duckdb"), read_only=True) as con:
        row = con.execute("SELECT accepted_cases, signed, unsigned, median_days FROM v_contract_delay "
                          "WHERE region = '(all)'").fetchone()
    assert row is not None
    assert row[:3] == (accepted.height, signed.height, accepted.height - signed.height)
    assert row[3] == pytest.approx(signed.get_column("days").median())


def test_the_example_is_the_defaults_plus_the_contract() -> None:
    """So the example follows the defaults: it differs from them exactly by its new_contract parts."""
    defaults = {name: tomllib.loads((REPO / "config" / name).read_text("utf-8"))
                for name in ("tables.toml", "activities.toml")}
    example = {name: tomllib.loads((EXAMPLE / name).read_text("utf-8")) for name in defaults}
    tables = example["tables.toml"]
    assert [t for t in tables["table"] if t["name"] != "new_contract"] == defaults["tables.toml"]["table"]
    assert {k: v for k, v in tables.items() if k != "table"} == {
        k: v for k, v in defaults["tables.toml"].items() if k != "table"}
    rules = example["activities.toml"]["activity"]
    assert [r for r in rules if r["table"] != "new_contract"] == defaults["activities.toml"]["activity"]


def test_no_product_code_names_the_custom_table() -> None:
    """`git grep -n new_contract -- '*.py' ':!sandbox' ':!tests'` finds nothing."""
    named = [path.relative_to(REPO) for path in REPO.rglob("*.py")
             if path.parts[len(REPO.parts)] not in ("sandbox", "tests", ".venv") and not any(
                 part.startswith(".") for part in path.relative_to(REPO).parts)
             and "new_contract" in path.read_text("utf-8")]
    assert named == []
