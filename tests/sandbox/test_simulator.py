"""The simulated org, checked against the contract (orgdata, schema) by code independent of the generator."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from sandbox.orgdata import BASE_CLOCK, DELETED_SCHEMA, HISTORY_START, TRUTH_SCHEMA, OrgData
from sandbox.schema import DATA_TABLES, STATUS_STATE, TABLES
from sandbox.simulator import ACTIVITIES, TRUTH_ACTIVITIES, simulate

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CATALOGUE = {  # CONTRACT.md, "Default activity catalogue"
    "Lead Captured", "Lead Qualified", "Lead Disqualified", "Opportunity Created", "Stage Entered: Develop",
    "Stage Entered: Propose", "Stage Entered: Close", "Quote Created", "Quote Activated", "Quote Revised",
    "Discount Applied", "Quote Accepted", "Quote Closed", "Sales Order Created", "Order Submitted",
    "Order Fulfilled", "Order Canceled", "Invoice Created", "Invoice Sent", "Payment Received",
    "Invoice Canceled", "Opportunity Won", "Opportunity Lost", "Opportunity Reopened", "Owner Changed",
    "Quote Deleted", "Order Deleted", "Invoice Deleted",
}
PROCESS_TABLES = ("lead", "opportunity", "quote", "salesorder", "invoice", "new_contract")
SYSTEM_MAINTAINED = {"modifiedon", "modifiedby", "versionnumber"}


@pytest.fixture(scope="module")
def org() -> OrgData:
    return simulate(11, 2000)


@pytest.fixture(scope="module")
def small() -> OrgData:
    return simulate(5, 1000)


def render(value: Any) -> Any:
    """A frame value as the Web API (and so the audit JSON) renders it."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def expected_dtype(col_type: str, date_only: bool, behavior: str) -> pl.DataType:
    if col_type == "DateTime":
        return pl.Date() if date_only and behavior == "DateOnly" else pl.Datetime("us", "UTC")
    return {"Integer": pl.Int32(), "Picklist": pl.Int32(), "State": pl.Int32(), "Status": pl.Int32(),
            "BigInt": pl.Int64(), "Money": pl.Float64(), "Decimal": pl.Float64(),
            "Boolean": pl.Boolean()}.get(col_type, pl.Utf8())


def replay(org: OrgData) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict[str, str]]:
    """Folds the audit rows of each record in _version order; checks every _old against the state so far."""
    state: dict[str, dict[str, Any]] = {}
    deleted: dict[str, int] = {}
    table_of: dict[str, str] = {}
    for a in org.audits.sort("_version").iter_rows(named=True):
        oid, old, new = a["_objectid_value"], json.loads(a["_old"]), json.loads(a["_new"])
        if a["operation"] == 1:
            assert oid not in state and old == {}, a
            state[oid] = dict(new)
            table_of[oid] = a["objecttypecode"]
            continue
        assert oid in state and oid not in deleted, f"change of a missing or deleted record: {a}"
        for col, value in old.items():
            assert state[oid].get(col) == value, (oid, col, state[oid].get(col), value)
        if a["operation"] == 2:
            assert set(old) == set(new) and old != new, a
            state[oid].update(new)
        else:
            assert a["operation"] == 3 and new == {}, a
            assert {k: v for k, v in old.items() if v is not None} == state[oid], a
            deleted[oid] = a["_version"]
    return state, deleted, table_of


# --- determinism and clocks -----------------------------------------------------------------------------

def frames(o: OrgData) -> dict[str, pl.DataFrame]:
    return {**{f"rows.{k}": v for k, v in o.rows.items()}, "audits": o.audits, "truth": o.truth,
            "deleted": o.deleted}


def test_same_seed_gives_identical_frames(small: OrgData) -> None:
    again = simulate(5, 1000)
    assert again.meta == small.meta and again.max_version == small.max_version
    for name, frame in frames(small).items():
        assert frame.equals(frames(again)[name]), name


def test_other_seed_gives_another_org(small: OrgData) -> None:
    other = simulate(6, 1000)
    assert other.meta.organization_id != small.meta.organization_id
    assert not set(other.rows["lead"]["leadid"]) & set(small.rows["lead"]["leadid"])
    assert not other.truth.select("activity", "timestamp").equals(small.truth.select("activity", "timestamp"))


