"""The audit table and its functions over real HTTPS, and `$batch` ([PD] auditing/retrieve-audit-data.md,
webapi/execute-batch-operations-using-web-api.md).

The old and new values a function returns must be the simulator's hidden `_old`/`_new` of the audit row;
the `audits` entity set must never show them (nor `_version`): the Web API has no `changedata`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import polars as pl
import pytest

from sandbox.runtime import Sandbox, SandboxOptions
from tests.sandbox.conftest import ApiClient, StartSandbox, batch_parts, error_of, page_values

# The audit EntityType's properties (DATAVERSE.md "Audit"; [PD] auditing/retrieve-audit-data.md).
AUDIT_COLUMNS = {"auditid", "createdon", "operation", "action", "objecttypecode", "_objectid_value",
                 "_userid_value", "_callinguserid_value", "_regardingobjectid_value", "attributemask",
                 "transactionid", "useradditionalinfo"}
# Table display names: objecttypecode's FormattedValue ("Contact" for contact in the doc's example).
DISPLAY = {"lead": "Lead", "opportunity": "Opportunity", "quote": "Quote", "salesorder": "Order",
           "invoice": "Invoice", "account": "Account", "new_contract": "Contract"}  # Contract: the maker's name
ACTIONS = {1: "Create", 2: "Update", 3: "Delete", 4: "Activate", 5: "Deactivate", 13: "Assign", 16: "Close",
           17: "Cancel", 18: "Complete", 21: "Reopen", 22: "Fulfill", 23: "Paid", 24: "Qualify",
           25: "Disqualify", 26: "Submit", 29: "Invoice", 41: "Set State", 43: "Revise", 44: "Win",
           45: "Lose", 51: "Generate Quote From Opportunity"}
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
DETAILS = "audits({})/Microsoft.Dynamics.CRM.RetrieveAuditDetails"
HISTORY = "RetrieveRecordChangeHistory(Target=@target,PagingInfo=@paginginfo)?@target={}&@paginginfo={}"
PRIVILEGE_CODE = "0x80040220"


def as_json(value: Any) -> Any:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else value


def values_of(entity: dict[str, Any], table: str) -> dict[str, Any]:
    assert entity["@odata.type"] == f"#Microsoft.Dynamics.CRM.{table}"
    return {k: v for k, v in entity.items() if "@" not in k}


def sample(audits: pl.DataFrame, per_column: int = 4) -> pl.DataFrame:
    """Updates of a state, a sales stage, a discount or an owner, from every table that has them; creates."""
    picked = [audits.filter(pl.col("operation") == 1).head(per_column)]
    for column in ("statecode", "salesstage", "discountpercentage", "_ownerid_value"):
        changed = audits.filter((pl.col("operation") == 2) & pl.col("_new").str.contains(f'"{column}":'))
        picked.append(changed.filter(pl.int_range(pl.len()).over("objecttypecode") < per_column))
    return pl.concat(picked).unique("auditid", maintain_order=True)


def test_audit_rows_have_exactly_the_web_api_columns(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    source = {row["auditid"]: row for row in api_sandbox.org.audits.iter_rows(named=True)}
    rows = page_values(api_client.pages("audits", prefer="odata.maxpagesize=1000"))
    assert len(rows) == len(source)
    for row in rows:
        assert set(row) == AUDIT_COLUMNS, row  # no changedata, no _old/_new/_version, no etag
        assert row == {k: as_json(v) for k, v in source[row["auditid"]].items() if k in AUDIT_COLUMNS}


def test_audit_annotations(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    rows = page_values(api_client.pages("audits?$filter=operation eq 2",
                                        prefer='odata.include-annotations="*",odata.maxpagesize=1000'))
    assert len(rows) == api_sandbox.org.audits.filter(pl.col("operation") == 2).height
    for row in rows:
        assert row["objecttypecode" + FORMATTED] == DISPLAY[row["objecttypecode"]]
        assert row["action" + FORMATTED] == ACTIONS[row["action"]]
        assert row["operation" + FORMATTED] == "Update"
        assert row["_objectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == row["objecttypecode"]
        # the audit EntityType's lookups have no associatednavigationproperty ([PD] retrieve-audit-data.md)
        assert not any(key.endswith("associatednavigationproperty") for key in row)


def test_retrieve_audit_details_returns_the_old_and_new_values(api_client: ApiClient,
                                                               api_sandbox: Sandbox) -> None:
    picked = sample(api_sandbox.org.audits)
    tables = set(picked.get_column("objecttypecode"))
    assert tables >= {"lead", "opportunity", "quote", "salesorder", "invoice"}
    assert picked.height > 30
    for audit in picked.iter_rows(named=True):
        body = api_client.ok(DETAILS.format(audit["auditid"]))
        assert body["@odata.context"] == (f"{api_client.api}/$metadata"
                                          "#Microsoft.Dynamics.CRM.RetrieveAuditDetailsResponse")
        detail = body["AuditDetail"]
        assert detail["@odata.type"] == "#Microsoft.Dynamics.CRM.AttributeAuditDetail"
        assert "AuditRecord" not in detail
        assert values_of(detail["OldValue"], audit["objecttypecode"]) == json.loads(audit["_old"])
        assert values_of(detail["NewValue"], audit["objecttypecode"]) == json.loads(audit["_new"])


def test_audit_detail_values_carry_formatted_values_when_asked(api_client: ApiClient,
                                                               api_sandbox: Sandbox) -> None:
    audits = api_sandbox.org.audits
    won = audits.filter((pl.col("objecttypecode") == "opportunity") & (pl.col("action") == 44))
    assert won.height > 0
    audit = won.row(0, named=True)
    body = api_client.ok(DETAILS.format(audit["auditid"]), prefer='odata.include-annotations="*"')
    old, new = body["AuditDetail"]["OldValue"], body["AuditDetail"]["NewValue"]
    assert new["statecode"] == 1 and new["statecode" + FORMATTED] == "Won"
    assert old["statecode" + FORMATTED] == {0: "Open", 2: "Lost"}[old["statecode"]]


def test_record_change_history_pages_through_one_record(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    audits = api_sandbox.org.audits.filter(pl.col("objecttypecode") == "opportunity")
    counts = audits.group_by("_objectid_value").len()
    record = counts.sort("len", "_objectid_value", descending=True).row(0)[0]
    expected = audits.filter(pl.col("_objectid_value") == record).sort("_version")
    assert expected.height >= 5
    target = quote(f"{{'@odata.id':'opportunities({record})'}}")  # as the docs write it, single quotes
    info: dict[str, Any] = {"PageNumber": 1, "Count": 2, "ReturnTotalRecordCount": True}
    details, pages = [], 0
    while True:
        body = api_client.ok(HISTORY.format(target, quote(json.dumps(info))))
        collection = body["AuditDetailCollection"]
        pages += 1
        if pages == 1:
            assert collection["TotalRecordCount"] == expected.height
        details += collection["AuditDetails"]
        if not collection["MoreRecords"]:
            break
        info = {"PageNumber": info["PageNumber"] + 1, "Count": 2, "PagingCookie": collection["PagingCookie"]}
    assert pages == math.ceil(expected.height / 2)
    assert len(details) == expected.height
    for detail, audit in zip(details, expected.iter_rows(named=True), strict=True):
        assert detail["@odata.type"] == "#Microsoft.Dynamics.CRM.AttributeAuditDetail"
        assert "AuditRecord" not in detail  # the Web API's details carry no audit record
        assert values_of(detail["OldValue"], "opportunity") == json.loads(audit["_old"])
        assert values_of(detail["NewValue"], "opportunity") == json.loads(audit["_new"])


@pytest.mark.parametrize(("withdrawn", "refused", "allowed"), [
    ("prvReadAuditSummary", ("audits?$select=auditid", "audits/$count"), ("details", "history")),
    ("prvReadRecordAuditHistory", ("details", "history"), ("audits?$select=auditid",)),
])
def test_withdrawn_privileges_are_403(api_start: StartSandbox, withdrawn: str, refused: tuple[str, ...],
                                      allowed: tuple[str, ...]) -> None:
    sandbox = api_start(options=SandboxOptions(withdrawn_privileges={withdrawn}))
    client = ApiClient.connect(sandbox)
    audit = sandbox.org.audits.row(0, named=True)
    info = quote(json.dumps({"PageNumber": 1, "Count": 5}))
    targets = {"details": DETAILS.format(audit["auditid"]),
               "history": HISTORY.format(quote(f"{{'@odata.id':'leads({audit['_objectid_value']})'}}"), info)}
    for name in refused:
        status, code, message = error_of(client.get(targets.get(name, name)))
        assert (status, code) == (403, PRIVILEGE_CODE) and withdrawn in message, name
    for name in (*allowed, "leads?$select=leadid"):
        assert client.get(targets.get(name, name)).status_code == 200, name


# --- $batch ------------------------------------------------------------------------------------------------

def test_a_batch_of_audit_details_answers_like_the_single_calls(api_client: ApiClient,
                                                                 api_sandbox: Sandbox) -> None:
    ids = api_sandbox.org.audits.filter(pl.col("operation") == 2).get_column("auditid").head(50).to_list()
    # absolute and relative request URLs are both allowed in a part
    urls = [f"{api_client.api}/{DETAILS.format(audit_id)}" if i % 2 else DETAILS.format(audit_id)
            for i, audit_id in enumerate(ids)]
    response = api_client.batch(urls)
    assert response.status_code == 200
    parts = batch_parts(response)
    assert len(parts) == 50
    for audit_id, (status, body) in zip(ids, parts, strict=True):
        assert status == 200
        assert body == api_client.ok(DETAILS.format(audit_id))


def test_a_batch_part_fails_alone_with_continue_on_error(api_client: ApiClient, api_sandbox: Sandbox) -> None:
    audit_id = api_sandbox.org.audits.get_column("auditid")[0]
    urls = ["leads?$skip=1", DETAILS.format(audit_id)]
    skip = {"error": {"code": "0x80060888", "message": "Skip Clause is not supported in CRM"}}
    response = api_client.batch(urls, prefer="odata.continue-on-error")
    assert response.status_code == 200  # "The batch request will return `200 OK`"
    parts = batch_parts(response)
    assert parts[0] == (400, skip)
    assert parts[1][0] == 200
    # Without the preference Dataverse stops at the first failing part, and "The batch error represents the
    # error of the first failing request": the doc's answer is `HTTP/1.1 400 BadRequest` around that part alone
    # ([PD] webapi/execute-batch-operations-using-web-api.md, "Handling errors").
    stopped = api_client.batch(urls)
    assert stopped.status_code == 400
    assert stopped.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert batch_parts(stopped) == [(400, skip)]


def test_a_batch_without_continue_on_error_answers_the_first_failures_status(api_client: ApiClient,
                                                                             api_sandbox: Sandbox) -> None:
    ids = api_sandbox.org.audits.get_column("auditid").head(3).to_list()
    missing = "00000000-0000-0000-0000-000000000001"
    urls = [DETAILS.format(ids[0]), DETAILS.format(ids[1]), DETAILS.format(missing), "leads?$skip=1",
            DETAILS.format(ids[2])]
    stopped = api_client.batch(urls)
    assert stopped.status_code == 404  # the first failing part's status, not the later 400
    parts = batch_parts(stopped)
    assert [status for status, _ in parts] == [200, 200, 404]  # nothing after it ran
    assert parts[0][1] == api_client.ok(DETAILS.format(ids[0]))
    assert parts[2][1]["error"]["code"] == "0x80040217"
    whole = api_client.batch(urls, prefer="odata.continue-on-error")
    assert whole.status_code == 200
    assert [status for status, _ in batch_parts(whole)] == [200, 200, 404, 400, 200]
    assert batch_parts(whole)[:3] == parts


def test_a_batch_over_1000_requests_is_refused(api_client: ApiClient) -> None:
    response = api_client.batch(["WhoAmI"] * 1001)
    assert response.status_code == 400
    assert "1000" in response.json()["error"]["message"]
    assert len(batch_parts(api_client.batch(["WhoAmI"] * 1000))) == 1000
