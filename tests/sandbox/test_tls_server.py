"""The HTTPS transport over real loopback TLS: trust, keep-alive, gzip, framing, faults, robustness."""

from __future__ import annotations

import gzip
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from requests import Session

from sandbox.server import Faults, SandboxServer
from sandbox.tls import SandboxTLS, make_client_certificate
from sandbox.wire import Request, Response, json_response

Serve = Callable[..., SandboxServer]


def text_of(n: int) -> bytes:
    return (b"lead-to-cash " * (n // 13 + 1))[:n]


def echo_app(request: Request) -> Response:
    params = dict(request.query_params())
    if request.path == "/big":
        return Response(200, [("Content-Type", "text/plain")], text_of(int(params["n"])))
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/empty":
        return Response(204, [], b"")
    if request.path == "/body":
        return Response(200, [("Content-Type", "application/octet-stream")], request.body)
    return json_response(200, {"client": request.client, "path": request.path, "method": request.method})


def test_serves_https_with_the_sandbox_ca(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    response = tls_http.get(f"{server.url}/hello")
    assert response.status_code == 200
    assert response.json()["path"] == "/hello"
    assert response.headers["Content-Length"] == str(len(response.content))


def test_a_client_without_the_sandbox_ca_refuses_the_server(tls_serve: Serve, tmp_path: Path) -> None:
    server = tls_serve(echo_app)
    unrelated_ca = tmp_path / "other.pem"
    unrelated_ca.write_bytes(make_client_certificate().cert_pem)
    for verify in (True, str(unrelated_ca)):  # the system store; a CA that did not sign the server's cert
        with requests.Session() as session:
            session.trust_env = False
            session.verify = verify
            with pytest.raises(requests.exceptions.SSLError):
                session.get(f"{server.url}/hello")


def test_keep_alive_reuses_one_connection(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    clients = {tls_http.get(f"{server.url}/n{i}").json()["client"] for i in range(5)}
    assert len(clients) == 1


def test_large_bodies_are_gzipped_when_accepted(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    response = tls_http.get(f"{server.url}/big?n=50000", stream=True)
    wire = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) == len(wire) < 50000
    assert gzip.decompress(wire) == text_of(50000)
    assert tls_http.get(f"{server.url}/big?n=50000").content == text_of(50000)


@pytest.mark.parametrize(
    ("n", "accept", "gzipped"),
    [(1024, "gzip", False), (1025, "gzip", True), (50000, "identity", False), (50000, "gzip;q=0", False)],
)
def test_gzip_threshold_and_negotiation(
    tls_serve: Serve, tls_http: requests.Session, n: int, accept: str, gzipped: bool
) -> None:
    server = tls_serve(echo_app)
    response = tls_http.get(f"{server.url}/big?n={n}", headers={"Accept-Encoding": accept}, stream=True)
    wire = response.raw.read(decode_content=False)
    assert ("Content-Encoding" in response.headers) is gzipped
    assert int(response.headers["Content-Length"]) == len(wire)
    assert (gzip.decompress(wire) if gzipped else wire) == text_of(n)


def test_request_bodies_with_length_or_chunked(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    payload = text_of(70000)
    assert tls_http.post(f"{server.url}/body", data=payload).content == payload
    chunks = (payload[i : i + 1000] for i in range(0, len(payload), 1000))
    assert tls_http.post(f"{server.url}/body", data=chunks).content == payload  # Transfer-Encoding: chunked


def test_no_content_and_head(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    empty = tls_http.get(f"{server.url}/empty")
    assert empty.status_code == 204 and empty.content == b"" and "Content-Length" not in empty.headers
    head = tls_http.head(f"{server.url}/big?n=500", headers={"Accept-Encoding": "identity"})
    assert head.headers["Content-Length"] == "500" and head.content == b""
    assert tls_http.get(f"{server.url}/after").status_code == 200  # the connection stayed in sync


def test_drop_closes_without_a_response_and_can_be_switched_off(
    tls_serve: Serve, tls_http: requests.Session
) -> None:
    faults = Faults(p_drop=1.0)
    server = tls_serve(echo_app, faults)
    with pytest.raises(requests.exceptions.ConnectionError):
        tls_http.get(f"{server.url}/x")
    faults.p_drop = 0.0
    assert tls_http.get(f"{server.url}/x").status_code == 200


def test_truncate_sends_full_length_then_part_of_the_body(tls_serve: Serve, tls_http: Session) -> None:
    server = tls_serve(echo_app, Faults(p_truncate=1.0))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        tls_http.get(f"{server.url}/big?n=10000", headers={"Accept-Encoding": "identity"})
    response = tls_http.get(f"{server.url}/big?n=10000", headers={"Accept-Encoding": "identity"}, stream=True)
    assert response.headers["Content-Length"] == "10000"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response.content  # noqa: B018 - reading is what fails


def test_503_has_a_dataverse_error_body(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app, Faults(p_503=1.0))
    response = tls_http.get(f"{server.url}/api/data/v9.2/leads")
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"].startswith("0x") and error["message"]


def test_faults_apply_only_to_matching_paths(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app, Faults(p_503=1.0, only_paths="/api/data/"))
    assert tls_http.post(f"{server.url}/tenant/oauth2/v2.0/token").status_code == 200
    assert tls_http.get(f"{server.url}/api/data/v9.2/leads").status_code == 503


def test_seeded_faults_repeat(tls_serve: Serve, tls_http: requests.Session) -> None:
    faults = Faults(p_503=0.5, seed=7)
    server = tls_serve(echo_app, faults)
    first = [tls_http.get(f"{server.url}/x").status_code for _ in range(30)]
    faults.seed = 7  # restarts the sequence
    again = [tls_http.get(f"{server.url}/x").status_code for _ in range(30)]
    assert first == again
    assert {200, 503} == set(first)


def test_latency_is_added(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app, Faults(latency_ms=300))
    started = time.monotonic()
    assert tls_http.get(f"{server.url}/x").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_timeout_fault_trips_the_client_timeout_and_stop_is_prompt(
    tls_serve: Serve, tls_http: requests.Session
) -> None:
    server = tls_serve(echo_app, Faults(timeout_ms=30_000))
    with pytest.raises(requests.exceptions.ReadTimeout):
        tls_http.get(f"{server.url}/x", timeout=0.3)
    started = time.monotonic()
    server.stop()  # a handler is still waiting out the 30 s
    assert time.monotonic() - started < 3


def test_handler_exception_becomes_500_and_is_logged(
    tls_serve: Serve, tls_http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    server = tls_serve(echo_app)
    with caplog.at_level(logging.ERROR, logger="l2c.sandbox.server"):
        response = tls_http.get(f"{server.url}/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "0x80040216"
    assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)
    assert tls_http.get(f"{server.url}/x").status_code == 200


def test_client_vanishing_mid_response_does_not_hurt_the_server(
    tls_serve: Serve, tls_http: requests.Session, tls_material: SandboxTLS
) -> None:
    server = tls_serve(echo_app)
    context = tls_material.client_context()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /big?n=20000000 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
                assert tls.recv(100).startswith(b"HTTP/1.1 200")
    # A client that does not speak TLS, and one that speaks TLS but not HTTP.
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.settimeout(5)
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        raw.recv(100)  # a TLS alert or EOF: the server gives up on this connection
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 501")
    assert tls_http.get(f"{server.url}/ok").status_code == 200


def test_stop_closes_idle_keep_alive_connections_and_the_listener(
    tls_material: SandboxTLS, tls_http: requests.Session
) -> None:
    with SandboxServer(echo_app, ssl_context=tls_material.server_context) as server:
        assert tls_http.get(f"{server.url}/x").status_code == 200  # leaves an idle pooled connection
        url = server.url
        started = time.monotonic()
    assert time.monotonic() - started < 3
    with pytest.raises(requests.exceptions.ConnectionError):
        tls_http.get(f"{url}/x", timeout=2)


def test_app_and_faults_can_be_swapped_while_running(tls_serve: Serve, tls_http: requests.Session) -> None:
    server = tls_serve(echo_app)
    server.app = lambda request: json_response(200, {"swapped": True})
    assert tls_http.get(f"{server.url}/x").json() == {"swapped": True}
    server.faults = Faults(p_503=1.0)
    assert tls_http.get(f"{server.url}/x").status_code == 503