def test_advancing_the_clock_keeps_everything_already_versioned() -> None:
    first = simulate(3, 1500)
    later = simulate(3, 1500, BASE_CLOCK + timedelta(days=10))
    assert later.max_version > first.max_version
    assert later.audits.filter(pl.col("_version") <= first.max_version).equals(first.audits)
    assert later.deleted.filter(pl.col("version") <= first.max_version).equals(first.deleted)
    # a truth event keeps its time and object; only its case may move from the lead to the new opportunity
    keys = ["activity", "timestamp", "object_id", "resource"]
    assert first.truth.select(keys).join(later.truth.select(keys), on=keys, how="anti").height == 0
    new_ids = set(later.deleted.filter(pl.col("version") > first.max_version)["id"])
    for table in DATA_TABLES:
        pk = TABLES[table].primary_id
        joined = first.rows[table].join(later.rows[table], on=pk, how="left", suffix="_later")
        same = joined.filter(pl.col("versionnumber") == pl.col("versionnumber_later"))
        cols = [c for c in first.rows[table].columns if c != pk]
        assert same.select(cols).equals(same.select([pl.col(f"{c}_later").alias(c) for c in cols])), table
        changed = joined.filter(pl.col("versionnumber") != pl.col("versionnumber_later"))
        assert (changed["versionnumber_later"] > first.max_version).all(), table
        gone = joined.filter(pl.col("versionnumber_later").is_null())[pk]
        assert set(gone) <= new_ids, table
    assert later.rows["lead"].height > first.rows["lead"].height


def test_nothing_after_the_clock_is_visible() -> None:
    clock = datetime(2025, 6, 1, 12, 0, 0, tzinfo=HISTORY_START.tzinfo)
    o = simulate(9, 1000, clock)
    assert o.audits["createdon"].max() <= clock and o.truth["timestamp"].max() <= clock
    assert 350 < o.rows["lead"].height < 450  # about five months of a 1000-a-year org
    early = simulate(9, 1000, HISTORY_START)
    assert early.audits.filter(pl.col("objecttypecode") != "account").height == 0
    assert early.rows["account"].height == o.rows["account"].height


def test_an_org_of_0_leads_is_a_new_environment_that_stays_empty() -> None:
    for clock in (BASE_CLOCK, BASE_CLOCK + timedelta(days=30)):
        empty = simulate(42, 0, clock)
        assert {name for name, frame in empty.rows.items() if frame.height} == {
            "transactioncurrency", "systemuser", "account"}
        assert empty.truth.is_empty() and empty.deleted.is_empty()
        assert empty.rows["lead"].columns == simulate(42, 300).rows["lead"].columns
    with pytest.raises(ValueError, match="leads must be at least 0"):
        simulate(42, -1)


# --- contract shape ---------------------------------------------------------------------------------------

def test_frames_have_the_contract_columns_and_dtypes(org: OrgData) -> None:
    for table in DATA_TABLES:
        t = TABLES[table]
        assert list(org.rows[table].schema) == [c.api_name for c in t.columns], table
        for c in t.columns:
            assert org.rows[table].schema[c.api_name] == expected_dtype(c.type, c.date_only, c.behavior), \
                (table, c.name)
        assert org.rows[table][t.primary_id].is_unique().all(), table
    assert dict(org.truth.schema) == TRUTH_SCHEMA
    assert dict(org.deleted.schema) == DELETED_SCHEMA
    audit_cols = [c.api_name for c in TABLES["audit"].columns]
    assert list(org.audits.columns) == audit_cols + ["_old", "_new", "_version"]
    assert org.audits.schema["createdon"] == pl.Datetime("us", "UTC")
    assert org.audits.schema["operation"] == pl.Int32 and org.audits.schema["_version"] == pl.Int64


