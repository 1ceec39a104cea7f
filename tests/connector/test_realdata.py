"""l2c's parsers fed with real Web API answers (tests/realdata/payloads, each named by its number below).

The values asserted are written out from the payload text (and checked to be in it), never taken from l2c's
output. Where a read involves requests, it goes through the real DataverseClient (MSAL sign-in, requests,
urllib3) to a real TLS server that answers with the payloads (`scripted_org`, tests/realdata/org.py), and the
request targets are compared with what the server received on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl
import pytest
from requests.structures import CaseInsensitiveDict

from config.tables import TableConfig, TablesConfig
from connector import rows as rowmod
from connector.audit import AUDIT, AUDIT_COLUMNS, DETAILS, _land_details, mask_numbers, needed_details
from connector.batch import parse_batch
from connector.http import DataverseClient, RequestRejected, error_of, validate_response
from connector.lake import Lake
from connector.metadata import TableMeta, _slim
from connector.odata import pages, prefer
from connector.state import StateStore
from connector.sync import SyncContext, sync_table
from tests.realdata import Payload, load
from tests.realdata.org import ScriptedOrg
from transforms.build import DETAILS_SCHEMA

P01 = "01_docs_audit_list_deleted_contacts.http"
P05 = "05_docs_changetracking_initial.http"
P06 = "06_docs_changetracking_delta_deleted.http"
P07 = "07_docs_page1_nextlink.http"
P08 = "08_docs_page2_nextlink.http"
P09 = "09_docs_select_name_revenue.http"
P10 = "10_docs_formatted_values.http"
P11 = "11_docs_lookup_annotations.http"
P16 = "16_notes_ct_disabled_0x80072491.json"
P27 = "27_ASSEMBLED_expired_token_0x80044352.json"


def attributes(*columns: tuple[str, str], **extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Attribute rows as connector/metadata.py's TableMeta holds them (its `_slim` of each Attributes row)."""
    return [_slim({"LogicalName": name, "AttributeType": kind, **extra.get(name, {})}) for name, kind in columns]


def in_text(payload: Payload, *values: str) -> None:
    """The values a test expects are the payload's own: each must be in its text."""
    for value in values:
        assert value in payload.text, f"{value!r} is not in {payload.name}"


def frame_of(payload: Payload, meta: TableMeta, columns: list[str]) -> pl.DataFrame:
    specs = rowmod.column_specs(meta.attributes, [meta.api_name(c) for c in columns])
    frame, bad = rowmod.to_frame(payload.json["value"], specs)
    assert bad == []
    return frame


