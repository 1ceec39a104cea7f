"""The wire format of OData `$batch` ([PD] webapi/execute-batch-operations-using-web-api.md): `encode_batch`
writes GETs as the application/http parts of a multipart/mixed body, and `parse_batch` reads an answer back into
(status, headers, body) per part, change sets flattened, in order. Pure bytes in, bytes out: a malformed or
truncated answer is a ValueError, which connector/http.py (which sends the batch, retries failed parts and
translates errors) turns into a retry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from requests.structures import CaseInsensitiveDict

MAX_BATCH = 1000  # requests per $batch ([PD] webapi/execute-batch-operations-using-web-api.md)


def encode_batch(boundary: str, targets: Sequence[str], prefer: Sequence[str]) -> bytes:
    lines: list[str] = []
    for target in targets:
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "",
                  f"GET {target} HTTP/1.1", "Accept: application/json"]
        if prefer:
            lines.append(f"Prefer: {','.join(prefer)}")
        lines += ["", ""]
    lines.append(f"--{boundary}--")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def parse_batch(content_type: str, body: bytes) -> list[tuple[int, CaseInsensitiveDict[str], bytes]]:
    """(status, headers, body) of every application/http part of a multipart/mixed answer, change sets
    flattened, in order. ValueError when the body is cut short or malformed."""
    match = _BOUNDARY.search(content_type)
    if not match:
        raise ValueError("no boundary")
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(match.group(1).encode()) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    chunks: list[bytes] = []
    start: int | None = None
    for found in delimiter.finditer(body):
        if start is not None:
            chunks.append(body[start:found.start()])
        if found.group(1):
            break
        start = found.end()
    else:
        raise ValueError("no closing delimiter")
    parts: list[tuple[int, CaseInsensitiveDict[str], bytes]] = []
    for chunk in chunks:
        _, part_head, content = _split_head(chunk)
        part_type = part_head.get("Content-Type", "")
        if part_type.lower().startswith("multipart/mixed"):
            parts += parse_batch(part_type, content)
            continue
        status_line, headers, payload = _split_head(content)
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise ValueError(f"bad status line {status_line[:40]!r}")
        parts.append((int(fields[1]), headers, payload))
    return parts


def _split_head(chunk: bytes) -> tuple[str, CaseInsensitiveDict[str], bytes]:
    """(first line, headers, rest) of a header block followed by a blank line and a body."""
    pieces = _BLANK_LINE.split(chunk, maxsplit=1)
    lines = pieces[0].decode("utf-8", "replace").splitlines()
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    first = ""
    for number, line in enumerate(lines):
        name, colon, value = line.partition(":")
        if colon and not (number == 0 and line.startswith("HTTP/")):
            headers[name.strip()] = value.strip()
        elif number == 0:
            first = line.strip()
    return first, headers, pieces[1] if len(pieces) > 1 else b""
