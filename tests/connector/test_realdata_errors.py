"""Dataverse's error answers (payloads 12, 16 to 20, 27, 28) read by connector/http.py's one status policy, and
the 403s no security role fixes (18's 0x80095ffc, and 0x80072560) through the real client over HTTPS and in
`l2c doctor`. Where a payload's HTTP status is not public (16, 27, 28) it is assumed 400, as the README says.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from connector.doctor import Check, doctor
from connector.http import DataverseClient, _Retry, error_of, one_line, validate_response
from ground.errors import L2CError, PermissionDenied, RequestRejected
from sandbox.wire import JSON_TYPE, Response
from tests.realdata import load
from tests.realdata.org import ScriptedOrg

URL = "https://contoso.crm.dynamics.com/api/data/v9.2/accounts"
P17 = "17_notes_429_0x80072322.json"
P18 = "18_issue528_403_app_restricted_0x80095ffc.json"
P19 = "19_maester_403_missing_privilege_0x80040220.json"
# 0x80072560 has no payload: its message as Dataverse words it (MicrosoftDocs/power-platform#2124 reports the code
# for a service principal that is no application user of the environment).
NOT_A_MEMBER = b'{"error":{"code":"0x80072560","message":"The user is not a member of the organization."}}'

# (payload, its HTTP status: the .http file's own, else the status the README gives or assumes)
ERRORS = [("12_docs_error_400_plugin_annotations.http", 400), ("16_notes_ct_disabled_0x80072491.json", 400),
          (P17, 429), (P18, 403), (P19, 403), ("20_docs_404_resource_not_found_0x8006088a.json", 404),
          ("27_ASSEMBLED_expired_token_0x80044352.json", 400),
          ("28_ASSEMBLED_select_derived_property_0x80060888.json", 400)]


@pytest.fixture
def client(scripted_org: ScriptedOrg, tmp_path: Path) -> Iterator[DataverseClient]:
    with DataverseClient(scripted_org.settings(tmp_path / "data"), backoff_base_s=0.01, backoff_max_s=0.1,
                         budget_s=30.0, read_timeout=10.0) as made:
        yield made


@pytest.mark.parametrize(("name", "status"), ERRORS, ids=[name[:2] for name, _ in ERRORS])
def test_error_of_reads_code_and_message_past_the_annotations(name: str, status: int) -> None:
    payload = load(name)
    assert payload.status in (None, status)
    error = payload.json["error"]
    assert error_of(payload.body) == (error["code"], one_line(error["message"]))


def test_12_plugin_annotations_are_not_taken_for_the_message() -> None:
    payload = load("12_docs_error_400_plugin_annotations.http")
    assert "@Microsoft.PowerApps.CDS.TraceText" in payload.json["error"]
    assert error_of(payload.body) == ("0x80040265", "Example Error Message.")
    with pytest.raises(RequestRejected) as rejected:
        validate_response(400, payload.headers, payload.body, URL)
    assert (rejected.value.status, rejected.value.code, rejected.value.exit_code) == (400, "0x80040265", 1)
    assert rejected.value.message == "Dataverse rejected the request: Example Error Message."


@pytest.mark.parametrize(("name", "code", "status", "words"), [
    ("16_notes_ct_disabled_0x80072491.json", "0x80072491", 400, "isn't enabled for change tracking"),
    ("20_docs_404_resource_not_found_0x8006088a.json", "0x8006088a", 404, "Resource not found for the segment"),
    ("27_ASSEMBLED_expired_token_0x80044352.json", "0x80044352", 400, "Please perform a full sync."),
    ("28_ASSEMBLED_select_derived_property_0x80060888.json", "0x80060888", 400,
     "Could not find a property named 'Format' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'"),
], ids=["16", "20", "27", "28"])
def test_a_refused_request_keeps_dataverses_code_for_the_caller(name: str, code: str, status: int,
                                                                  words: str) -> None:
    payload = load(name)
    with pytest.raises(RequestRejected) as rejected:
        validate_response(status, payload.headers, payload.body, URL)
    assert (rejected.value.status, rejected.value.code) == (status, code)  # what connector/sync.py keys on
    assert words in rejected.value.message and str(rejected.value).count(code) == 1


def test_17_a_429_is_retried_with_its_code_and_the_read_then_succeeds(scripted_org: ScriptedOrg,
                                                                       client: DataverseClient) -> None:
    payload = load(P17)
    with pytest.raises(_Retry) as retry:
        validate_response(429, payload.headers, payload.body, URL)
    assert (retry.value.status, retry.value.code, retry.value.retry_after) == (429, "0x80072322", None)
    scripted_org.answer(P17, status=429)  # no Retry-After in the note: l2c backs off on its own
    scripted_org.answer("09_docs_select_name_revenue.http")
    reply = client.get("accounts?$select=name,revenue", kind="page")
    assert reply.json["value"][0]["revenue"] == Decimal("20000.0000")
    assert len(scripted_org.sent) == 2 and len(set(scripted_org.targets())) == 1
    stats = client.stats()["page"]
    assert (stats["429s"], stats["retries"], stats["requests"]) == (1, 1, 2)


# --- 403s: what fixes them ---------------------------------------------------------------------------------------

FORBIDDEN = [
    pytest.param(load(P18).body, "ask a Power Platform admin to lift the restriction for this application id "
                 "(<guid>); a security role will not help", id="18-app-restricted"),
    pytest.param(NOT_A_MEMBER, "add the app registration as an application user in the environment (Power Platform "
                 "admin center > environment > Settings > Users + permissions > Application users) and give it a "
                 "security role", id="not-a-member"),
    pytest.param(load(P19).body, "give the application user a security role with prvReadbot", id="19-privilege"),
]


def forbidden(body: bytes) -> Response:
    return Response(403, [("Content-Type", JSON_TYPE), ("REQ_ID", "5b1b0c2e-0000-4000-8000-000000000403")], body)


@pytest.mark.parametrize(("body", "fix"), FORBIDDEN)
def test_a_403_says_what_fixes_it(scripted_org: ScriptedOrg, client: DataverseClient, body: bytes, fix: str) -> None:
    scripted_org.answer(forbidden(body))
    with pytest.raises(PermissionDenied) as denied:
        client.get("WhoAmI", kind="metadata")
    assert denied.value.hint == fix and denied.value.exit_code == 3
    assert denied.value.context["request_id"] == "5b1b0c2e-0000-4000-8000-000000000403"
    assert str(denied.value).endswith(f". {fix}")
    assert len(scripted_org.sent) == 1  # refused for good: not retried


@pytest.mark.parametrize(("body", "fix"), FORBIDDEN[:2])
def test_doctor_shows_the_fix_when_sign_in_works_but_whoami_is_refused(scripted_org: ScriptedOrg,
                                                                       tmp_path: Path, body: bytes,
                                                                       fix: str) -> None:
    scripted_org.answer(forbidden(body))
    checks: list[Check] = []
    assert doctor(scripted_org.settings(tmp_path / "data"), emit=checks.append) == 3
    assert [c.status for c in checks] == ["ok", "ok", "FAIL"]
    assert checks[1].what.startswith("sign-in: token for")
    assert checks[2].line().endswith(fix) and "security role with this privilege" not in checks[2].line()
    assert scripted_org.targets() == ["/api/data/v9.2/WhoAmI"]


def test_doctor_shows_the_fix_when_whoami_works_but_the_first_read_is_refused(scripted_org: ScriptedOrg,
                                                                             tmp_path: Path) -> None:
    # The test's own WhoAmI answer (the WhoAmIResponse properties); then the metadata request is refused like 18.
    scripted_org.answer_json(200, {"BusinessUnitId": "6a2f1c3d-0000-4000-8000-000000000001",
                                   "UserId": "31d2e3f4-a5b6-4c7d-8e9f-a0b1c2d3e4f5",
                                   "OrganizationId": "8e7d6c5b-0000-4000-8000-000000000002"})
    scripted_org.answer(forbidden(load(P18).body))
    checks: list[Check] = []
    assert doctor(scripted_org.settings(tmp_path / "data"), emit=checks.append) == 3
    assert [c.status for c in checks] == ["ok", "ok", "ok", "FAIL"]
    assert "lift the restriction for this application id (<guid>)" in checks[3].line()
    assert scripted_org.targets()[1].startswith("/api/data/v9.2/EntityDefinitions?")


def test_every_l2c_error_from_a_payload_has_the_exit_code_of_what_to_do() -> None:
    exits: dict[str, int | str] = {}
    for name, status in ERRORS:
        payload = load(name)
        try:
            validate_response(status, payload.headers, payload.body, URL)
        except _Retry:
            exits[name[:2]] = "retry"
        except L2CError as exc:
            exits[name[:2]] = exc.exit_code
    assert exits == {"12": 1, "16": 1, "17": "retry", "18": 3, "19": 3, "20": 1, "27": 1, "28": 1}
