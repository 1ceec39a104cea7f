"""Shared fixtures for the sandbox's HTTPS tests: one CA per session, clients that trust only that CA."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from sandbox.server import Faults, SandboxServer
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
