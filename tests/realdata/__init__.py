"""Real Dataverse Web API answers (payloads/, each described in payloads/README.md) as test inputs.

`load(name)` reads one file as published and gives its status, headers, body bytes and, for a JSON body, the
parsed JSON (fractions as Decimal, as connector/http.py parses them). A `.http` file is a status line, header
lines, a blank line and the body; 12 has no blank line (its body's `{` follows the last header), so a line that
is not `Name: value` also ends the headers. Header values lose their trailing spaces; the body keeps its bytes.
The `[Organization URI]` / `[Organization Uri]` placeholders become `org_url` in the whole file, and exactly the
README's four repairs are applied to exactly those four bodies (REPAIRS): a repair whose published text does not
occur exactly once is an error, so a corrected upstream file is noticed instead of being repaired twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from requests.structures import CaseInsensitiveDict

PAYLOADS = Path(__file__).parent / "payloads"
ORG_URL = "https://contoso.crm.dynamics.com"
PLACEHOLDERS = (b"[Organization URI]", b"[Organization Uri]")

# The README's repairs, each (published text, repaired text) in the body of one file.
REPAIRS: dict[str, tuple[bytes, bytes]] = {
    # The docs' `< Other results truncated for brevity>` line, and the comma before it that led to the elided
    # rows: without the line, the array would end in `},`.
    "01_docs_audit_list_deleted_contacts.http": (b"    },\n    < Other results truncated for brevity>\n",
                                                 b"    }\n"),
    "03_docs_retrieveattributechangehistory.http": (b'</cookie>",,\n', b'</cookie>",\n'),
    "12_docs_error_400_plugin_annotations.http": (b'"\n        "@Microsoft.PowerApps.CDS.InnerError.Message"',
                                                  b'",\n        "@Microsoft.PowerApps.CDS.InnerError.Message"'),
    # The message was wrapped where a space was.
    "17_notes_429_0x80072322.json": (b"limit of\n8000 over", b"limit of 8000 over"),
}

_HEADER = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+:")


@dataclass(frozen=True)
class Payload:
    name: str
    status: int | None  # None for a file that is a body only
    headers: CaseInsensitiveDict[str] = field(repr=False)
    body: bytes = field(repr=False)
    json: Any = field(repr=False)  # the parsed body when it is JSON, else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def names() -> list[str]:
    """Every payload file, in the README's order."""
    return sorted(p.name for p in PAYLOADS.iterdir() if p.name != "README.md")


def published(name: str) -> bytes:
    """The file exactly as copied from the shared realdata folder."""
    return (PAYLOADS / name).read_bytes()


def envelope(name: str, org_url: str = ORG_URL) -> tuple[int | None, CaseInsensitiveDict[str], bytes]:
    """(status, headers, body) of one file as published, with `org_url` for the placeholders; no repair."""
    data = published(name)
    for placeholder in PLACEHOLDERS:
        data = data.replace(placeholder, org_url.rstrip("/").encode())
    if name.endswith(".http"):
        return _split_http(data)
    return None, CaseInsensitiveDict(), data


def load(name: str, org_url: str = ORG_URL, *, repaired: bool = True) -> Payload:
    """One payload with `org_url` for the placeholders and, unless `repaired` is False, its README repair.
    A JSON body that does not parse raises ValueError (json.JSONDecodeError)."""
    status, headers, body = envelope(name, org_url)
    if repaired and name in REPAIRS:
        body = repair(name, body)
    is_json = name.endswith(".json") or (name.endswith(".http") and body.lstrip().startswith(b"{"))
    return Payload(name, status, headers, body, json.loads(body, parse_float=Decimal) if is_json else None)


def repair(name: str, body: bytes) -> bytes:
    published_text, repaired_text = REPAIRS[name]
    if body.count(published_text) != 1:
        raise ValueError(f"{name}: the README's repair no longer applies (its text occurs "
                         f"{body.count(published_text)} times): has the upstream file changed?")
    return body.replace(published_text, repaired_text)


def _split_http(data: bytes) -> tuple[int, CaseInsensitiveDict[str], bytes]:
    status_line, _, rest = data.partition(b"\n")
    status = int(status_line.split()[1])
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    position = 0
    while position < len(rest):
        end = rest.find(b"\n", position)
        end = len(rest) if end < 0 else end
        line = rest[position:end]
        if not line.strip():  # the blank line (here and there only spaces) ends the headers
            return status, headers, rest[end + 1:]
        if not _HEADER.match(line):  # a body right after the headers (12)
            break
        name, _, value = line.decode("utf-8").partition(":")
        headers[name] = value.strip()
        position = end + 1
    return status, headers, rest[position:]
