"""The one HTTP client for the Dataverse Web API: pooled session, bearer token, status policy.

Foreign errors (requests) become ours here and nowhere else. This first version retries nothing; the
retry/backoff policy (429 Retry-After, 503, resets, truncated bodies) is connector issue #10.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import requests

from config.settings import Settings
from connector.auth import TokenProvider
from connector.tls import trusting_session
from l2c.errors import AuthError, L2CError, PermissionDenied, SourceUnavailable

API_PATH = "/api/data/v9.2/"


class DataverseClient:
    def __init__(self, settings: Settings, *, timeout: float = 120.0) -> None:
        assert settings.dataverse_url, "DATAVERSE_URL must be resolved before the client is built"
        self.base = settings.dataverse_url + API_PATH
        self.session = trusting_session(settings.ca_bundle, pool_size=max(10, settings.max_concurrency))
        self.session.headers.update({"Accept": "application/json", "OData-MaxVersion": "4.0",
                                     "OData-Version": "4.0", "Accept-Encoding": "gzip"})
        self.tokens = TokenProvider(settings, self.session)
        self.timeout = timeout
        self.requests = 0

    def url(self, path_or_url: str) -> str:
        return path_or_url if path_or_url.startswith("https://") else self.base + path_or_url

    def get_json(self, path_or_url: str, *, prefer: list[str] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens.token()}"}
        if prefer:
            headers["Prefer"] = ",".join(prefer)
        url = self.url(path_or_url)
        try:
            response = self.session.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"request failed: {type(exc).__name__}", url=url) from None
        self.requests += 1
        if response.status_code >= 400:
            raise status_error(response)
        # Money and decimals stay exact: JSON numbers with a fraction parse as Decimal.
        return json.loads(response.content, parse_float=Decimal)  # type: ignore[no-any-return]


def status_error(response: requests.Response) -> L2CError:
    code, message = "", response.reason
    try:
        error = response.json().get("error", {})
        code, message = error.get("code", ""), error.get("message", message)
    except ValueError:
        pass
    context: dict[str, Any] = {"status": response.status_code, "code": code or None,
               "request_id": response.headers.get("REQ_ID") or response.headers.get("x-ms-service-request-id")}
    if response.status_code == 401:
        return AuthError(f"Dataverse rejected the access token: {message}",
                         hint="check that the app registration is an application user in this environment",
                         **context)
    if response.status_code == 403:
        return PermissionDenied(f"permission denied: {message}",
                                hint="give the application user a security role with this privilege", **context)
    if response.status_code in (429, 502, 503, 504):
        return SourceUnavailable(f"Dataverse is unavailable: {message}", **context)
    return L2CError(f"Dataverse answered {response.status_code}: {message}", url=response.url, **context)