def test_ids_are_lowercase_guids_and_times_whole_seconds(org: OrgData) -> None:
    for col in ("auditid", "_objectid_value", "_userid_value", "transactionid"):
        assert org.audits[col].str.contains(GUID.pattern).all(), col
    assert org.audits["auditid"].is_unique().all()
    for table in DATA_TABLES:
        t = TABLES[table]
        assert org.rows[table][t.primary_id].str.contains(GUID.pattern).all()
        for c in t.columns:
            if org.rows[table].schema[c.api_name] == pl.Datetime("us", "UTC"):
                assert (org.rows[table][c.api_name].dt.microsecond().drop_nulls() == 0).all(), (table, c.name)
    assert (org.audits["createdon"].dt.microsecond() == 0).all()
    assert org.audits["_callinguserid_value"].is_null().all()
    assert org.audits["useradditionalinfo"].is_null().all()


def test_versions_are_unique_and_follow_time(org: OrgData) -> None:
    a = org.audits
    assert a["_version"].is_sorted() and a["_version"].is_unique().all()
    assert a["createdon"].is_sorted()  # ordered by version, so versions never go back in time
    assert a["_version"].max() == org.max_version
    static = pl.concat([org.rows[t]["versionnumber"] for t in ("systemuser", "transactioncurrency")])
    assert static.max() < a["_version"].min()  # currencies and users take the first versions
    every = pl.concat([org.rows[t]["versionnumber"] for t in DATA_TABLES] + [org.deleted["version"]])
    assert every.is_unique().all()


def test_row_version_is_the_last_audit_version(org: OrgData) -> None:
    last = org.audits.group_by("_objectid_value").agg(pl.col("_version").max())
    for table in DATA_TABLES:
        if not TABLES[table].audit:
            continue
        pk = TABLES[table].primary_id
        joined = org.rows[table].join(last, left_on=pk, right_on="_objectid_value", how="left")
        assert (joined["versionnumber"] == joined["_version"]).all(), table
        assert (org.rows[table]["modifiedon"] >= org.rows[table]["createdon"]).all()


# --- audits against rows -----------------------------------------------------------------------------------

def test_replaying_audits_reproduces_rows_and_deletions(org: OrgData) -> None:
    state, deleted, table_of = replay(org)
    live = {}
    for table in DATA_TABLES:
        if not TABLES[table].audit:
            continue
        pk = TABLES[table].primary_id
        for row in org.rows[table].iter_rows(named=True):
            live[row[pk]] = row
            assert row[pk] in state, f"{table} row without a Create audit"
            for col, value in state[row[pk]].items():
                assert render(row[TABLES[table].by_api_name[col].api_name]) == value, (table, row[pk], col)
            # every audited column that is set on the row is explained by the audits
            for c in TABLES[table].columns:
                if c.audited and c.name not in SYSTEM_MAINTAINED and row[c.api_name] is not None:
                    assert c.api_name in state[row[pk]], (table, c.name)
    assert set(state) == set(live) | set(deleted)
    assert dict(zip(org.deleted["id"], org.deleted["version"], strict=True)) == deleted
    assert all(table_of[i] == t for i, t in zip(org.deleted["id"], org.deleted["table"], strict=True))


def test_attributemask_lists_the_column_numbers(org: OrgData) -> None:
    for a in org.audits.iter_rows(named=True):
        table = TABLES[a["objecttypecode"]]
        if a["operation"] == 1:
            assert a["attributemask"] is None
            continue
        assert re.fullmatch(r"\d+(,\d+)*", a["attributemask"]), a["attributemask"]
        numbers = [int(n) for n in a["attributemask"].split(",")]
        values = json.loads(a["_new"] if a["operation"] == 2 else a["_old"])
        assert numbers == [table.by_api_name[k].number for k in values]
        assert not {table.by_number[n].name for n in numbers} & SYSTEM_MAINTAINED


def test_state_and_status_pairs_are_valid_everywhere(org: OrgData) -> None:
    state, _, table_of = replay(org)
    for table in PROCESS_TABLES + ("account",):
        rows = org.rows[table]
        for s, st in zip(rows["statecode"], rows["statuscode"], strict=True):
            assert STATUS_STATE[table][st] == s, (table, s, st)
    # and at every step of every record's history
    history: dict[str, dict[str, Any]] = {}
    for a in org.audits.iter_rows(named=True):
        cur = history.setdefault(a["_objectid_value"], {})
        cur.update(json.loads(a["_new"]))
        if a["operation"] != 3:
            assert STATUS_STATE[a["objecttypecode"]][cur["statuscode"]] == cur["statecode"], a
    assert set(history) == set(state) and set(table_of.values()) <= set(PROCESS_TABLES) | {"account"}


