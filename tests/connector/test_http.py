"""connector/http.py against a real sandbox over HTTPS: the status policy, retries under injected faults and
throttling, the shared Retry-After gate, $batch, re-authentication, and secrets kept out of errors and logs.

Faults are switched on the running sandbox (`sandbox.server.faults`, `sandbox.protection`, the Entra clock);
where a test needs a fault the transport cannot inject (one malformed body, a throttled batch part) it wraps
the sandbox's app, so the client still talks HTTPS to the real server. Pure pieces (status table, multipart
parser, limiter, gate) are tested without a network. Backoff is millisecond-sized (conftest); the only real
waits are 1-second Retry-After windows.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from requests.structures import CaseInsensitiveDict

from connector.http import (
    AdaptiveLimiter,
    DataverseClient,
    RetryAfterGate,
    _Retry,
    parse_batch,
    validate_response,
)
from connector.tls import trusting_session
from ground import stop
from ground.errors import AuthError, ConfigError, L2CError, PermissionDenied, RequestRejected, SourceUnavailable
from sandbox.runtime import Sandbox
from sandbox.schema import TABLES
from sandbox.wire import Headers, Request, Response

ENTITY_SETS = sorted(t.entity_set for t in TABLES.values())
PAGE_SIZE = 250  # audits (~1150 rows) take five pages; every other set one
API = "/api/data/v9.2/"
DETAILS = "audits({})/Microsoft.Dynamics.CRM.RetrieveAuditDetails"
# A request another thread had already sent when a 429 was issued reaches the server's admission up to ~0.2 s
# later on a loaded 2-core machine (measured); the strict cross-thread proof is the grace-free test below.
GRACE_S = 0.5


# --- helpers ---------------------------------------------------------------------------------------------

def read_set(client: DataverseClient, entity_set: str, kind: str = "page") -> list[dict[str, Any]]:
    prefer = [f"odata.maxpagesize={PAGE_SIZE}"]
    rows: list[dict[str, Any]] = []
    url: str | None = entity_set
    while url:
        body = client.get(url, prefer=prefer, kind=kind).json
        rows += body["value"]
        url = body.get("@odata.nextLink")
    return rows


def read_all(client: DataverseClient, threads: int = 4) -> dict[str, list[dict[str, Any]]]:
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(ENTITY_SETS, pool.map(lambda s: read_set(client, s), ENTITY_SETS), strict=True))


def audit_ids(client: DataverseClient, n: int) -> list[str]:
    return [row["auditid"] for row in client.get(f"audits?$select=auditid&$top={n}").json["value"]]


@contextmanager
def wrapped_app(sandbox: Sandbox, wrapper: Callable[[Callable[[Request], Response], Request], Response]
                ) -> Iterator[None]:
    """Route every request through `wrapper(real_app, request)` on the running server."""
    assert sandbox.server is not None
    real = sandbox.server.app
    sandbox.server.app = lambda request: wrapper(real, request)
    try:
        yield
    finally:
        sandbox.server.app = real


# --- replies -----------------------------------------------------------------------------------------------

def test_reply_carries_status_server_date_and_exact_money(http_sandbox: Sandbox, http_client: Callable[..., Any]
                                                          ) -> None:
    client = http_client()
    reply = client.get("opportunities?$select=estimatedvalue,name", kind="page")
    assert reply.status == 200
    assert reply.date == http_sandbox.state.clock  # the org's clock, an aware UTC datetime
    assert reply.date.utcoffset().total_seconds() == 0
    assert reply.elapsed > 0 and reply.headers["OData-Version"] == "4.0"
    values = [row["estimatedvalue"] for row in reply.json["value"] if row["estimatedvalue"] is not None]
    assert values and all(isinstance(v, Decimal) for v in values)
    assert client.stats()["page"]["requests"] == 1
    assert client.get("leads/$count").json == len(read_set(client, "leads"))  # text/plain number


def test_links_are_followed_verbatim_and_only_to_the_org(http_sandbox: Sandbox,
                                                         http_client: Callable[..., Any]) -> None:
    client = http_client()
    link = client.get("leads", prefer=["odata.maxpagesize=50"]).json["@odata.nextLink"]
    seen: list[str] = []

    def record(app: Callable[[Request], Response], request: Request) -> Response:
        seen.append(f"{request.path}?{request.query}")
        return app(request)

    # requests' own preparation would decode this unreserved escape to "n", and urllib3 would upper-case its hex
    # (RFC 3986 6.2.2.1 case normalization); followed verbatim it stays the escape it was, in its own case.
    escaped = client.base + "leads?$select=full%6eame&$top=1"
    with wrapped_app(http_sandbox, record):
        assert len(client.get(link, prefer=["odata.maxpagesize=50"]).json["value"]) == 50
        assert list(client.get(escaped).json["value"][0]) == ["@odata.etag", "fullname", "leadid"]
    parts = urlsplit(link)
    assert seen == [f"{parts.path}?{parts.query}", "/api/data/v9.2/leads?$select=full%6eame&$top=1"]

    with pytest.raises(L2CError, match="refusing to send the access token") as info:
        client.get("https://elsewhere.example" + parts.path)
    assert type(info.value) is L2CError and len(seen) == 2  # nothing was sent


# --- throttling --------------------------------------------------------------------------------------------

def test_a_429_in_one_thread_holds_back_every_thread(http_sandbox: Sandbox, http_client: Callable[..., Any]
                                                     ) -> None:
    client = http_client()
    client.get("WhoAmI")  # signed in: no token request in the way
    protection = http_sandbox.protection
    protection.throttle(1.0, retry_after=1)

    def once_then_open(app: Callable[[Request], Response], request: Request) -> Response:
        response = app(request)
        if response.status == 429:
            protection.throttle(0.0)  # one 429 opens one Retry-After window, then the org is healthy
        return response

    blocked = threading.Event()
    block = client.gate.block

    def block_and_tell(seconds: float) -> None:
        block(seconds)
        blocked.set()

    client.gate.block = block_and_tell  # type: ignore[method-assign]
    with wrapped_app(http_sandbox, once_then_open), ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.get, "WhoAmI", kind="first")
        assert blocked.wait(10)
        others = [pool.submit(client.get, "WhoAmI", kind="other") for _ in range(3)]
        replies = [first.result(), *(f.result() for f in others)]
    assert [r.status for r in replies] == [200] * 4
    assert len(protection.throttle_events()) == 1
    assert protection.violations() == []  # no grace needed: nobody was in flight, nobody sent in the window
    assert client.stats()["first"]["429s"] == 1 and client.stats()["first"]["retries"] == 1


def test_throttled_paged_read_equals_unthrottled_and_honours_retry_after(
        http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    baseline = read_all(http_client())
    http_sandbox.protection.throttle(0.3, retry_after=1, seed=5)
    client = http_client()
    throttled = read_all(client, threads=4)
    http_sandbox.protection.throttle(0.0)
    assert throttled == baseline
    events = http_sandbox.protection.throttle_events()
    assert any(e.injected for e in events)
    assert http_sandbox.protection.violations(grace_s=GRACE_S) == []
    stats = client.stats()["page"]
    assert stats["429s"] == len(events) and stats["retries"] >= len(events)


# --- transport faults and 5xx ------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "counter"), [("p_503", "5xx"), ("p_drop", "resets"), ("p_truncate", "resets")])
def test_faulty_transport_gives_identical_rows(http_sandbox: Sandbox, http_client: Callable[..., Any],
                                               caplog: pytest.LogCaptureFixture, fault: str, counter: str) -> None:
    baseline = read_all(http_client())
    faults = http_sandbox.server.faults  # type: ignore[union-attr]
    faults.only_paths, faults.seed = API, 11  # the token endpoint is auth.py's business
    setattr(faults, fault, 0.3 if fault == "p_503" else 0.2)
    client = http_client()
    with caplog.at_level(logging.DEBUG, logger="l2c.http"):
        assert read_all(client) == baseline
    setattr(faults, fault, 0.0)
    stats = client.stats()["page"]
    assert stats[counter] > 0 and stats["retries"] == stats[counter]
    warnings = [r for r in caplog.records if r.name == "l2c.http" and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one storm, one warning; every retry at debug
    assert len([r for r in caplog.records if r.name == "l2c.http" and r.levelno == logging.DEBUG]) >= stats["retries"]


def test_a_body_that_is_not_json_is_read_again(http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    client = http_client()
    expected = read_set(client, "accounts")
    served = itertools.count()

    def cut_once(app: Callable[[Request], Response], request: Request) -> Response:
        response = app(request)
        if request.path.endswith("/accounts") and next(served) == 0:
            # A complete HTTP message (Content-Length matches) whose JSON stops halfway.
            return Response(response.status, response.headers, response.body[: len(response.body) // 2])
        return response

    with wrapped_app(http_sandbox, cut_once):
        assert read_set(client, "accounts", kind="cut") == expected
    assert client.stats()["cut"]["retries"] == 1


def test_read_timeout_is_retried(http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    client = http_client(read_timeout=0.2)
    client.get("WhoAmI")
    faults = http_sandbox.server.faults  # type: ignore[union-attr]
    faults.only_paths, faults.timeout_ms = "/WhoAmI", 600

    def heal(app: Callable[[Request], Response], request: Request) -> Response:
        faults.timeout_ms = 0  # the first stalled request reaching the app ends the stall for later ones
        return app(request)

    with wrapped_app(http_sandbox, heal):
        assert client.get("WhoAmI", kind="slow").status == 200
    stats = client.stats()["slow"]
    assert stats["timeouts"] >= 1 and stats["retries"] == stats["timeouts"]


def test_permanent_503_ends_in_source_unavailable_within_budget(http_sandbox: Sandbox,
                                                               http_client: Callable[..., Any]) -> None:
    client = http_client(budget_s=0.5)
    client.get("WhoAmI")
    faults = http_sandbox.server.faults  # type: ignore[union-attr]
    faults.only_paths, faults.p_503 = API, 1.0
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        client.get("leads?$filter=fullname eq 'Secret Name'&$select=fullname", kind="page")
    assert time.monotonic() - started < 2
    text = str(info.value)
    assert info.value.exit_code == 4 and "\n" not in text
    assert re.search(r"503 0x80040216 after \d+ attempts", text), text
    assert "/api/data/v9.2/leads?$filter&$select" in text and "Secret" not in text  # query values dropped


# --- the status policy against the sandbox ------------------------------------------------------------------

def test_withdrawn_privilege_is_permission_denied(http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    http_sandbox.options.withdrawn_privileges.add("prvReadAuditSummary")
    with pytest.raises(PermissionDenied) as info:
        http_client().get("audits", kind="audit")
    assert info.value.exit_code == 3
    assert "prvReadAuditSummary" in info.value.message and info.value.context["status"] == 403


@pytest.mark.parametrize(("refusal", "code"), [("not_member", "0x80072560"), ("api_restricted", "0x80095ffc")])
def test_an_app_the_org_refuses_is_permission_denied(http_sandbox: Sandbox, http_client: Callable[..., Any],
                                                     refusal: str, code: str) -> None:
    """A signed-in app with no application user in the org, or whose Dataverse API access the admin restricted,
    gets 403 on every request (sandbox/runtime.py cites the real bodies): exit class 3, no retry."""
    client = http_client()
    client.sign_in()
    setattr(http_sandbox.options, refusal, True)
    for call in (lambda: client.get("WhoAmI"), lambda: client.batch_get(["WhoAmI"])):
        with pytest.raises(PermissionDenied) as info:
            call()
        assert info.value.exit_code == 3
        assert (info.value.context["status"], info.value.context["code"]) == (403, code)
    assert client.stats()["other"]["retries"] == 0 and client.stats()["batch"]["retries"] == 0


@pytest.mark.parametrize(("path", "status", "code"), [
    ("leads?$skip=10", 400, "0x80060888"),
    ("leads?$select=nosuchcolumn", 400, "0x0"),
    ("nosuchentities", 404, "0x80060888"),
])
def test_other_4xx_is_request_rejected_with_status_and_code(http_client: Callable[..., Any], path: str,
                                                            status: int, code: str) -> None:
    client = http_client()
    with pytest.raises(RequestRejected) as info:
        client.get(path)
    assert (info.value.status, info.value.code) == (status, code)
    assert client.stats()["other"]["retries"] == 0



ALL_ANNOTATIONS = ['odata.include-annotations="*"']
HELP_LINK = "@Microsoft.PowerApps.CDS.HelpLink"


def test_error_annotations_do_not_change_what_the_status_policy_reads(http_sandbox: Sandbox,
                                                                      http_client: Callable[..., Any]) -> None:
    """With `Prefer: odata.include-annotations="*"` Dataverse's error bodies carry ErrorDetails.*, HelpLink,
    TraceText and InnerError.Message inside `error` ([PD] webapi/compose-http-requests-handle-errors.md): the
    code, the message and the exit class stay those of the plain body, and no annotation leaks into the text."""
    client = http_client()
    bodies: list[dict[str, Any]] = []

    def record(app: Callable[[Request], Response], request: Request) -> Response:
        response = app(request)
        if response.status >= 400:
            bodies.append(json.loads(response.body)["error"])
        return response

    with wrapped_app(http_sandbox, record):
        with pytest.raises(RequestRejected) as rejected:
            client.get("leads?$skip=1", prefer=ALL_ANNOTATIONS)
        http_sandbox.options.withdrawn_privileges.add("prvReadAuditSummary")
        with pytest.raises(PermissionDenied) as denied:
            client.get("audits", prefer=ALL_ANNOTATIONS, kind="audit")
    assert all(HELP_LINK in body for body in bodies) and len(bodies) == 2  # the sandbox did annotate them
    assert (rejected.value.status, rejected.value.code, rejected.value.exit_code) == (400, "0x80060888", 1)
    assert "Skip Clause is not supported in CRM" in str(rejected.value)
    assert denied.value.exit_code == 3 and denied.value.context["code"] == "0x80040220"
    assert "prvReadAuditSummary" in denied.value.message
    for error in (rejected.value, denied.value):
        assert "go.microsoft.com" not in str(error) and "CrmException" not in str(error)


def test_an_expired_token_is_replaced_once_transparently(http_sandbox: Sandbox,
                                                         http_client: Callable[..., Any]) -> None:
    client = http_client()
    client.get("WhoAmI")
    entra = http_sandbox.entra
    assert entra is not None
    entra.clock = lambda: time.time() + 2 * 3600  # MSAL's cached token is now expired for the org
    assert client.get("WhoAmI", kind="who").status == 200
    assert client.stats()["who"]["reauths"] == 1 and client.stats()["who"]["retries"] == 0


def test_a_token_rejected_twice_is_an_auth_error_with_the_challenge(
        http_sandbox: Sandbox, http_client: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    client = http_client()
    issued = spy_tokens(client)
    entra = http_sandbox.entra
    assert entra is not None
    ticks = itertools.count(time.time() + 2 * 3600, 2 * 3600)  # every token is two hours old when it is checked
    entra.clock = lambda: next(ticks)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as info:
        client.get("WhoAmI")
    assert type(info.value) is AuthError and info.value.exit_code == 3
    assert "authorization_uri=" in str(info.value) and "401" in str(info.value)
    assert len(issued) == 2 and client.stats()["other"]["reauths"] == 1
    assert leaks([info.value], caplog, {*issued, http_sandbox.client_secret}) == []


# --- $batch ------------------------------------------------------------------------------------------------

PREFER_LOOKUPS = ['odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"']


def test_batch_equals_single_gets_in_order_and_splits(http_client: Callable[..., Any]) -> None:
    client = http_client(max_batch=7)
    urls = [DETAILS.format(a) for a in audit_ids(client, 30)]
    singles = [client.get(u, prefer=PREFER_LOOKUPS, kind="audit_detail") for u in urls]
    batched = client.batch_get(urls, prefer=PREFER_LOOKUPS)
    assert [r.json for r in batched] == [r.json for r in singles]
    assert [r.status for r in batched] == [200] * 30
    assert all(r.date == singles[0].date for r in batched)
    assert client.stats()["batch"]["requests"] == 5 and client.stats()["batch"]["parts"] == 30


def test_failed_parts_come_back_with_their_status(http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    client = http_client()
    ids = audit_ids(client, 3)
    missing = "00000000-0000-0000-0000-000000000001"
    replies = client.batch_get([DETAILS.format(ids[0]), DETAILS.format(missing), DETAILS.format(ids[1])])
    assert [r.status for r in replies] == [200, 404, 200]
    assert replies[1].json["error"]["code"] == "0x80040217"
    http_sandbox.options.withdrawn_privileges.add("prvReadRecordAuditHistory")
    denied = client.batch_get([DETAILS.format(a) for a in ids])
    assert [r.status for r in denied] == [403] * 3 and "prvReadRecordAuditHistory" in denied[0].json["error"]["message"]


def test_throttled_and_failed_parts_alone_are_sent_again_after_retry_after(
        http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    client = http_client()
    urls = [DETAILS.format(a) for a in audit_ids(client, 6)]
    expected = [r.json for r in client.batch_get(urls)]
    posts: list[tuple[float, int]] = []  # (arrival, parts) of every $batch
    throttled_at: list[float] = []

    def mark_parts(app: Callable[[Request], Response], request: Request) -> Response:
        response = app(request)
        if not request.path.endswith("/$batch"):
            return response
        posts.append((time.monotonic(), request.body.count(b"\r\nGET ")))
        if len(posts) > 1:
            return response
        boundary = (response.header("Content-Type") or "").split("boundary=")[1].encode()
        chunks = response.body.split(b"--" + boundary)
        chunks[2] = chunks[2].replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n")
        chunks[5] = chunks[5].replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 503 Service Unavailable\r\n")
        throttled_at.append(time.monotonic())
        return Response(response.status, response.headers, (b"--" + boundary).join(chunks))

    with wrapped_app(http_sandbox, mark_parts):
        replies = client.batch_get(urls, kind="throttled")
    assert [r.json for r in replies] == expected and [r.status for r in replies] == [200] * 6
    assert [n for _, n in posts] == [6, 2]  # parts 2 and 5 only
    assert posts[1][0] - throttled_at[0] >= 1.0  # Retry-After of a part holds back the next request
    assert client.stats()["throttled"]["429s"] == 1 and client.stats()["throttled"]["5xx"] == 1


def test_a_batch_stopped_at_a_failing_part_is_read_part_by_part_and_the_rest_sent_at_once(
        http_sandbox: Sandbox, http_client: Callable[..., Any]) -> None:
    """An org that does not honour `Prefer: odata.continue-on-error` stops at the first failing part and answers
    the batch with that part's status ([PD] webapi/execute-batch-operations-using-web-api.md, "Handling
    errors"): an outer 4xx multipart. Its parts stand; the parts after the failure are sent again at once."""
    client = http_client()
    ids = audit_ids(client, 4)
    missing = ["00000000-0000-0000-0000-00000000000" + n for n in "12"]
    urls = [DETAILS.format(a) for a in (ids[0], missing[0], ids[1], ids[2], missing[1], ids[3])]
    expected = client.batch_get(urls)
    assert [r.status for r in expected] == [200, 404, 200, 200, 404, 200]
    outer: list[tuple[int, int]] = []  # (parts sent, outer status) of every $batch

    def ignore_continue_on_error(app: Callable[[Request], Response], request: Request) -> Response:
        if not request.path.endswith("/$batch"):
            return app(request)
        headers = Headers([(k, v) for k, v in request.headers.items() if k.lower() != "prefer"])
        response = app(Request(request.method, request.path, request.query, headers, request.body, request.client))
        outer.append((request.body.count(b"\r\nGET "), response.status))
        return response

    with wrapped_app(http_sandbox, ignore_continue_on_error):
        replies = client.batch_get(urls, kind="stopping")
    assert outer == [(6, 404), (4, 404), (1, 200)]  # the sandbox stopped twice, as Dataverse would
    assert [(r.status, r.json, r.url) for r in replies] == [(r.status, r.json, r.url) for r in expected]
    stats = client.stats()["stopping"]
    assert stats["retries"] == 0 and stats["requests"] == 3 and stats["parts"] == 6


