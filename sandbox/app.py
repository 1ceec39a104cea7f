"""Top-level routing of the sandbox's one HTTPS origin: Entra ID, the Web API, and a small admin API.

`/api/data/v9.2/...` goes to the Web API emulator, `/_sandbox/...` to the admin API (advance the clock,
read request statistics; protected by a per-sandbox key so only whoever started it can move its clock),
everything else to the Entra ID emulator (`/{tenant}/v2.0/.well-known/openid-configuration`,
`/{tenant}/oauth2/v2.0/token`).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from sandbox.wire import Request, Response, json_response

ADMIN_PREFIX = "/_sandbox/"
ADMIN_HEADER = "X-Sandbox-Key"


class Admin(Protocol):
    """What the admin API may do to the running sandbox (sandbox.runtime.Sandbox is one)."""

    def advance_clock(self, days: float) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...


class SandboxApp:
    def __init__(self, entra: Callable[[Request], Response], webapi: Callable[[Request], Response],
                 sandbox: Admin) -> None:
        self.entra = entra
        self.webapi = webapi
        self.sandbox = sandbox
        self.admin_key = secrets.token_urlsafe(16)

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/api/"):
            return self.webapi(request)
        if request.path.startswith(ADMIN_PREFIX):
            return self.admin(request)
        return self.entra(request)

    def admin(self, request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(ADMIN_HEADER, ""), self.admin_key):
            return json_response(401, {"error": {"code": "sandbox", "message": f"missing or wrong {ADMIN_HEADER}"}})
        action = request.path[len(ADMIN_PREFIX):]
        if action == "advance" and request.method == "POST":
            days = float(dict(request.query_params()).get("days", "1"))
            return json_response(200, self.sandbox.advance_clock(days))
        if action == "stats" and request.method == "GET":
            return json_response(200, self.sandbox.stats())
        return json_response(404, {"error": {"code": "sandbox", "message": f"no admin action '{action}'"}})