def test_transactions_tie_the_messages_together(org: OrgData) -> None:
    a = org.audits
    qualify = a.filter(pl.col("action") == 24)
    opp_create = a.filter((pl.col("objecttypecode") == "opportunity") & (pl.col("operation") == 1))
    pairs = qualify.join(opp_create, on="transactionid", suffix="_opp")
    assert pairs.height == qualify.height > 0
    assert (pairs["createdon"] == pairs["createdon_opp"]).all()
    for row in pairs.iter_rows(named=True):
        assert json.loads(row["_new"])["_qualifyingopportunityid_value"] == row["_objectid_value_opp"]
        assert json.loads(row["_new_opp"])["_originatingleadid_value"] == row["_objectid_value"]
    revise = a.filter(pl.col("action") == 43)
    new_quotes = a.filter((pl.col("objecttypecode") == "quote") & (pl.col("operation") == 1))
    revisions = revise.join(new_quotes, on="transactionid", suffix="_new_quote")
    assert revisions.height == revise.height > 0
    quotes = {q["quoteid"]: q for q in org.rows["quote"].iter_rows(named=True)}
    for row in revisions.iter_rows(named=True):
        old, new = quotes.get(row["_objectid_value"]), json.loads(row["_new_new_quote"])
        assert json.loads(row["_new"]) == {"statecode": 3, "statuscode": 7}
        if old is not None:
            assert new["quotenumber"] == old["quotenumber"]
            assert new["revisionnumber"] == old["revisionnumber"] + 1


# --- truth -------------------------------------------------------------------------------------------------

def test_activities_are_the_catalogue_and_the_custom_tables_and_all_occur(org: OrgData) -> None:
    assert set(ACTIVITIES) == CATALOGUE
    assert set(TRUTH_ACTIVITIES) == CATALOGUE | {"Contract Signed"}  # new_contract, a custom table
    assert set(org.truth["activity"]) == set(TRUTH_ACTIVITIES)


def test_every_truth_event_has_its_audit_row(org: OrgData) -> None:
    users = dict(zip(org.rows["systemuser"]["systemuserid"], org.rows["systemuser"]["fullname"], strict=True))
    audits = org.audits.select("_objectid_value", "createdon", "objecttypecode", "_userid_value")
    audits = audits.with_columns(resource=pl.col("_userid_value").replace_strict(users))
    matched = org.truth.join(audits, left_on=["object_id", "timestamp", "object_type", "resource"],
                             right_on=["_objectid_value", "createdon", "objecttypecode", "resource"],
                             how="semi")
    assert matched.height == org.truth.height
    assert org.truth["resource"].is_not_null().all()


def test_truth_events_match_their_audit_actions(org: OrgData) -> None:
    a = org.audits
    expect = {  # activity -> (table, operation, action)
        "Lead Captured": ("lead", 1, 1), "Lead Qualified": ("lead", 2, 24),
        "Lead Disqualified": ("lead", 2, 25),
        "Opportunity Won": ("opportunity", 2, 44), "Opportunity Lost": ("opportunity", 2, 45),
        "Opportunity Reopened": ("opportunity", 2, 21), "Quote Activated": ("quote", 2, 4),
        "Quote Revised": ("quote", 2, 43), "Quote Closed": ("quote", 2, 16), "Quote Deleted": ("quote", 3, 3),
        "Order Submitted": ("salesorder", 2, 26), "Order Fulfilled": ("salesorder", 2, 22),
        "Order Canceled": ("salesorder", 2, 17), "Order Deleted": ("salesorder", 3, 3),
        "Invoice Canceled": ("invoice", 2, 17), "Payment Received": ("invoice", 2, 23),
        "Invoice Deleted": ("invoice", 3, 3), "Invoice Created": ("invoice", 1, 1),
        "Contract Signed": ("new_contract", 2, 2),
    }
    for activity, (table, op, action) in expect.items():
        events = org.truth.filter(pl.col("activity") == activity)
        hits = events.join(a.filter((pl.col("operation") == op) & (pl.col("action") == action)),
                           left_on=["object_id", "timestamp"], right_on=["_objectid_value", "createdon"],
                           how="semi")
        assert hits.height == events.height > 0, activity
        assert (events["object_type"] == table).all(), activity
    # counts agree the other way too: every such audit row is one truth event
    def count(activity: str) -> int:
        return org.truth.filter(pl.col("activity") == activity).height

    assert a.filter(pl.col("action") == 24).height == count("Lead Qualified")
    assert a.filter(pl.col("action") == 13).height == count("Owner Changed")
    stage = org.truth.filter(pl.col("activity").str.starts_with("Stage Entered"))
    stage_audits = a.filter((pl.col("objecttypecode") == "opportunity") & (pl.col("operation") == 2)
                            & pl.col("_new").str.contains('"salesstage"'))
    assert stage.height == stage_audits.height


