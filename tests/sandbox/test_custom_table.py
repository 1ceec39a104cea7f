"""The org's custom table new_contract, as a maker creates it with the default publisher: its EntityDefinitions row
and attributes, its rows, change tracking and audit over real HTTPS, and the story that fills it (a won deal's
contract, drafted after the win and signed, late or never).

Expected metadata is written here from the docs sandbox/schema.py cites ([PD] entity-metadata.md "Table names" and
"Table states", webapi/create-update-entity-definitions-using-web-api.md, behavior-format-date-time-attribute.md);
expected values are the simulator's (its rows, audits and truth), never the Web API code's.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from sandbox import sim_contract
from sandbox.orgdata import OrgData
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.simulator import simulate
from tests.sandbox.conftest import ApiClient, StartSandbox, deltatoken, page_values

CRM = "Microsoft.Dynamics.CRM."
CONTRACT = "EntityDefinitions(LogicalName='new_contract')"
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
LOGICAL = "@Microsoft.Dynamics.CRM.lookuplogicalname"
ANNOTATED = 'odata.include-annotations="*"'
SIGNED = 100_000_000  # the first option the portal adds with the default publisher's option value prefix, 10000
STATUS_LABELS = {1: "Active", 2: "Inactive", SIGNED: "Signed"}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# the columns a maker creates on top of the ones every custom table gets
MAKER_COLUMNS = {"new_name", "new_opportunityid", "new_signedon"}
PLATFORM_COLUMNS = {"new_contractid", "statecode", "statuscode", "createdon", "modifiedon", "createdby",
                    "modifiedby", "ownerid", "versionnumber"}


@pytest.fixture(scope="module")
def org() -> OrgData:
    return simulate(11, 2000)


def local_day(instant: datetime, offset_minutes: int) -> str:
    return (instant + timedelta(minutes=offset_minutes)).date().isoformat()


# --- metadata --------------------------------------------------------------------------------------------------

def test_entity_definition_is_a_custom_table_named_as_dataverse_derives_it(api_client: ApiClient) -> None:
    row = api_client.ok(f"{CONTRACT}?$select=LogicalName,SchemaName,EntitySetName,LogicalCollectionName,"
                        "PrimaryIdAttribute,PrimaryNameAttribute,IsCustomEntity,ChangeTrackingEnabled,"
                        "IsAuditEnabled,ObjectTypeCode")
    assert (row["EntitySetName"], row["LogicalCollectionName"]) == ("new_contracts", "new_contracts")
    assert (row["PrimaryIdAttribute"], row["PrimaryNameAttribute"]) == ("new_contractid", "new_name")
    assert row["IsCustomEntity"] is True and row["ChangeTrackingEnabled"] is True
    assert row["IsAuditEnabled"]["Value"] is True
    assert row["ObjectTypeCode"] >= 10_000  # custom tables' codes start at 10000
    custom = api_client.ok("EntityDefinitions?$select=LogicalName&$filter=IsCustomEntity eq true")["value"]
    assert [entity["LogicalName"] for entity in custom] == ["new_contract"]  # Microsoft's tables are not custom


def test_attributes_say_which_columns_the_maker_added(api_client: ApiClient) -> None:
    rows = api_client.ok(f"{CONTRACT}/Attributes?$select=LogicalName,AttributeType,IsCustomAttribute,IsAuditEnabled,"
                         "ColumnNumber")["value"]
    custom = {row["LogicalName"]: row["IsCustomAttribute"] for row in rows}
    assert set(custom) == MAKER_COLUMNS | PLATFORM_COLUMNS
    assert {name for name, flag in custom.items() if flag} == MAKER_COLUMNS
    types = {row["LogicalName"]: row["AttributeType"] for row in rows}
    assert (types["new_opportunityid"], types["statecode"], types["statuscode"], types["new_signedon"]) == (
        "Lookup", "State", "Status", "DateTime")
    assert len({row["ColumnNumber"] for row in rows}) == len(rows)
    lookups = api_client.ok(f"{CONTRACT}/Attributes/{CRM}LookupAttributeMetadata?$select=LogicalName,Targets")
    assert {row["LogicalName"]: row["Targets"] for row in lookups["value"]}["new_opportunityid"] == ["opportunity"]


def test_signed_on_is_date_only_in_format_and_behaviour(api_client: ApiClient) -> None:
    body = api_client.ok(f"{CONTRACT}/Attributes/{CRM}DateTimeAttributeMetadata?$select=LogicalName,Format,"
                         "DateTimeBehavior")
    by_name = {row["LogicalName"]: row for row in body["value"]}
    assert set(by_name) == {"new_signedon", "createdon", "modifiedon"}  # the cast answers its type only
    assert (by_name["new_signedon"]["Format"], by_name["new_signedon"]["DateTimeBehavior"]) == (
        "DateOnly", {"Value": "DateOnly"})
    assert by_name["createdon"]["DateTimeBehavior"] == {"Value": "UserLocal"}


# --- rows, audit and change tracking over the Web API --------------------------------------------------------

def test_rows_are_served_with_calendar_days_and_the_signed_label(api_client: ApiClient,
                                                                 api_sandbox: Sandbox) -> None:
    org = api_sandbox.org.rows["new_contract"]
    opp_names = dict(api_sandbox.org.rows["opportunity"].select("opportunityid", "name").iter_rows())
    rows = page_values(api_client.pages(
        "new_contracts?$select=new_contractid,new_name,statecode,statuscode,new_signedon,_new_opportunityid_value",
        prefer=f"{ANNOTATED},odata.maxpagesize=50"))
    assert len(rows) == org.height > 50
    expected = {row["new_contractid"]: row for row in org.iter_rows(named=True)}
    for row in rows:
        mine = expected[row["new_contractid"]]
        signed_on = mine["new_signedon"]
        assert row["new_signedon"] == (None if signed_on is None else signed_on.isoformat())
        assert row["new_signedon"] is None or DAY.match(row["new_signedon"])
        assert (row["statecode"], row["statuscode"]) == (mine["statecode"], mine["statuscode"])
        assert row["statuscode" + FORMATTED] == STATUS_LABELS[row["statuscode"]]
        assert row["statecode" + FORMATTED] == "Active"
        assert row["_new_opportunityid_value" + LOGICAL] == "opportunity"
        assert row["_new_opportunityid_value" + FORMATTED] == opp_names[row["_new_opportunityid_value"]]
    signed = [row for row in rows if row["statuscode"] == SIGNED]
    assert 0 < len(signed) < len(rows) and all(row["new_signedon"] for row in signed)
    assert all(row["new_signedon"] is None for row in rows if row["statuscode"] == 1)
    filtered = page_values(api_client.pages(f"new_contracts?$select=new_contractid&$filter=statuscode eq {SIGNED}"))
    assert len(filtered) == len(signed)


def test_signing_is_audited_with_its_details(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    audits = api_sandbox.org.audits.filter(pl.col("objecttypecode") == "new_contract")
    listed = page_values(api_client.pages("audits?$filter=objecttypecode eq 'new_contract'",
                                          prefer=f"{ANNOTATED},odata.maxpagesize=1000"))
    assert len(listed) == audits.height
    assert {row["objecttypecode" + FORMATTED] for row in listed} == {"Contract"}
    assert {(row["operation"], row["action"]) for row in listed} == {(1, 1), (2, 2)}  # Create, and an Update
    columns = {row["ColumnNumber"]: row["LogicalName"] for row in api_client.ok(
        f"{CONTRACT}/Attributes?$select=LogicalName,ColumnNumber")["value"]}
    signings = [row for row in listed if row["operation"] == 2]
    assert signings
    for row in signings[:10]:
        assert {columns[int(n)] for n in row["attributemask"].split(",")} == {"statuscode", "new_signedon"}
        detail = api_client.ok(f"audits({row['auditid']})/{CRM}RetrieveAuditDetails", prefer=ANNOTATED)["AuditDetail"]
        old, new = detail["OldValue"], detail["NewValue"]
        assert new["@odata.type"] == f"#{CRM}new_contract"
        assert (old["statuscode"], old["new_signedon"]) == (1, None)
        assert new["statuscode"] == SIGNED and DAY.match(new["new_signedon"])
        assert (old["statuscode" + FORMATTED], new["statuscode" + FORMATTED]) == ("Active", "Signed")
        source = audits.filter(pl.col("auditid") == row["auditid"]).row(0, named=True)
        assert {k: v for k, v in new.items() if "@" not in k} == json.loads(source["_new"])


def test_a_delta_brings_new_and_newly_signed_contracts(api_start: StartSandbox) -> None:
    sandbox = api_start(OrgState(seed=42, leads=600), SandboxOptions(expire_change_tracking_days=60))
    client = ApiClient.connect(sandbox)
    prefer = "odata.track-changes,odata.maxpagesize=25"
    responses = client.pages("new_contracts?$select=new_contractid,statuscode,new_signedon", prefer=prefer)
    before = {row["new_contractid"]: row["statuscode"] for row in page_values(responses)}
    assert len(before) == sandbox.org.rows["new_contract"].height
    link = responses[-1].json()["@odata.deltaLink"]
    sandbox.advance(30)
    delta = page_values(client.pages(link, prefer=f"{prefer},{ANNOTATED}"))
    now = sandbox.org.rows["new_contract"]
    changed = now.filter(pl.col("versionnumber") > deltatoken(link)[0]).sort("versionnumber")
    assert [row["new_contractid"] for row in delta] == changed["new_contractid"].to_list()
    new_ids = {row["new_contractid"] for row in delta} - set(before)
    signed_since = [row for row in delta if row["new_contractid"] in before and before[row["new_contractid"]] == 1]
    assert new_ids and signed_since, "30 days draft new contracts and sign open ones"
    for row in signed_since:
        assert (row["statuscode"], row["statuscode" + FORMATTED]) == (SIGNED, "Signed")
        assert DAY.match(row["new_signedon"])


# --- the story -----------------------------------------------------------------------------------------------

def test_each_contract_signed_event_is_its_signing_audit_row_and_the_rows_final_state(org: OrgData) -> None:
    users = org.rows["systemuser"].select("systemuserid", "fullname", "address1_utcoffset")
    offset = dict(users.select("fullname", "address1_utcoffset").iter_rows())
    contracts = {row["new_contractid"]: row for row in org.rows["new_contract"].iter_rows(named=True)}
    events = org.truth.filter(pl.col("activity") == "Contract Signed")
    signing = org.audits.filter((pl.col("objecttypecode") == "new_contract") & (pl.col("operation") == 2)).join(
        users, left_on="_userid_value", right_on="systemuserid")
    assert events.height == signing.height > 100
    assert events["object_id"].is_unique().all()  # signed once
    matched = events.join(signing, left_on=["object_id", "timestamp", "resource"],
                          right_on=["_objectid_value", "createdon", "fullname"])
    assert matched.height == events.height
    for event in matched.iter_rows(named=True):
        row = contracts[event["object_id"]]
        day = local_day(event["timestamp"], offset[event["resource"]])
        assert event["object_type"] == "new_contract" and event["action"] == 2
        assert (event["case_type"], event["case_id"]) == ("opportunity", row["_new_opportunityid_value"])
        assert json.loads(event["_new"]) == {"statuscode": SIGNED, "new_signedon": day}
        assert json.loads(event["_old"]) == {"statuscode": 1, "new_signedon": None}
        # nothing changes a contract after its signing: the row is the signed state, stamped by the signer
        assert (row["statecode"], row["statuscode"], row["new_signedon"].isoformat()) == (0, SIGNED, day)
        assert (row["modifiedon"], row["_modifiedby_value"]) == (event["timestamp"], event["_userid_value"])
    assert org.rows["new_contract"].filter(pl.col("statuscode") == SIGNED).height == events.height


def test_every_contract_follows_a_won_deal_whose_quote_was_accepted(org: OrgData) -> None:
    contracts = org.rows["new_contract"]
    opps = org.rows["opportunity"].select("opportunityid", "name", "statecode", "_ownerid_value")
    first = org.truth.group_by("case_id", "activity").agg(pl.col("timestamp").min())
    accepted = first.filter(pl.col("activity") == "Quote Accepted").select("case_id", accepted="timestamp")
    won = first.filter(pl.col("activity") == "Opportunity Won").select("case_id", won="timestamp")
    joined = (contracts.join(opps, left_on="_new_opportunityid_value", right_on="opportunityid", how="left")
              .join(accepted, left_on="_new_opportunityid_value", right_on="case_id", how="left")
              .join(won, left_on="_new_opportunityid_value", right_on="case_id", how="left"))
    assert joined["_new_opportunityid_value"].is_unique().all()  # one contract a deal
    assert (joined["statecode_right"] == 1).all()  # the opportunity is won ...
    assert (joined["accepted"] <= joined["won"]).all() and (joined["won"] < joined["createdon"]).all()  # ... before
    assert (joined["_ownerid_value"] == joined["_ownerid_value_right"]).all()  # drafted for the deal's owner
    assert joined.select((pl.col("new_name") == pl.lit("Contract for ") + pl.col("name")).all()).item()
    # every deal won long enough ago has its contract
    settled = org.clock - timedelta(days=60)
    old_wins = won.filter(pl.col("won") < settled).get_column("case_id")
    assert old_wins.is_in(contracts["_new_opportunityid_value"].implode()).all() and old_wins.len() > 100


def test_signing_delays_spread_and_some_contracts_stay_open(org: OrgData) -> None:
    contracts = org.rows["new_contract"]
    signed = contracts.filter(pl.col("statuscode") == SIGNED)
    days = (signed["modifiedon"] - signed["createdon"]).dt.total_seconds() / 86_400
    assert (days > 0).all()
    assert (days <= 14).mean() > 0.6  # most within a couple of weeks  # type: ignore[operator]
    assert (days > 30).sum() >= 10 and days.max() > 60  # some late: weeks to months
    unsigned = contracts.filter(pl.col("statuscode") == 1)
    assert unsigned.height > 0 and unsigned["new_signedon"].is_null().all()
    age = (org.clock - unsigned["createdon"]).dt.total_days()
    assert (age > 180).any()  # never signed
    assert (age < 30).any()  # not signed yet


def test_contracts_leave_the_rest_of_the_org_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract has its own RNG, cursor and sequence numbers: without contracts every other record, change and
    truth event is the same, only the global versions close up."""
    seed, leads, clock = 5, 1000, datetime(2026, 1, 1, tzinfo=UTC)
    with_contracts = simulate(seed, leads, clock)
    monkeypatch.setattr(sim_contract._Contracts, "_contract", lambda self: None)
    without = simulate(seed, leads, clock)
    assert "new_contract" not in set(without.audits["objecttypecode"])
    kept = with_contracts.audits.filter(pl.col("objecttypecode") != "new_contract")
    assert kept.drop("_version").equals(without.audits.drop("_version"))
    assert with_contracts.truth.filter(pl.col("activity") != "Contract Signed").equals(without.truth)
    for table, frame in without.rows.items():
        if table != "new_contract":
            assert frame.drop("versionnumber").equals(with_contracts.rows[table].drop("versionnumber")), table

