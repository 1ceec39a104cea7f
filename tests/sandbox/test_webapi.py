"""The Web API emulator over real HTTPS: paging, query options, errors, annotations, metadata.

Requests go through `connector.tls.trusting_session` with tokens from the real MSAL; every expected value is
read from the simulator's OrgData (`sandbox.org`) or written here from DATAVERSE.md and the docs it cites,
never computed by the Web API code under test.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

import polars as pl
import pytest
import requests

from sandbox.runtime import OrgState, Sandbox
from tests.sandbox.conftest import DATA_ENTITY_SETS, ApiClient, StartSandbox, error_of, page_values

# entity set -> (table, primary key); audits is the read-only audit table
ENTITY_SETS = {**DATA_ENTITY_SETS, "audits": ("audit", "auditid")}
PAGE = 97
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
LOGICAL = "@Microsoft.Dynamics.CRM.lookuplogicalname"
# Labels from DATAVERSE.md ("State/status codes", "Values").
LEAD_STATES = {0: "Open", 1: "Qualified", 2: "Disqualified"}
LEAD_STATUSES = {1: "New", 2: "Contacted", 3: "Qualified", 4: "Lost", 5: "Cannot Contact",
                 6: "No Longer Interested", 7: "Canceled"}
LEAD_SOURCES = {1: "Advertisement", 2: "Employee Referral", 3: "External Referral", 4: "Partner",
                5: "Public Relations", 6: "Seminar", 7: "Trade Show", 8: "Web", 9: "Word of Mouth",
                10: "Other"}


def org_frame(sandbox: Sandbox, table: str) -> pl.DataFrame:
    return sandbox.org.audits if table == "audit" else sandbox.org.rows[table]


def sql_server_order(guid: str) -> bytes:
    """SQL Server's uniqueidentifier order: .NET bytes 10-15, then 8-9, 6-7, 4-5, 0-3."""
    b = uuid.UUID(guid).bytes_le
    return b[10:16] + b[8:10] + b[6:8] + b[4:6] + b[0:4]


def applied(response: requests.Response) -> list[str]:
    return [p.strip() for p in response.headers.get("Preference-Applied", "").split(",")]


# --- paging ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entity_set", ENTITY_SETS)
def test_next_links_page_through_exactly_the_org_rows(api_client: ApiClient, api_sandbox: Sandbox,
                                                      entity_set: str) -> None:
    table, pk = ENTITY_SETS[entity_set]
    expected = org_frame(api_sandbox, table).get_column(pk).to_list()
    responses = api_client.pages(f"{entity_set}?$select={pk}", prefer=f"odata.maxpagesize={PAGE}")
    got = [row[pk] for row in page_values(responses)]
    assert len(got) == len(set(got)) == len(expected)
    assert got == sorted(expected, key=sql_server_order)  # default order: the primary key
    assert len(responses) == math.ceil(len(expected) / PAGE)
    for response in responses:
        assert "odata.maxpagesize=97" in applied(response)
        assert len(response.json()["value"]) <= PAGE


def test_next_link_carries_the_documented_paging_cookie(api_client: ApiClient) -> None:
    prefer = f"odata.maxpagesize={PAGE}"
    body = api_client.ok("leads?$select=leadid,fullname", prefer=prefer)
    ids = [row["leadid"] for row in body["value"]]
    # [PD] webapi/query/page-results.md, byte for byte: outer cookie encoded once, inner paging cookie twice.
    cookie = ("%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e"
              f"%253cleadid%2520last%253d%2522%257b{ids[-1].upper()}%257d%2522%2520first%253d%2522%257b"
              f"{ids[0].upper()}%257d%2522%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E")
    assert body["@odata.nextLink"] == f"{api_client.api}/leads?$select=leadid,fullname&$skiptoken={cookie}"
    assert list(body) == ["@odata.context", "value", "@odata.nextLink"]
    second = api_client.ok(body["@odata.nextLink"], prefer=prefer)
    assert "$skiptoken=%3Ccookie%20pagenumber=%223%22" in second["@odata.nextLink"]
    assert second["value"][0]["leadid"] not in ids