def test_case_ids_follow_the_opportunity(org: OrgData) -> None:
    state, _, table_of = replay(org)

    def opp_of(oid: str) -> str | None:
        s, t = state[oid], table_of[oid]
        if t == "opportunity":
            return oid
        if t == "lead":
            return s.get("_qualifyingopportunityid_value")
        if s.get("_opportunityid_value") or s.get("_new_opportunityid_value"):
            return s.get("_opportunityid_value") or s["_new_opportunityid_value"]
        return opp_of(s["_salesorderid_value"]) if t == "invoice" else None

    opps = set(org.rows["opportunity"]["opportunityid"])
    for e in org.truth.iter_rows(named=True):
        opp = opp_of(e["object_id"])
        if e["object_type"] == "lead" and opp is None:
            assert (e["case_type"], e["case_id"]) == ("lead", e["object_id"]), e
        else:
            assert opp in opps, e  # every quote, order, invoice and contract reaches a live opportunity
            assert (e["case_type"], e["case_id"]) == ("opportunity", opp), e


# --- business content and edge cases ------------------------------------------------------------------------

def test_volumes_are_in_the_target_ranges(small: OrgData) -> None:
    r = small.rows
    arrivals = r["lead"].height + r["opportunity"].filter(pl.col("_originatingleadid_value").is_null()).height
    assert 960 <= arrivals <= 1040
    assert 250 <= r["opportunity"].height <= 350
    assert r["quote"].height >= 250
    assert 70 <= r["salesorder"].height <= 150
    assert 70 <= r["invoice"].height <= 150
    assert r["systemuser"].height >= 6 + 3 and r["account"].height == 40
    assert r["transactioncurrency"]["isocurrencycode"].to_list() == ["USD", "EUR", "GBP"]


def test_lead_sources_qualify_at_different_rates(org: OrgData) -> None:
    leads = org.rows["lead"].filter(pl.col("statecode") != 0)
    rates = leads.group_by("leadsourcecode").agg((pl.col("statecode") == 1).mean().alias("rate"))
    rate = dict(zip(rates["leadsourcecode"], rates["rate"], strict=True))
    assert rate[2] > rate[8] > rate[1]  # employee referral > web > advertisement


def test_work_happens_in_working_hours(org: OrgData) -> None:
    users = org.rows["systemuser"].select("systemuserid", "title", "address1_utcoffset")
    a = org.audits.join(users, left_on="_userid_value", right_on="systemuserid").filter(
        pl.col("title").is_not_null())  # people, not the web forms integration
    local = a.select(pl.col("createdon") + pl.duration(minutes=pl.col("address1_utcoffset")))["createdon"]
    hours, weekdays = local.dt.hour(), local.dt.weekday()
    assert ((hours >= 8) & (hours < 18)).mean() > 0.97
    assert (weekdays <= 5).mean() > 0.9