def path_and_query(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def client(scripted_org: ScriptedOrg, tmp_path: Path) -> Iterator[DataverseClient]:
    with DataverseClient(scripted_org.settings(tmp_path / "data"), backoff_base_s=0.01, backoff_max_s=0.1,
                         budget_s=30.0, read_timeout=10.0) as made:
        yield made


# --- 01: audit rows ------------------------------------------------------------------------------------------

# The audit table's columns l2c selects (connector/audit.py AUDIT_COLUMNS), with their AttributeType in
# [PD] reference/entities/audit.md.
AUDIT_META = TableMeta("audit", "audits", "auditid", False, False, attributes(
    ("auditid", "Uniqueidentifier"), ("createdon", "DateTime"), ("operation", "Picklist"), ("action", "Picklist"),
    ("objecttypecode", "EntityName"), ("objectid", "Lookup"), ("userid", "Lookup"), ("callinguserid", "Lookup"),
    ("attributemask", "Memo"), ("transactionid", "Uniqueidentifier"),
    createdon={"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}}))


def test_01_audit_rows_keep_lookups_their_targets_labels_utc_time_and_the_whole_attributemask() -> None:
    payload = load(P01)
    mask = payload.json["value"][0]["attributemask"]
    in_text(payload, "0e76dc8a-41b5-ec11-983f-0022482bf046", "4026be43-6b69-e111-8f65-78e7d1620f5e",
            '"FirstName LastName"', '"2022-05-12T22:19:12Z"', f'"attributemask": "{mask}"')
    frame = frame_of(payload, AUDIT_META, AUDIT_COLUMNS)
    row = frame.row(0, named=True)
    assert frame.height == 1
    assert row["_objectid_value"] == "0e76dc8a-41b5-ec11-983f-0022482bf046"
    assert row["_objectid_value__type"] == "contact" and row["_objectid_value__label"] is None
    assert row["objecttypecode"] == "contact"  # EntityName: the logical name; its label "Contact" is not a choice
    assert "objecttypecode__label" not in frame.columns
    assert row["_userid_value"] == "4026be43-6b69-e111-8f65-78e7d1620f5e"
    assert row["_userid_value__label"] == "FirstName LastName" and row["_userid_value__type"] == "systemuser"
    assert frame.schema["createdon"] == pl.Datetime("us", "UTC")
    assert row["createdon"] == datetime(2022, 5, 12, 22, 19, 12, tzinfo=UTC)  # not the label's "3:19 PM"
    assert row["transactionid"] == "00000000-0000-0000-0000-000000000000"
    assert row["attributemask"] == mask and len(mask.split(",")) == 175  # kept whole: 175 column numbers
    assert mask_numbers(row["attributemask"]) == {int(n) for n in mask.split(",")}
    assert {47, 2, 10162, 10026} <= mask_numbers(row["attributemask"])
    # Not in the docs' $select: null, not invented.
    assert [row[c] for c in ("auditid", "operation", "action", "_callinguserid_value", "_version")] == [None] * 5


# --- 09, 10, 11: pages of account --------------------------------------------------------------------------

ACCOUNT_META = TableMeta("account", "accounts", "accountid", True, True, attributes(
    ("accountid", "Uniqueidentifier"), ("name", "String"), ("revenue", "Money"), ("accountnumber", "String"),
    ("telephone1", "String"), ("fax", "String"), ("transactioncurrencyid", "Lookup"),
    ("primarycontactid", "Lookup"), ("customertypecode", "Picklist"), ("modifiedon", "DateTime"),
    ("ownerid", "Owner"), modifiedon={"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}}))


def test_09_money_is_exact_and_an_unrequested_lookup_is_ignored_unless_selected() -> None:
    payload = load(P09)
    in_text(payload, '"revenue": 20000.0000', '"_transactioncurrencyid_value": "228f42f8-e646-e111-8eb7-78e7d162ced1"',
            '"accountid": "4624eff7-53d3-ed11-a7c7-000d3a993550"', 'W/\\"81052965\\"')
    frame = frame_of(payload, ACCOUNT_META, ["accountid", "name", "revenue"])
    assert frame.columns == ["accountid", "name", "revenue", "_version"]  # the docs' own $select: name,revenue
    assert frame.schema["revenue"] == pl.Decimal(38, 4)
    revenue = frame.get_column("revenue").item()
    assert revenue == Decimal("20000.0000") and str(revenue) == "20000.0000"
    assert frame.row(0) == ("4624eff7-53d3-ed11-a7c7-000d3a993550", "Litware, Inc. (sample)", revenue, 81052965)
    kept = frame_of(payload, ACCOUNT_META, ["accountid", "revenue", "transactioncurrencyid"])
    assert kept.select("_transactioncurrencyid_value", "_transactioncurrencyid_value__label",
                       "_transactioncurrencyid_value__type").row(0) == ("228f42f8-e646-e111-8eb7-78e7d162ced1",
                                                                        None, None)


def test_10_formatted_values_label_lookups_and_choices_and_times_stay_utc() -> None:
    payload = load(P10)
    in_text(payload, '"Susanna Stubberod (sample)"', '"customertypecode": 1', '"Competitor"', '"US Dollar"',
            '"modifiedon": "2023-04-07T21:59:01Z"', '"$20,000.00"', 'W/\\"81359849\\"')
    frame = frame_of(payload, ACCOUNT_META, ["accountid", "name", "revenue", "primarycontactid", "customertypecode",
                                             "modifiedon", "transactioncurrencyid"])
    row = frame.row(0, named=True)
    assert row["accountid"] == "78914942-34cb-ed11-b596-0022481d68cd"
    assert row["revenue"] == Decimal("20000.0000") and "revenue__label" not in frame.columns  # "$20,000.00" dropped
    assert (row["_primarycontactid_value"], row["_primarycontactid_value__label"],
            row["_primarycontactid_value__type"]) == ("70bf4d48-34cb-ed11-b596-0022481d68cd",
                                                      "Susanna Stubberod (sample)", None)
    assert (row["customertypecode"], row["customertypecode__label"]) == (1, "Competitor")
    assert row["modifiedon"] == datetime(2023, 4, 7, 21, 59, 1, tzinfo=UTC)  # not the label's "2:59 PM"
    assert row["_transactioncurrencyid_value__label"] == "US Dollar"
    assert row["_version"] == 81359849


def test_11_lookup_targets_tell_a_team_owner_from_a_user_owner() -> None:
    payload = load(P11)
    in_text(payload, "39e0dbe4-131b-e111-ba7e-78e7d1620f5e", "4026be43-6b69-e111-8f65-78e7d1620f5e",
            'lookuplogicalname": "team"', 'lookuplogicalname": "systemuser"')
    frame = frame_of(payload, ACCOUNT_META, ["accountid", "name", "ownerid"])
    assert frame.select("name", "_ownerid_value", "_ownerid_value__type", "_version").rows() == [
        ("Adventure Works (sample)", "39e0dbe4-131b-e111-ba7e-78e7d1620f5e", "team", 81550512),
        ("Litware, Inc. (sample)", "4026be43-6b69-e111-8f65-78e7d1620f5e", "systemuser", 81359849)]
    assert frame.get_column("_ownerid_value__label").is_null().all()  # only lookuplogicalname was asked for


# --- 07, 08: paging by @odata.nextLink over HTTPS ------------------------------------------------------------

def test_07_08_next_links_are_sent_byte_for_byte_with_the_same_prefer(scripted_org: ScriptedOrg,
                                                                        client: DataverseClient) -> None:
    first = scripted_org.answer(P07)
    second = scripted_org.answer(P08)
    assert first is not None and second is not None
    scripted_org.answer_json(200, {"value": []})  # the test's own last page: the docs show only two
    got = list(pages(client, "contacts?$select=fullname", prefer(2, annotations=False)))
    link1, link2 = first.json["@odata.nextLink"], second.json["@odata.nextLink"]
    assert link1.startswith(scripted_org.url + "/api/data/v9.2/contacts?$select=fullname&$skiptoken=%3Ccookie%20")
    assert "%253ccookie%2520page%253d%25221%2522%253e" in link1  # doubly escaped, lower-case inside
    assert [p.next_link for p in got] == [link1, link2, None]
    assert scripted_org.targets() == ["/api/data/v9.2/contacts?$select=fullname", path_and_query(link1),
                                      path_and_query(link2)]
    assert {sent.headers["Prefer"] for sent in scripted_org.sent} == {"odata.maxpagesize=2"}
    assert [(r["fullname"], r["contactid"]) for p in got for r in p.records] == [
        ("Yvonne McKay (sample)", "49b0be2e-d01c-ed11-b83e-000d3a572421"),
        ("Susanna Stubberod (sample)", "70bf4d48-34cb-ed11-b596-0022481d68cd"),
        ("Nancy Anderson (sample)", "72bf4d48-34cb-ed11-b596-0022481d68cd"),
        ("Maria Campbell (sample)", "74bf4d48-34cb-ed11-b596-0022481d68cd")]


# --- 05, 06, 16, 27: change tracking through connector.sync over HTTPS ---------------------------------------

ACCOUNT_CT = TablesConfig(table=[TableConfig(name="account",
                                             columns=["accountid", "name", "accountnumber", "telephone1", "fax"])])


def sync_account(client: DataverseClient, data: Path, run_id: str) -> Any:
    ctx = SyncContext(client=client, lake=Lake(data), states=StateStore(data), tables=ACCOUNT_CT, run_id=run_id,
                      page_size=5000)
    return sync_table(ctx, ACCOUNT_CT.table[0], ACCOUNT_META)


def test_05_06_the_delta_link_is_stored_as_served_and_sent_back_byte_for_byte(scripted_org: ScriptedOrg,
                                                                              client: DataverseClient,
                                                                              tmp_path: Path) -> None:
    initial = scripted_org.answer(P05)
    assert initial is not None
    delta_link = initial.json["@odata.deltaLink"]
    in_text(initial, "$deltatoken=919042%2108%2f22%2f2017%2008%3a10%3a44")
    first = sync_account(client, tmp_path, "run1")
    stored = StateStore(tmp_path).load("account").delta_link
    # Path and query as served: v9.0 (not the client's v9.2), `%21`, `%2f`, `%3a` in lower case.
    assert stored == "/api/data/v9.0/accounts?$select=name,accountnumber,telephone1,fax" \
                     "&$deltatoken=919042%2108%2f22%2f2017%2008%3a10%3a44" == path_and_query(delta_link)
    assert (first.mode, first.rows, first.deletions) == ("delta", 1, 0)
    assert "odata.track-changes" in scripted_org.sent[0].headers["Prefer"]

    delta = scripted_org.answer(P06)
    assert delta is not None
    second = sync_account(client, tmp_path, "run2")
    assert scripted_org.targets()[1] == stored  # byte for byte on the request line
    assert (second.mode, second.rows, second.deletions) == ("delta", 1, 1)
    assert StateStore(tmp_path).load("account").delta_link == path_and_query(delta.json["@odata.deltaLink"])
    in_text(delta, '"id":"2e451703-c686-e711-80e5-00155db19e6d"', '"name":"Monte Orton"')
    lake = Lake(tmp_path)
    deletions = lake.scan("account").filter(pl.col("_op") == "delete").collect()
    assert deletions.get_column("accountid").to_list() == ["2e451703-c686-e711-80e5-00155db19e6d"]
    assert lake.current("account", "accountid").select("accountid", "name", "telephone1", "fax", "_version").rows() \
        == [("60c4e274-0d87-e711-80e5-00155db19e6d", "Monte Orton", "555000", "10101", 915244)]


def test_a_link_keeps_its_escapes_case_and_only_what_must_be_encoded_is(scripted_org: ScriptedOrg,
                                                                         client: DataverseClient) -> None:
    for _ in range(3):
        scripted_org.answer_json(200, {"value": []})  # the test's own answers: only the targets matter here
    link = "/api/data/v9.0/accounts?$deltatoken=919042%2108%2f22%2f2017%2008%3a10%3a44"  # payload 05's
    client.get(scripted_org.url + link)
    client.get(link)  # as state keeps it
    client.get(scripted_org.url + "/api/data/v9.0/accounts?$deltatoken=1%2f 2")  # a space must be encoded
    # urllib3's encoding, case included, where it must act
    assert scripted_org.targets() == [link, link, "/api/data/v9.0/accounts?$deltatoken=1%2F%202"]


def test_27_an_expired_delta_token_resyncs_the_table_in_full(scripted_org: ScriptedOrg, client: DataverseClient,
                                                              tmp_path: Path) -> None:
    scripted_org.answer(P05)
    sync_account(client, tmp_path, "run1")
    stored = StateStore(tmp_path).load("account").delta_link
    scripted_org.answer(P27, status=400)  # the status of this answer is not public: 400 assumed (README)
    again = scripted_org.answer(P05)
    assert again is not None
    result = sync_account(client, tmp_path, "run2")
    full, sent_link, resync = scripted_org.targets()
    assert sent_link == stored and resync == full and "$deltatoken" not in resync
    assert "odata.track-changes" in scripted_org.sent[2].headers["Prefer"]
    assert result.mode == "delta" and any("delta token expired" in note for note in result.notes)
    assert (result.rows, result.deletions) == (1, 0)  # the resync returned the one account again: none deleted
    assert StateStore(tmp_path).load("account").delta_link == path_and_query(again.json["@odata.deltaLink"])


def test_16_change_tracking_off_falls_back_to_the_watermark(scripted_org: ScriptedOrg, client: DataverseClient,
                                                             tmp_path: Path) -> None:
    scripted_org.answer(P16, status=400)  # the status of this answer is not public: 400 assumed
    scripted_org.answer_json(200, {"value": []})  # the test's own (empty) answer to the watermark read
    result = sync_account(client, tmp_path, "run1")
    tracked, watermark = scripted_org.sent
    assert "odata.track-changes" in tracked.headers["Prefer"]
    assert "odata.track-changes" not in watermark.headers.get("Prefer", "")
    assert "$orderby=modifiedon%20asc,accountid%20asc" in watermark.target
    state = StateStore(tmp_path).load("account")
    assert (result.mode, state.mode, state.delta_link) == ("watermark", "watermark", None)
    assert any("change tracking is off" in note for note in result.notes)


# --- 21, 22, 23, 24: $batch answers, as published (LF) and with CRLF -------------------------------------------

def batch_parts(name: str, crlf: bool) -> list[tuple[int, CaseInsensitiveDict[str], bytes]]:
    body = load(name).body
    body = body.replace(b"\n", b"\r\n") if crlf else body
    boundary = body.lstrip().split(b"\n", 1)[0].strip()[2:].decode()  # the docs leave out the outer Content-Type
    assert boundary.startswith("batchresponse_")
    return parse_batch(f"multipart/mixed; boundary={boundary}", body)


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_21_22_batch_answers_with_and_without_a_change_set(crlf: bool) -> None:
    for name, ids in (("21_docs_batch_response.http", ("d31ba648", "d41ba648", "d51ba648")),
                      ("22_docs_batch_changeset_response.http", ("e73ffc82", "e83ffc82", "e93ffc82"))):
        parts = batch_parts(name, crlf)
        assert [status for status, _, _ in parts] == [204, 204, 204, 200], name
        suffix = "-c592-ed11-aad1-000d3a993550" if name.startswith("21") else "-e292-ed11-aad1-000d3a9933c9"
        assert [h["Location"] for _, h, _ in parts[:3]] == [
            f"https://contoso.crm.dynamics.com/api/data/v9.2/tasks({i}{suffix})" for i in ids]
        assert all(body.strip() == b"" for _, _, body in parts[:3])
        _, headers, body = parts[3]
        assert headers["Content-Type"] == "application/json; odata.metadata=minimal; odata.streaming=true"
        tasks = json.loads(body)["value"]
        assert [(t["subject"], t["activityid"]) for t in tasks] == [
            (f"Task {n} in batch", f"{i}{suffix}") for n, i in enumerate(ids, 1)]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_23_24_failed_parts_carry_their_status_code_and_message(crlf: bool) -> None:
    parts = batch_parts("23_docs_batch_continue_on_error.http", crlf)
    assert [status for status, _, _ in parts] == [400, 204, 204]
    status, headers, body = parts[0]
    assert headers["REQ_ID"] == "de4c5227-4a28-4ebd-8ced-3392ece1697b"
    with pytest.raises(RequestRejected) as rejected:
        validate_response(status, headers, body, "https://contoso.crm.dynamics.com/api/data/v9.2/tasks")
    assert (rejected.value.status, rejected.value.code) == (400, "0x80044331")
    assert rejected.value.context["request_id"] == "de4c5227-4a28-4ebd-8ced-3392ece1697b"
    assert "exceeded the maximum allowed length of '200'" in rejected.value.message
    assert [h["Location"].rsplit("/", 1)[1] for _, h, _ in parts[1:]] == ["tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)",
                                                              "tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)"]

    (status, headers, body), = batch_parts("24_efcore_batch_changeset_404.multipart", crlf)  # in a change set
    assert status == 404 and headers["OData-Version"] == "4.0"
    assert error_of(body) == ("0x80060888", "Resource not found for the segment 'xxxxxxx'.")


# --- 13, 14, 15: metadata rows ---------------------------------------------------------------------------------

def test_15_a_picklist_attribute_is_slimmed_to_what_l2c_keeps() -> None:
    payload = load("15_docs_picklist_optionset.http")
    in_text(payload, '"LogicalName": "accountcategorycode"', "PicklistAttributeMetadata")
    # The docs' $select names LogicalName and the option sets only: the rest l2c keeps is absent, hence None.
    assert _slim(payload.json) == {"LogicalName": "accountcategorycode", "ColumnNumber": None,
                                   "AttributeType": None, "Format": None, "DateTimeBehavior": None}


def test_14_derived_type_rows_lose_their_annotations_and_nested_objects() -> None:
    rows = load("14_docs_attributes_metadataid_collection.http").json["value"]
    picklist = load("15_docs_picklist_optionset.http").json
    # 14 selects MetadataId only; its one row is 15's column (same MetadataId), so its LogicalName is 15's.
    assert [row["MetadataId"] for row in rows] == [picklist["MetadataId"]]
    assert rows[0]["@odata.type"] == "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    slim = _slim({**rows[0], "LogicalName": picklist["LogicalName"], "OptionSet": picklist["OptionSet"]})
    assert slim == {"LogicalName": "accountcategorycode", "ColumnNumber": None, "AttributeType": None,
                    "Format": None, "DateTimeBehavior": None}
    assert json.loads(json.dumps(slim)) == slim  # what the metadata cache stores



# --- 02, 03, 04, 25, 26: audit details through $batch and connector/audit.py's one landing function -------------

DETAIL_IDS = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 9)]
ACCOUNT_ID = "d249d106-38b5-ec11-983f-002248296cd0"  # any account: the payloads do not name the audited record
NO_DETAIL = [b"{}", b'{"@odata.context": "https://contoso.crm.dynamics.com/api/data/v9.2/$metadata'
                    b'#Microsoft.Dynamics.CRM.RetrieveAuditDetailsResponse"}']  # the test's own: no AuditDetail


def as_answer(item: dict[str, Any]) -> bytes:
    """An AuditDetailCollection item (03, 04, 26) as RetrieveAuditDetails answers it: under `AuditDetail`."""
    return json.dumps({"AuditDetail": item}).encode()


@pytest.fixture
def landed(scripted_org: ScriptedOrg, client: DataverseClient, tmp_path: Path) -> tuple[Lake, tuple[int, int, Any]]:
    """Eight RetrieveAuditDetails answers in one $batch, landed by connector/audit.py `_land_details`: 02, 03's
    item, 04's two items, 25, 26's item, then two answers without an AuditDetail."""
    collection = load("04_docs_retrieverecordchangehistory.http").json["AuditDetailCollection"]["AuditDetails"]
    scripted_org.answer_batch([
        scripted_org.load("02_docs_retrieveauditdetails_attribute.http").body,
        as_answer(load("03_docs_retrieveattributechangehistory.http").json["AuditDetailCollection"]["AuditDetails"][0]),
        as_answer(collection[0]), as_answer(collection[1]),
        load("25_thirdparty_retrieveauditdetails_relationship.json").body,
        as_answer(load("26_thirdparty_shareauditdetail_item.json").json),
        *NO_DETAIL])
    replies = client.batch_get([f"audits({a})/Microsoft.Dynamics.CRM.RetrieveAuditDetails" for a in DETAIL_IDS],
                               kind="audit_detail")
    lake = Lake(tmp_path / "data")
    chunk = [(auditid, "account", ACCOUNT_ID) for auditid in DETAIL_IDS]
    return lake, _land_details(lake, chunk, replies, number=1, stream="details-run1", run_id="run1")


def details_by_id(lake: Lake) -> dict[str, dict[str, Any]]:
    return {row["auditid"]: row for row in lake.scan(DETAILS).collect().iter_rows(named=True)}


def test_02_03_04_attribute_details_land_their_old_and_new_values(landed: tuple[Lake, Any]) -> None:
    lake, (count, quarantined, refusal) = landed
    assert (count, quarantined, refusal) == (6, 2, None)
    rows = details_by_id(lake)
    attribute = [rows[a] for a in DETAIL_IDS[:4]]
    assert [r["detail_type"] for r in attribute] == ["AttributeAuditDetail"] * 4
    # 02: a lookup set where there was none; its annotations are in the value (as today), @odata.type is not.
    assert json.loads(attribute[0]["old_values"]) == {}
    assert json.loads(attribute[0]["new_values"]) == {
        "_parentaccountid_value@OData.Community.Display.V1.FormattedValue": "A. Datum Corporation",
        "_parentaccountid_value@Microsoft.Dynamics.CRM.associatednavigationproperty": "parentaccountid",
        "_parentaccountid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
        "_parentaccountid_value": "d249d106-38b5-ec11-983f-002248296cd0"}
    # 03 and 04's first item: a text column changed.
    for row in attribute[1:3]:
        assert (json.loads(row["old_values"]), json.loads(row["new_values"])) == (
            {"description": "Old description value"}, {"description": "New description value"})
    # 04's second item: the owner went from a user to a team.
    old, new = json.loads(attribute[3]["old_values"]), json.loads(attribute[3]["new_values"])
    assert (old["_ownerid_value"], old["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]) == (
        "4026be43-6b69-e111-8f65-78e7d1620f5e", "systemuser")
    assert (new["_ownerid_value"], new["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]) == (
        "39e0dbe4-131b-e111-ba7e-78e7d1620f5e", "team")
    # The whole detail is kept too, annotations included.
    assert json.loads(attribute[0]["detail"]) == load("02_docs_retrieveauditdetails_attribute.http").json["AuditDetail"]
    assert {(r["objecttypecode"], r["objectid"]) for r in attribute} == {("account", ACCOUNT_ID)}


def test_25_26_relationship_and_share_details_land_with_their_type_and_whole_content(landed: tuple[Lake, Any]
                                                                                     ) -> None:
    lake, _ = landed
    rows = details_by_id(lake)
    relationship, share = rows[DETAIL_IDS[4]], rows[DETAIL_IDS[5]]
    assert relationship["detail_type"] == "RelationshipAuditDetail"
    assert json.loads(relationship["detail"]) == {
        "@odata.type": "#Microsoft.Dynamics.CRM.RelationshipAuditDetail", "RelationshipName": "account_primary_contact",
        "TargetRecords": [{"@odata.type": "#Microsoft.Dynamics.CRM.contact", "fullname": "Anna Smith"}]}
    assert share["detail_type"] == "ShareAuditDetail"
    assert json.loads(share["detail"]) == {"@odata.type": "#Microsoft.Dynamics.CRM.ShareAuditDetail", "AuditRecord": {}}
    # Neither type has OldValue/NewValue: no values, rather than an empty "no change".
    assert [relationship["old_values"], relationship["new_values"], share["old_values"], share["new_values"]] \
        == [None] * 4


def test_an_answer_without_an_auditdetail_is_quarantined_and_asked_for_again(landed: tuple[Lake, Any]) -> None:
    lake, _ = landed
    assert set(details_by_id(lake)).isdisjoint(DETAIL_IDS[6:])  # never landed as "no change"
    quarantine = lake.scan_quarantine(DETAILS).collect()
    assert [json.loads(r)["auditid"] for r in quarantine.get_column("record")] == DETAIL_IDS[6:]
    assert set(quarantine.get_column("reason")) == {"RetrieveAuditDetails: the answer has no AuditDetail object"}
    # Needed minus landed: the next run asks for those two again, and only those.
    audit_rows = pl.DataFrame({"auditid": DETAIL_IDS, "operation": [2] * 8, "objecttypecode": ["account"] * 8,
                               "_objectid_value": [ACCOUNT_ID] * 8, "attributemask": ["42,7"] * 8},
                              schema_overrides={"operation": pl.Int32})
    lake.write_page(AUDIT, "audit-run1", 1, audit_rows, run_id="run1")
    tables = TablesConfig(table=[TableConfig(name="account", columns=["accountid", "description"], audit=True,
                                             audit_columns=["description"])])
    account = TableMeta("account", "accounts", "accountid", True, True, [
        {**_slim({"LogicalName": "description", "AttributeType": "Memo"}), "ColumnNumber": 7}])
    needed = needed_details(lake, tables, {"account": account, "audit": AUDIT_META})
    assert needed.get_column("auditid").to_list() == DETAIL_IDS[6:]


def test_detail_pages_landed_before_detail_type_and_detail_existed_still_read(landed: tuple[Lake, Any]) -> None:
    lake, _ = landed
    older = pl.DataFrame({"auditid": ["00000000-0000-4000-8000-000000000009"], "objecttypecode": ["account"],
                          "objectid": [ACCOUNT_ID], "old_values": ['{"name": "A"}'], "new_values": ['{"name": "B"}']})
    lake.write_page(DETAILS, "details-run0", 1, older, run_id="run0")
    rows = details_by_id(lake)
    assert len(rows) == 7
    old = rows["00000000-0000-4000-8000-000000000009"]
    assert (old["old_values"], old["new_values"], old["detail_type"], old["detail"]) == (
        '{"name": "A"}', '{"name": "B"}', None, None)
    # What the transforms read (transforms/build.py read_lake selects DETAILS_SCHEMA before anything else).
    selected = lake.scan(DETAILS).select(list(DETAILS_SCHEMA)).collect()
    assert selected.schema == pl.Schema(DETAILS_SCHEMA) and selected.height == 7
