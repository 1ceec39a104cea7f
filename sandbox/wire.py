"""The request and response objects passed between the HTTPS transport and the emulated services.

The transport (sandbox/server.py) parses bytes into a Request, calls the app (sandbox/app.py), and writes
the Response back, applying the injected faults. Services (entra.py, webapi.py) are plain functions of a
Request, so they can be tested and composed (e.g. inside `$batch`) without sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header map."""

    def __init__(self, items: Mapping[str, str] | list[tuple[str, str]] | None = None) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items or [])
        self._items = {k.lower(): (k, v) for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Request:
    method: str
    path: str  # percent-encoded, without the query string
    query: str  # raw query string, percent-encoded, without '?'
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    client: str = ""

    def query_params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def form(self) -> dict[str, str]:
        # Bytes that are not UTF-8 become U+FFFD, as a web server's form reader does: never a 500.
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


API_PREFIX = "/api/data/v9.2/"  # the Web API's root path on the org's origin
JSON_TYPE = "application/json; odata.metadata=minimal"


def json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None,
                  content_type: str = JSON_TYPE) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, [("Content-Type", content_type), *(headers or [])], body)


App = Callable[[Request], Response]