@pytest.mark.parametrize(("target", "status", "codes", "message"), [
    ("leads?$skip=10", 400, ("0x80060888",), "Skip Clause is not supported in CRM"),
    ("leads?$select=leadid,x", 400, ("0x0",),
     "Could not find a property named 'x' on type 'Microsoft.Dynamics.CRM.lead'."),
    ("audits?$select=changedata", 400, ("0x0",),
     "Could not find a property named 'changedata' on type 'Microsoft.Dynamics.CRM.audit'."),
    ("x", 404, ("0x80060888", "0x8006088a"), "Resource not found for the segment 'x'."),
    ("opportunities?$expand=parentaccountid($select=name),nosuch", 400, ("0x0",),
     "Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.opportunity'."),
    ("leads?$expand=fullname", 400, ("0x0",), "Property 'fullname' on type 'Microsoft.Dynamics.CRM.lead' is not a "
     "navigation property or complex property. Only navigation properties can be expanded."),
    ("opportunities?$expand=parentaccountid($select=name)", 400, ("0x80060888",),
     "The query option $expand is not supported by the sandbox."),
])
def test_errors_have_dataverses_codes_and_messages(api_client: ApiClient, target: str, status: int,
                                                  codes: tuple[str, ...], message: str) -> None:
    response = api_client.get(target)
    assert response.headers["Content-Type"].startswith("application/json")
    got_status, code, got_message = error_of(response)
    assert (got_status, got_message) == (status, message)
    assert code in codes


CDS = "@Microsoft.PowerApps.CDS."


def test_errors_carry_the_detail_annotations_when_asked(api_client: ApiClient) -> None:
    """[PD] webapi/compose-http-requests-handle-errors.md, "Include more details with errors" (shared payload 12):
    with `Prefer: odata.include-annotations="*"` the error carries ErrorDetails.*, HelpLink, TraceText and
    InnerError.Message inside `error`, after code and message; the HelpLink has the doc's form for the code."""
    skip = "Skip Clause is not supported in CRM"
    body = api_client.get("leads?$skip=1", prefer='odata.include-annotations="*"').json()["error"]
    assert list(body) == ["code", "message", CDS + "ErrorDetails.OperationStatus", CDS + "ErrorDetails.SubErrorCode",
                          CDS + "HelpLink", CDS + "TraceText", CDS + "InnerError.Message"]
    assert (body["code"], body["message"], body[CDS + "InnerError.Message"]) == ("0x80060888", skip, skip)
    assert body[CDS + "HelpLink"] == ("http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm."
                                      "CrmException%3a80060888&client=platform")
    assert body[CDS + "ErrorDetails.SubErrorCode"] == str(0x80060888 - 2**32)  # the code as a signed HRESULT
    # The doc's narrower Prefer: only the help link; a 404 and a 0x0 ODataLib error carry it too.
    only_link = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue,Microsoft.PowerApps.CDS.HelpLink"'
    for target, code in (("nosuchentities", "0x80060888"), ("leads?$select=x", "0x0")):
        error = api_client.get(target, prefer=only_link).json()["error"]
        assert [k for k in error if k.startswith("@")] == [CDS + "HelpLink"], target
        assert error["code"] == code and error[CDS + "HelpLink"].endswith(f"%3a{code[2:]}&client=platform")
    # The doc's own wildcard example, a '*' closing a name: the ErrorDetails.* annotations and nothing else.
    doc_example = ('odata.include-annotations="OData.Community.Display.V1.FormattedValue,'
                   'Microsoft.PowerApps.CDS.ErrorDetails*"')
    error = api_client.get("leads?$skip=1", prefer=doc_example).json()["error"]
    assert [k for k in error if k.startswith("@")] == [CDS + "ErrorDetails.OperationStatus",
                                                       CDS + "ErrorDetails.SubErrorCode"]
    # Without the preference (or excluding the namespace) an error is just code and message.
    assert list(api_client.get("leads?$skip=1").json()["error"]) == ["code", "message"]
    excluded = 'odata.include-annotations="*,-Microsoft.PowerApps.CDS.*"'
    assert list(api_client.get("leads?$skip=1", prefer=excluded).json()["error"]) == ["code", "message"]


