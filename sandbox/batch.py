"""`POST $batch`: multipart/mixed GET requests answered in one multipart/mixed response.

Format per [PD] webapi/execute-batch-operations-using-web-api.md: parts of Content-Type application/http,
each an HTTP request line, headers, blank line; at most 1000 requests per batch. Without `Prefer:
odata.continue-on-error` the batch stops at the first failing part and answers with that part's status
("Handling errors"); with it, every part runs and the batch answers 200 OK. Service protection counts
the batch as one request but its whole execution time ([PD] api-limits.md: "A batch can contain up to 1000
operations and will avoid the number of requests limit. However, you will need to be prepared for the
execution time limit."), which is why the outer request is the only one admitted.
"""

from __future__ import annotations

import re
import uuid
from typing import Protocol
from urllib.parse import urlsplit

from sandbox.odata import ODataError, error_response
from sandbox.wire import API_PREFIX, Headers, Request, Response

BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error"}


def parse_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.strip(b"\r\n"))
    return parts


def parse_inner(part: bytes, api_prefix: str) -> Request:
    """An application/http part -> Request. Part headers come first, then the embedded request."""
    text = part.replace(b"\r\n", b"\n").decode("utf-8")
    _part_headers, _, embedded = text.partition("\n\n")
    head, _, body = embedded.partition("\n\n")
    lines = head.split("\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise ODataError(400, "0x80048d19", f"Invalid request line in batch part: '{lines[0]}'.") from None
    headers = Headers([tuple(line.split(":", 1)) for line in lines[1:] if ":" in line])  # type: ignore[misc]
    headers = Headers([(k.strip(), v.strip()) for k, v in headers.items()])
    url = urlsplit(target)
    path = url.path
    if not path.startswith("/"):
        path = api_prefix + path  # relative to the service root
    return Request(method.upper(), path, url.query, headers, body.encode("utf-8"))


class Host(Protocol):
    """The Web API a batch's parts are dispatched to (sandbox.webapi.WebApi is one)."""

    def dispatch(self, request: Request, user: str) -> Response: ...

    def record(self, request: Request, status: int, *, in_batch: bool = False) -> None: ...

    def stats_operations(self, n: int) -> None: ...


def handle_batch(api: Host, request: Request, user: str, max_batch: int) -> Response:
    match = BOUNDARY.search(request.headers.get("Content-Type", ""))
    if not match:
        raise ODataError(400, "0x80048d19", "The batch request must have a 'Content-Type' header of "
                         "'multipart/mixed' with a boundary.")
    parts = parse_parts(request.body, match.group(1))
    if len(parts) > max_batch:
        raise ODataError(400, "0x8004d16c", f"The number of requests in the batch ({len(parts)}) exceeds the "
                         f"limit of {max_batch}.")
    out_boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[bytes] = []
    # [PD] webapi/execute-batch-operations-using-web-api.md, "Handling errors": "When an error occurs for a
    # request within a batch, the error for that request will be returned for the batch request and more
    # requests won't be processed", and "The batch error represents the error of the first failing request"
    # (its example answers `HTTP/1.1 400 BadRequest` around the failing part). "You can use the `Prefer:
    # odata.continue-on-error` request header to specify that more requests be processed when errors occur. The
    # batch request will return `200 OK`". The doc's failing part is the first; that the parts answered before
    # it stay in the body is inferred (they ran, and the ExecuteMultiple the doc equates $batch with returns them).
    keep_going = "odata.continue-on-error" in request.headers.get("Prefer", "").lower()
    status = 200
    for part in parts:
        if b"multipart/mixed" in part.split(b"\r\n\r\n", 1)[0]:
            raise ODataError(400, "0x80048d19", "Change sets are not supported: the sandbox org is read-only.")
        inner: Request | None = None
        inner_prefer = None
        try:
            inner = parse_inner(part, API_PREFIX)
            inner_prefer = inner.headers.get("Prefer")
            if inner.method != "GET":
                raise ODataError(405, "0x80060888", "The sandbox org is read-only: only GET requests may be "
                                 "batched.")
            response = api.dispatch(inner, user)
        except ODataError as exc:
            response = error_response(exc.status, exc.code, exc.message, inner_prefer)
        if inner is not None:
            api.record(inner, response.status, in_batch=True)
        chunks.append(_render_part(out_boundary, response))
        if response.status >= 400 and not keep_going:
            status = response.status
            break
    body = b"".join(chunks) + f"--{out_boundary}--\r\n".encode()
    api.stats_operations(len(parts))
    return Response(status, [("Content-Type", f"multipart/mixed; boundary={out_boundary}")], body)


def _render_part(boundary: str, response: Response) -> bytes:
    head = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "",
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}"]
    head += [f"{k}: {v}" for k, v in response.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + response.body + b"\r\n"
