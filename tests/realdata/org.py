"""A scripted org over HTTPS for the payload tests: l2c's real client signs in through the sandbox's Entra
emulator (MSAL's client-credentials flow, the token checked on every Web API request), and each Web API request
gets the next scripted answer, typically a payload with the server's URL for its placeholders. Every Web API
request is recorded as it arrived (the request target exactly as on the request line, headers, body), so a test
can check what l2c sent byte for byte.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from sandbox.entra import AppRegistration, AppRegistry, Entra, InvalidToken
from sandbox.server import SandboxServer
from sandbox.tls import SandboxTLS
from sandbox.wire import JSON_TYPE, Headers, Request, Response
from tests.realdata import Payload, load

TENANT_ID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
CLIENT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
APP_USER_ID = "31d2e3f4-a5b6-4c7d-8e9f-a0b1c2d3e4f5"


@dataclass(frozen=True)
class Sent:
    method: str
    target: str  # path and query exactly as on the request line
    headers: Headers
    body: bytes


class ScriptedOrg:
    def __init__(self, tls: SandboxTLS) -> None:
        self.tls = tls
        self.secret = secrets.token_urlsafe(16)
        registry = AppRegistry()
        registry.add(AppRegistration(client_id=CLIENT_ID, tenant_id=TENANT_ID, user_id=APP_USER_ID,
                                     secret=self.secret))
        self.entra = Entra(registry, tenant_id=TENANT_ID)  # its URLs from the Host header: the server's origin
        self.server = SandboxServer(self, ssl_context=tls.server_context)
        self.sent: list[Sent] = []
        self._answers: deque[Response] = deque()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> ScriptedOrg:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def settings(self, data_dir: Path, **extra: Any) -> Settings:
        """Settings as a user's `.env` would give them for this org."""
        values = {"DATAVERSE_URL": self.url, "AZURE_TENANT_ID": TENANT_ID, "AZURE_CLIENT_ID": CLIENT_ID,
                  "AZURE_CLIENT_SECRET": self.secret, "AZURE_AUTHORITY_HOST": self.url,
                  "L2C_CA_BUNDLE": str(self.tls.ca_path), "L2C_DATA_DIR": str(data_dir), **extra}
        return Settings(**values, _env_file=None)  # type: ignore[arg-type, call-arg]

    def load(self, name: str) -> Payload:
        """A payload with this server's URL for the placeholders."""
        return load(name, self.url)

    def answer(self, answer: str | Payload | Response, status: int | None = None) -> Payload | None:
        """Queue the answer to the next Web API request: a payload (by name) with its own status unless
        `status` is given (a body-only payload has none: 200), or a Response. Returns the payload queued."""
        payload = self.load(answer) if isinstance(answer, str) else answer
        if isinstance(payload, Payload):
            headers = [(name, value) for name, value in payload.headers.items()]
            if payload.json is not None and "Content-Type" not in payload.headers:
                headers.append(("Content-Type", JSON_TYPE))  # the docs leave it out; every real answer has it
            response = Response(status or payload.status or 200, headers, payload.body)
        else:
            response = payload
        with self._lock:
            self._answers.append(response)
        return payload if isinstance(payload, Payload) else None

    def answer_json(self, status: int, body: Any) -> None:
        """Queue an answer this test writes itself (not a payload): say so where it is used."""
        self.answer(Response(status, [("Content-Type", JSON_TYPE)], json.dumps(body).encode()))

    def answer_batch(self, bodies: list[bytes]) -> None:
        """Queue a `$batch` answer of one 200 JSON part per body: the test's own framing around payload bodies,
        shaped like payload 21's parts, with the CRLF line ends of a real answer."""
        boundary = "batchresponse_5d1c0e52-6a2f-4d1b-9f0e-3c7b8a9d0e1f"
        part = (f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nOData-Version: 4.0\r\n\r\n").encode()
        body = b"".join(part + b + b"\r\n" for b in bodies) + f"--{boundary}--\r\n".encode()
        self.answer(Response(200, [("Content-Type", f"multipart/mixed; boundary={boundary}"),
                                   ("OData-Version", "4.0")], body))

    def targets(self) -> list[str]:
        return [sent.target for sent in self.sent]

    def __call__(self, request: Request) -> Response:
        if not request.path.startswith("/api/"):
            return self.entra(request)
        try:
            self.entra.authenticate_api_request(request, resource=self.url)
        except InvalidToken as exc:
            return exc.response
        target = request.path + (f"?{request.query}" if request.query else "")
        with self._lock:
            self.sent.append(Sent(request.method, target, request.headers, request.body))
            if self._answers:
                return self._answers.popleft()
        message = f"the test scripted no answer for {request.method} {target}"
        return Response(404, [("Content-Type", JSON_TYPE)],
                        json.dumps({"error": {"code": "scripted", "message": message}}).encode())