@pytest.mark.parametrize(("entity_set", "text", "predicate"), [
    ("leads", "statecode eq 1", pl.col("statecode") == 1),
    ("leads", "createdon ge 2025-07-01T00:00:00Z", pl.col("createdon") >= datetime(2025, 7, 1, tzinfo=UTC)),
    # '' escapes a quote, and string comparisons ignore case ([PD] webapi/query/filter-rows.md)
    ("leads", "companyname eq 'o''brien & SONS'",
     pl.col("companyname").str.to_lowercase() == "o'brien & sons"),
    ("leads", "Microsoft.Dynamics.CRM.In(PropertyName='leadsourcecode',PropertyValues=['1','8'])",
     pl.col("leadsourcecode").is_in([1, 8])),
    ("opportunities", "statecode eq 0 and estimatedvalue gt 20000",
     (pl.col("statecode") == 0) & (pl.col("estimatedvalue") > 20000)),
])
def test_filter_returns_what_polars_finds_in_the_org(api_client: ApiClient, api_sandbox: Sandbox,
                                                     entity_set: str, text: str, predicate: pl.Expr) -> None:
    table, pk = ENTITY_SETS[entity_set]
    frame = org_frame(api_sandbox, table)
    expected = frame.filter(predicate).get_column(pk).to_list()
    assert 0 < len(expected) < frame.height, "the filter must split the org to mean anything"
    query = f"{entity_set}?$select={pk}&$filter={quote(text, safe=chr(39) + '(),[]=')}"
    got = [row[pk] for row in page_values(api_client.pages(query, prefer=f"odata.maxpagesize={PAGE}"))]
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(expected)


