"""Shared fixtures for the sandbox's HTTPS tests: one CA per session, clients that trust only that CA, and
running sandboxes with a client signed in through the real MSAL (`api_` fixtures)."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msal
import pytest
import requests

from connector.tls import trusting_session
from sandbox.orgdata import OrgData
from sandbox.runtime import CLIENT_ID, TENANT_ID, OrgState, Sandbox, SandboxOptions
from sandbox.schema import DATA_TABLES, TABLES
from sandbox.server import Faults, SandboxServer
from sandbox.simulator import simulate
from sandbox.tls import SandboxTLS, make_tls
from sandbox.wire import App


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_http(tls_material: SandboxTLS) -> Iterator[requests.Session]:
    """A requests Session that trusts the sandbox CA and ignores REQUESTS_CA_BUNDLE and proxies."""
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace `verify`
    session.verify = str(tls_material.ca_path)
    yield session
    session.close()


@pytest.fixture
def tls_serve(tls_material: SandboxTLS) -> Iterator[Callable[..., SandboxServer]]:
    """Start a SandboxServer for an app; every server started is stopped at teardown."""
    started: list[SandboxServer] = []

    def serve(app: App, faults: Faults | None = None) -> SandboxServer:
        server = SandboxServer(app, ssl_context=tls_material.server_context, faults=faults).start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop()


# --- the Web API over HTTPS: a started Sandbox and a client signed in through the real MSAL ---------------

API_PATH = "/api/data/v9.2"


@dataclass
class ApiClient:
    """A Web API client as an integration is one: tokens from MSAL's confidential client, TLS trust pinned to
    the sandbox CA (connector/tls.py), the OData headers the docs send. It follows links verbatim."""

    sandbox: Sandbox
    http: requests.Session
    app: msal.ConfidentialClientApplication

    @classmethod
    def connect(cls, sandbox: Sandbox, *, client_id: str = CLIENT_ID, secret: str | None = None) -> ApiClient:
        http = trusting_session(sandbox.tls.ca_path)
        app = msal.ConfidentialClientApplication(
            client_id, authority=f"{sandbox.url}/{TENANT_ID}",
            client_credential=secret or sandbox.client_secret, instance_discovery=False, http_client=http,
        )
        return cls(sandbox, http, app)

    @property
    def api(self) -> str:
        return self.sandbox.url + API_PATH

    def acquire(self) -> dict[str, Any]:
        return self.app.acquire_token_for_client([f"{self.sandbox.url}/.default"])  # type: ignore[no-any-return]

    def token(self) -> str:
        result = self.acquire()
        assert "access_token" in result, result
        return str(result["access_token"])

    def url(self, target: str) -> str:
        return target if target.startswith("https://") else f"{self.api}/{target}"

    def headers(self, prefer: str | None = None, token: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token or self.token()}", "Accept": "application/json",
                   "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
        if prefer:
            headers["Prefer"] = prefer
        return headers

    def get(self, target: str, *, prefer: str | None = None, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(target), headers=self.headers(prefer), timeout=30, **kwargs)

    def ok(self, target: str, *, prefer: str | None = None) -> dict[str, Any]:
        response = self.get(target, prefer=prefer)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        return response.json()  # type: ignore[no-any-return]

    def batch(self, urls: list[str], *, prefer: str | None = None) -> requests.Response:
        """POST $batch of GET requests, one application/http part each
        ([PD] webapi/execute-batch-operations-using-web-api.md)."""
        boundary = f"batch_{uuid.uuid4()}"
        head = f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        parts = [f"{head}GET {url} HTTP/1.1\r\nAccept: application/json\r\n\r\n" for url in urls]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode()
        headers = {**self.headers(), "Content-Type": f"multipart/mixed; boundary={boundary}"}
        if prefer:
            headers["Prefer"] = prefer
        return self.http.post(f"{self.api}/$batch", data=body, headers=headers, timeout=60)

    def pages(self, target: str, *, prefer: str | None = None, limit: int = 1000) -> list[requests.Response]:
        """Every page of a query: the Prefer header resent with each @odata.nextLink, the link untouched."""
        responses, seen, url = [], set(), target
        while True:
            response = self.get(url, prefer=prefer)
            assert response.status_code == 200, (url, response.status_code, response.text[:500])
            responses.append(response)
            link = response.json().get("@odata.nextLink")
            if link is None:
                return responses
            assert link not in seen and len(responses) < limit, f"paging does not end: {link}"
            seen.add(link)
            url = link


def page_values(responses: list[requests.Response]) -> list[dict[str, Any]]:
    return [row for response in responses for row in response.json()["value"]]


def batch_parts(response: requests.Response) -> list[tuple[int, Any]]:
    """(status, JSON body) of each application/http part of a multipart/mixed $batch response."""
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/mixed; boundary="), content_type
    boundary = content_type.split("boundary=", 1)[1].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())
    assert chunks[-1].strip() == b"--"
    parts = []
    for chunk in chunks[1:-1]:
        part_headers, _, http = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        assert b"Content-Type: application/http" in part_headers
        head, _, body = http.partition(b"\r\n\r\n")
        parts.append((int(head.split(b" ", 2)[1]), json.loads(body)))
    return parts


def error_of(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


@contextmanager
def running_sandbox(state_dir: Path, state: OrgState, options: SandboxOptions | None = None,
                    ) -> Iterator[Sandbox]:
    sandbox = Sandbox(state_dir, state, options).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def api_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One org of 1500 leads (over 5,000 audit rows) shared by every test that only reads; never advanced."""
    with running_sandbox(tmp_path_factory.mktemp("api_org"), OrgState(seed=42, leads=1500)) as sandbox:
        yield sandbox
        assert sandbox.state.days == 0, "a test advanced the shared sandbox: use api_start for that"


@pytest.fixture(scope="session")
def api_client(api_sandbox: Sandbox) -> Iterator[ApiClient]:
    client = ApiClient.connect(api_sandbox)
    yield client
    client.http.close()


StartSandbox = Callable[..., Sandbox]  # (state: OrgState | None, options: SandboxOptions | None)


@pytest.fixture
def api_start(tmp_path: Path) -> Iterator[StartSandbox]:
    """Start a sandbox of its own for a test that advances it or needs options; stopped at teardown."""
    with ExitStack() as stack:
        def start(state: OrgState | None = None, options: SandboxOptions | None = None) -> Sandbox:
            state_dir = tmp_path / f"org{next(numbers)}"
            state = state or OrgState(seed=42, leads=300)
            return stack.enter_context(running_sandbox(state_dir, state, options))

        numbers = itertools.count()

        yield start


# entity set -> (table, primary key) of every data table the simulator fills, from the sandbox schema
DATA_ENTITY_SETS = {TABLES[name].entity_set: (name, TABLES[name].primary_id) for name in DATA_TABLES}


class FakeClock:
    """A settable clock for the sandbox's time-based parts (service protection, token expiry); no sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def deltatoken(link: str) -> tuple[int, datetime]:
    """(version, UTC time) of `<version>!MM/dd/yyyy HH:mm:ss`, however its escapes are cased."""
    [token] = [value for name, value in parse_qsl(urlsplit(link).query) if name == "$deltatoken"]
    version, _, stamp = token.partition("!")
    return int(version), datetime.strptime(stamp, "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)


@pytest.fixture(scope="session", name="org")
def link_org() -> OrgData:
    """The small org the Link export tests (test_link_*.py) write, simulated once per session; modules that need
    another org (test_simulator.py, test_custom_table.py) define their own `org`."""
    return simulate(7, 120)
