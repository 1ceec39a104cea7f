"""Top-level routing of the sandbox's one HTTPS origin: Entra ID, the Web API, and a small admin API.

`/api/data/v9.2/...` goes to the Web API emulator, `/_sandbox/...` to the admin API (advance the clock,
read request statistics; protected by a per-sandbox key so only whoever started it can move its clock),
everything else to the Entra ID emulator (`/{tenant}/v2.0/.well-known/openid-configuration`,
`/{tenant}/oauth2/v2.0/token`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.runtime import Sandbox
    from sandbox.webapi import WebApi

ADMIN_PREFIX = "/_sandbox/"
ADMIN_HEADER = "X-Sandbox-Key"


class SandboxApp:
    def __init__(self, entra: Any, webapi: WebApi, sandbox: Sandbox) -> None:
        self.entra = entra
        self.webapi = webapi
        self.sandbox = sandbox
        self.admin_key = secrets.token_urlsafe(16)

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/api/"):
            return self.webapi(request)
        if request.path.startswith(ADMIN_PREFIX):
            return self.admin(request)
        return self.entra(request)  # type: ignore[no-any-return]

    def admin(self, request: Request) -> Response:
        if not hmac.compare_digest(request.headers.get(ADMIN_HEADER, ""), self.admin_key):
            return json_response(401, {"error": {"code": "sandbox", "message": f"missing or wrong {ADMIN_HEADER}"}})
        action = request.path[len(ADMIN_PREFIX):]
        if action == "advance" and request.method == "POST":
            days = float(dict(request.query_params()).get("days", "1"))
            state = self.sandbox.advance(days)
            return json_response(200, {"seed": state.seed, "leads": state.leads, "days": state.days,
                                       "clock": state.clock.isoformat()})
        if action == "stats" and request.method == "GET":
            return json_response(200, {"counts": dict(self.webapi.counts),
                                       "violations": len(self.sandbox.protection.violations())})
        return json_response(404, {"error": {"code": "sandbox", "message": f"no admin action '{action}'"}})