def test_orderby_pages_through_every_row_in_that_order(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    rows = api_sandbox.org.rows["lead"].select("leadid", "createdon").to_dicts()
    by_key = sorted(rows, key=lambda r: sql_server_order(r["leadid"]))
    expected = [r["leadid"] for r in sorted(by_key, key=lambda r: r["createdon"], reverse=True)]  # stable
    responses = api_client.pages("leads?$select=leadid,createdon&$orderby=createdon desc",
                                 prefer=f"odata.maxpagesize={PAGE}")
    assert len(responses) > 5
    assert [row["leadid"] for row in page_values(responses)] == expected


def test_count_is_capped_at_5000_and_says_so_when_asked(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    leads, audits = api_sandbox.org.rows["lead"].height, api_sandbox.org.audits.height
    assert leads < 5000 < audits
    prefer = f"odata.maxpagesize={PAGE}"
    assert api_client.ok("leads?$select=leadid&$count=true", prefer=prefer)["@odata.count"] == leads
    assert api_client.ok("audits?$select=auditid&$count=true", prefer=prefer)["@odata.count"] == 5000
    # [PD] webapi/query/count-rows.md: the two annotations, on request, for any entity set
    annotations = ('odata.include-annotations="Microsoft.Dynamics.CRM.totalrecordcount,'
                   'Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"')
    for target, total, exceeded in (("audits?$select=auditid&$count=true", 5000, True),
                                    ("leads?$select=leadid&$count=true", leads, False),
                                    ("leads?$select=leadid", -1, False)):
        body = api_client.ok(target, prefer=f"{prefer},{annotations}")
        assert body["@Microsoft.Dynamics.CRM.totalrecordcount"] == total
        assert body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is exceeded
    qualified = api_sandbox.org.rows["lead"].filter(pl.col("statecode") == 1).height
    for target, expected in (("leads/$count", leads), ("audits/$count", 5000),
                             ("leads/$count?$filter=statecode eq 1", qualified)):
        response = api_client.get(target)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
        assert response.text == str(expected)


def test_rows_inserted_between_pages_are_neither_lost_nor_repeated(api_start: StartSandbox) -> None:
    sandbox = api_start(OrgState(seed=42, leads=300))
    client = ApiClient.connect(sandbox)
    prefer = "odata.maxpagesize=40"
    before = set(sandbox.org.rows["lead"].get_column("leadid").to_list())
    queries = ("leads?$select=leadid", "leads?$select=leadid,createdon&$orderby=createdon")
    first = [client.ok(query, prefer=prefer) for query in queries]
    sandbox.advance(20)
    after = set(sandbox.org.rows["lead"].get_column("leadid").to_list())
    assert after - before, "the advance must add leads"
    got = {}
    for query, page in zip(queries, first, strict=True):
        rest = page_values(client.pages(page["@odata.nextLink"], prefer=prefer))
        ids = [row["leadid"] for row in page["value"] + rest]
        assert len(ids) == len(set(ids)), query
        assert before & after <= set(ids) <= before | after, query
        got[query] = set(ids)
    # In createdon order every new lead sorts after the first page, so all of them come.
    assert after - before <= got[queries[1]]


# --- annotations -----------------------------------------------------------------------------------------

def test_annotations_carry_labels_names_and_lookup_targets(api_client: ApiClient,
                                                           api_sandbox: Sandbox) -> None:
    org = api_sandbox.org.rows
    primary_names = (("account", "accountid", "name"), ("systemuser", "systemuserid", "fullname"),
                     ("transactioncurrency", "transactioncurrencyid", "currencyname"))
    names = {table: dict(org[table].select(pk, name).iter_rows()) for table, pk, name in primary_names}
    lookups = {"_parentaccountid_value": "account", "_ownerid_value": "systemuser",
               "_createdby_value": "systemuser", "_transactioncurrencyid_value": "transactioncurrency"}
    source = {row["leadid"]: row for row in org["lead"].iter_rows(named=True)}
    prefer = 'odata.include-annotations="*",odata.maxpagesize=500'
    responses = api_client.pages("leads", prefer=prefer)
    assert 'odata.include-annotations="*"' in applied(responses[0])
    rows = page_values(responses)
    assert len(rows) == len(source)
    for row in rows:
        lead = source[row["leadid"]]
        assert row["@odata.etag"] == f'W/"{lead["versionnumber"]}"'
        assert row["statecode" + FORMATTED] == LEAD_STATES[lead["statecode"]]
        assert row["statuscode" + FORMATTED] == LEAD_STATUSES[lead["statuscode"]]
        if lead["leadsourcecode"] is None:
            assert "leadsourcecode" + FORMATTED not in row
        else:
            assert row["leadsourcecode" + FORMATTED] == LEAD_SOURCES[lead["leadsourcecode"]]
        for column, target in lookups.items():
            if lead[column] is None:
                assert column + LOGICAL not in row and column + FORMATTED not in row
            else:
                assert row[column + LOGICAL] == target
                assert row[column + FORMATTED] == names[target][lead[column]]
    plain = page_values(api_client.pages("leads", prefer="odata.maxpagesize=500"))
    assert {key for row in plain for key in row if "@" in key} == {"@odata.etag"}
    assert [row["@odata.etag"] for row in plain] == [row["@odata.etag"] for row in rows]


# --- metadata, identity, headers -------------------------------------------------------------------------

def test_entity_definitions_resolve_a_table_as_the_sdk_asks(api_client: ApiClient) -> None:
    body = api_client.ok("EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute"
                         "&$filter=LogicalName eq 'lead'")
    [entity] = body["value"]
    assert {k: entity[k] for k in ("LogicalName", "EntitySetName", "PrimaryIdAttribute")} == {
        "LogicalName": "lead", "EntitySetName": "leads", "PrimaryIdAttribute": "leadid"}
    assert set(entity) <= {"LogicalName", "EntitySetName", "PrimaryIdAttribute", "MetadataId"}


def test_attribute_metadata_maps_every_attributemask_to_the_changed_columns(api_client: ApiClient,
                                                                            api_sandbox: Sandbox) -> None:
    body = api_client.ok("EntityDefinitions(LogicalName='opportunity')/Attributes"
                         "?$select=LogicalName,ColumnNumber,AttributeType")
    # A lookup column's Web API property is _<name>_value ([PD] webapi/web-api-properties.md)
    lookup_types = ("Lookup", "Owner", "Customer")
    by_number = {a["ColumnNumber"]: f"_{a['LogicalName']}_value" if a["AttributeType"] in lookup_types
                 else a["LogicalName"] for a in body["value"]}
    assert len(by_number) == len(body["value"])
    audits = api_sandbox.org.audits.filter((pl.col("objecttypecode") == "opportunity")
                                           & pl.col("attributemask").is_not_null())
    assert audits.height > 100
    for mask, old, new in audits.select("attributemask", "_old", "_new").iter_rows():
        changed = {by_number[int(number)] for number in mask.split(",")}
        assert changed == set(json.loads(old)) | set(json.loads(new))


def test_whoami_is_the_application_user(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    body = api_client.ok("WhoAmI")
    assert body["UserId"] == api_sandbox.org.meta.app_user_id
    assert body["BusinessUnitId"] == api_sandbox.org.meta.business_unit_id
    assert body["OrganizationId"] == api_sandbox.org.meta.organization_id


def test_one_date_header_the_orgs_clock(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    response = api_client.get("WhoAmI")
    clock = format_datetime(api_sandbox.org.clock.astimezone(UTC), usegmt=True)
    assert response.raw.headers.getlist("Date") == [clock]