@pytest.mark.parametrize("fault", ["p_503", "p_truncate", "p_drop"])
def test_batch_survives_transport_faults(http_sandbox: Sandbox, http_client: Callable[..., Any], fault: str) -> None:
    client = http_client(max_batch=5)
    urls = [DETAILS.format(a) for a in audit_ids(client, 40)]
    expected = [r.json for r in client.batch_get(urls)]
    faults = http_sandbox.server.faults  # type: ignore[union-attr]
    faults.only_paths, faults.seed = "$batch", 3
    setattr(faults, fault, 0.5)
    assert [r.json for r in client.batch_get(urls, kind="faulty")] == expected
    assert client.stats()["faulty"]["retries"] > 0


# --- secrets -----------------------------------------------------------------------------------------------

def spy_tokens(client: DataverseClient) -> list[str]:
    """Every access token the client is handed, in order."""
    issued: list[str] = []
    token = client.tokens.token

    def spy() -> str:
        issued.append(token())
        return issued[-1]

    client.tokens.token = spy  # type: ignore[method-assign]
    return issued


def leaks(errors: list[L2CError], caplog: pytest.LogCaptureFixture, secrets: set[str]) -> list[str]:
    texts = [str(e) for e in errors] + [repr(e.context) for e in errors] + [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    return [t for t in texts for secret in secrets if secret in t]


def test_no_token_or_secret_in_errors_or_logs(http_sandbox: Sandbox, http_client: Callable[..., Any],
                                              caplog: pytest.LogCaptureFixture) -> None:
    client = http_client()
    issued = spy_tokens(client)
    faults = http_sandbox.server.faults  # type: ignore[union-attr]
    errors: list[L2CError] = []
    with caplog.at_level(logging.DEBUG):  # every logger: ours, urllib3's, MSAL's, the sandbox's
        faults.only_paths, faults.seed, faults.p_503, faults.p_drop = API, 1, 0.3, 0.2
        read_set(client, "leads")
        client.batch_get([DETAILS.format(a) for a in audit_ids(client, 5)])
        for path in ("leads?$skip=1", "nosuchentities"):
            with pytest.raises(RequestRejected) as rejected:
                client.get(path)
            errors.append(rejected.value)
        faults.p_503, client.budget_s = 1.0, 0.3
        with pytest.raises(SourceUnavailable) as unavailable:
            client.get("leads")
        errors.append(unavailable.value)
        faults.p_503 = faults.p_drop = 0.0
        http_sandbox.options.withdrawn_privileges.add("prvReadAuditSummary")
        with pytest.raises(PermissionDenied) as denied:
            client.get("audits")
        errors.append(denied.value)
    assert issued and any(r.name == "l2c.http" for r in caplog.records)
    assert leaks(errors, caplog, {*issued, http_sandbox.client_secret}) == []
    assert all(e.__cause__ is None for e in errors)


# --- pure pieces: the status table, the multipart parser, the limiter, the gate --------------------------------

def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(("status", "headers", "body", "expected", "text"), [
    (200, {}, b"{}", None, ""),
    (204, {}, b"", None, ""),
    (429, {"Retry-After": "7"}, error_body("0x80072322", "Number of requests exceeded"), _Retry, "429 0x80072322"),
    (500, {}, b"", _Retry, "500"),
    (502, {}, b"<html>", _Retry, "502"),
    (503, {}, error_body("0x80040216", "Service Unavailable."), _Retry, "503 0x80040216"),
    (504, {}, b"", _Retry, "504"),
    (401, {"WWW-Authenticate": "Bearer authorization_uri=https://login/x, resource_id=https://org/"}, b"",
     AuthError, "authorization_uri=https://login/x"),
    (403, {}, error_body("0x80040220", "Principal user (Id=1), is missing prvReadAuditSummary privilege (Id=2)"),
     PermissionDenied, "lacks the prvReadAuditSummary privilege"),
    (400, {"REQ_ID": "r-1"}, error_body("0x80072491", "Entity lead isn't enabled for change tracking."),
     RequestRejected, "request_id=r-1"),
    (404, {}, error_body("0x80060888", "Resource not found for the segment 'x'."), RequestRejected, "segment 'x'"),
    (400, {}, json.dumps({"error": {  # [PD] webapi/compose-http-requests-handle-errors.md (shared payload 12)
        "code": "0x80040265", "message": "Example Error Message.",
        "@Microsoft.PowerApps.CDS.ErrorDetails.OperationStatus": "1",
        "@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode": "12345",
        "@Microsoft.PowerApps.CDS.HelpLink": "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm."
                                             "CrmException%3a80040265&client=platform",
        "@Microsoft.PowerApps.CDS.TraceText": "\r\n[MyNamespace: MyNamespace.MyClass ]\r\n",
        "@Microsoft.PowerApps.CDS.InnerError.Message": "Example Error Message."}}).encode(),
     RequestRejected, "Example Error Message."),
    (409, {}, b"not json", RequestRejected, "status=409"),
    (501, {}, b"", SourceUnavailable, "HTTP 501"),
    (302, {"Location": "https://elsewhere/"}, b"", SourceUnavailable, "HTTP 302"),
])
def test_status_policy(status: int, headers: dict[str, str], body: bytes, expected: type[Exception] | None,
                       text: str) -> None:
    url = "https://org.crm.dynamics.com/api/data/v9.2/leads?$filter=name eq 'x'"
    if expected is None:
        validate_response(status, CaseInsensitiveDict(headers), body, url)
        return
    with pytest.raises(expected) as info:
        validate_response(status, CaseInsensitiveDict(headers), body, url)
    assert type(info.value) is expected and text in str(info.value)
    if isinstance(info.value, _Retry) and status == 429:
        assert info.value.retry_after == 7
    if isinstance(info.value, RequestRejected):
        assert info.value.status == status and "name eq" not in str(info.value)


DOC_RESPONSE = """--batchresponse_f27ef42d
Content-Type: multipart/mixed; boundary=changesetresponse_64cc3fff

--changesetresponse_64cc3fff
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

HTTP/1.1 204 No Content
OData-Version: 4.0


--changesetresponse_64cc3fff--
--batchresponse_f27ef42d
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 200 OK
Content-Type: application/json; odata.metadata=minimal; odata.streaming=true
OData-Version: 4.0

{"value": [{"subject": "Task 1 in batch", "amount": 1.50}]}
--batchresponse_f27ef42d
Content-Type: application/http
Content-Transfer-Encoding: binary

HTTP/1.1 429 Too Many Requests
Retry-After: 3
Content-Type: application/json

{"error":{"code":"0x80072326","message":"Number of concurrent requests exceeded the limit of 52."}}
--batchresponse_f27ef42d--
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parse_batch_reads_the_documented_shape(newline: str) -> None:
    body = DOC_RESPONSE.replace("\n", newline).encode()
    parts = parse_batch("multipart/mixed; boundary=batchresponse_f27ef42d", body)
    assert [status for status, _, _ in parts] == [204, 200, 429]
    assert parts[0][2].strip() == b""
    assert json.loads(parts[1][2])["value"][0]["subject"] == "Task 1 in batch"
    assert parts[2][1]["retry-after"] == "3"
    with pytest.raises(ValueError):
        parse_batch("multipart/mixed; boundary=batchresponse_f27ef42d", body[: len(body) // 2])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limiter_is_aimd_within_its_ceilings() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(8, clock=clock)
    assert limiter.limit == 8 and AdaptiveLimiter(500).limit == 52
    limiter.hint(48)
    assert limiter.limit == 8  # the hint lowers, never raises, what settings allow
    limiter.throttled(1.0)
    limiter.throttled(1.0)  # the same storm: one cut
    assert limiter.limit == 4
    clock.now += 1.5
    limiter.throttled(1.0)
    assert limiter.limit == 2
    for _ in range(2):
        limiter.succeeded()
    assert limiter.limit == 3
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 8
    limiter.hint(3)
    assert limiter.limit == 3 and limiter.ceiling == 3


def test_limiter_slots_block_beyond_the_limit() -> None:
    limiter = AdaptiveLimiter(1)
    entered = threading.Event()

    def second() -> None:
        with limiter.slot():
            entered.set()

    with limiter.slot():
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.1)
    thread.join(5)
    assert entered.is_set()


def test_gate_waits_until_the_latest_moment_any_thread_set() -> None:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds
        if len(slept) == 1:
            gate.block(2.0)  # another thread's 429 arrives while this one waits

    gate = RetryAfterGate(clock=clock, sleep=sleep)
    gate.block(3.0)
    gate.block(1.0)  # never moved back
    assert gate.remaining() == 3.0
    gate.wait()
    assert slept == [3.0, 2.0] and gate.remaining() == 0


def test_untrusted_certificate_is_a_config_error_not_a_retry(http_sandbox: Sandbox,
                                                              http_client: Callable[..., Any]) -> None:
    client = http_client()
    client.get("WhoAmI")
    client.session.mount("https://", trusting_session(None).get_adapter("https://x"))  # system CAs only
    with pytest.raises(ConfigError, match="not trusted"):
        client.get("WhoAmI")


@pytest.mark.parametrize("wait", ["backoff", "Retry-After"])
def test_a_stop_request_ends_a_retry_wait_at_once(http_sandbox: Sandbox, http_client: Callable[..., Any],
                                                 wait: str) -> None:
    """Issue #24: a signal must not wait out a retry's backoff or a 429's Retry-After (ground/stop.py)."""
    client = http_client(backoff_base_s=30.0, backoff_max_s=30.0, budget_s=300.0)
    client.get("WhoAmI")
    if wait == "backoff":
        faults = http_sandbox.server.faults  # type: ignore[union-attr]
        faults.only_paths, faults.p_503 = API, 1.0
    else:
        http_sandbox.protection.throttle(1.0, retry_after=30)
    timer = threading.Timer(0.3, stop.request, [signal.SIGTERM])
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(stop.Interrupted) as info:
            client.get("WhoAmI")
    finally:
        timer.cancel()
        stop.clear()
    assert time.monotonic() - started < 3 and info.value.exit_code == 143
    requests = client.stats()["other"]["requests"]
    assert requests >= 1 and client.stats()["other"]["retries"] >= 1  # it was waiting to try again