def test_edge_cases_are_present(org: OrgData) -> None:
    a, r, t = org.audits, org.rows, org.truth
    same_second = a.group_by("_objectid_value", "createdon").len().filter(pl.col("len") > 1)
    assert same_second.height > 0
    names = pl.concat([r["account"]["name"], r["systemuser"]["fullname"], r["lead"]["fullname"]])
    for needle in ("O'Brien & Sons", '"Acme" Ltd', "Müller GmbH", "株式会社ヤマダ", "Ελληνικά Α.Ε.",
                   "Zoë Ångström", "Łukasz Żółć", "Ōta Hiroshi", "José Müller"):
        assert needle in names.to_list(), needle
    assert r["opportunity"]["estimatedvalue"].null_count() > 0
    only_via_order = r["invoice"].filter(pl.col("_opportunityid_value").is_null())
    assert 0.15 < only_via_order.height / r["invoice"].height < 0.45
    assert only_via_order["_salesorderid_value"].is_not_null().all()
    assert set(org.deleted["table"]) == {"quote", "salesorder", "invoice"}
    assert t.filter(pl.col("activity") == "Opportunity Reopened").height > 0
    # rework: a case enters Develop again after Propose
    stages = t.filter(pl.col("activity").str.starts_with("Stage Entered")).sort("case_id", "timestamp")
    seq = stages.group_by("case_id", maintain_order=True).agg(pl.col("activity").str.join("|"))
    assert seq["activity"].str.contains("Propose|Stage Entered: Develop", literal=True).any()
    discounts = r["quote"]["discountpercentage"].drop_nulls()
    assert (discounts > 15).any() and ((discounts > 0) & (discounts <= 15)).any()
    drift = t.filter(pl.col("activity") == "Discount Applied").group_by("object_id").len()
    assert (drift["len"] > 1).any()
    split = r["invoice"].group_by("_salesorderid_value").len()
    assert (split["len"] > 1).any()
    paid_twice = t.filter(pl.col("activity") == "Payment Received").group_by("object_id").len()
    assert (paid_twice["len"] > 1).any()


def test_user_local_dates_are_local_midnight_in_utc(org: OrgData) -> None:
    """A UserLocal column of Format DateOnly (quote.effectivefrom, Microsoft's quote reference) entered in a form
    holds the owner's local midnight as a UTC instant; DateOnly-behaviour columns are calendar days."""
    users = org.rows["systemuser"].select("systemuserid", "address1_utcoffset")
    quotes = org.rows["quote"].join(users, left_on="_ownerid_value", right_on="systemuserid")
    active = quotes.filter(pl.col("effectivefrom").is_not_null())
    local = active.select(pl.col("effectivefrom") + pl.duration(minutes=pl.col("address1_utcoffset")))["effectivefrom"]
    assert active.height > 0 and (local.dt.hour() == 0).all() and (local.dt.minute() == 0).all()
    # for reps east of UTC the stored instant falls on the previous UTC day
    east = active.filter(pl.col("address1_utcoffset") >= 540)
    assert east.height > 0 and (east["effectivefrom"].dt.hour() == 24 - 9).any()
    for table, column in (("opportunity", "estimatedclosedate"), ("opportunity", "actualclosedate"),
                          ("quote", "closedon"), ("invoice", "duedate"), ("new_contract", "new_signedon")):
        assert org.rows[table].schema[column] == pl.Date, (table, column)


def test_users_and_static_records(org: OrgData) -> None:
    users = org.rows["systemuser"]
    app = users.filter(pl.col("systemuserid") == org.meta.app_user_id)
    assert app["fullname"].to_list() == ["# l2c"] and app["applicationid"].is_not_null().all()
    assert {"SYSTEM", "# Web Forms Integration"} <= set(users["fullname"])
    assert set(users["address1_utcoffset"]) >= {-180, 60, 540}
    assert (users["_businessunitid_value"] == org.meta.business_unit_id).all()
    web = users.filter(pl.col("fullname") == "# Web Forms Integration")["systemuserid"][0]
    web_leads = org.rows["lead"].filter(pl.col("_createdby_value") == web)
    assert (web_leads["leadsourcecode"] == 8).all() and web_leads.height > 0
    acc = org.rows["account"]
    assert set(acc["territorycode"]) == {1, 2, 3, 4}
    assert acc["createdon"].max() < HISTORY_START
    people = users.filter(pl.col("title").is_not_null())
    assert people.filter(pl.col("title") == "Sales Representative").height == 6  # max(6, leads / 400)
    assert people.filter(pl.col("title") == "Sales Manager").height == 4

