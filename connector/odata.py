"""OData queries and paging for the Dataverse Web API.

`Query` builds the first URL of a read (`$select` of only the configured columns, `$filter`, `$orderby`);
`pages()` then follows `@odata.nextLink` verbatim, resending the same Prefer header with every page as
[PD] webapi/query/page-results.md requires, until the last page, which may carry `@odata.deltaLink`.
A nextLink that repeats is a server fault and stops the read (as meltano's paginator does) instead of
looping forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from ground import stop
from ground.errors import SourceUnavailable

MAX_PAGE_SIZE = 5000


class Client(Protocol):
    def get(self, path_or_url: str, *, prefer: Sequence[str] = (), kind: str = "other") -> Any: ...


@dataclass(frozen=True)
class Query:
    entity_set: str
    select: Sequence[str] = ()
    filter: str | None = None
    orderby: str | None = None
    top: int | None = None

    def url(self) -> str:
        parts = []
        if self.select:
            parts.append("$select=" + ",".join(self.select))
        if self.filter:
            parts.append("$filter=" + quote(self.filter, safe="'(),=:-"))
        if self.orderby:
            parts.append("$orderby=" + quote(self.orderby, safe=","))
        if self.top is not None:
            parts.append(f"$top={self.top}")
        return self.entity_set + ("?" + "&".join(parts) if parts else "")


@dataclass
class Page:
    records: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None
    server_time: datetime | None
    number: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def prefer(page_size: int, *, track_changes: bool = False, annotations: bool = True) -> list[str]:
    values = [f"odata.maxpagesize={min(page_size, MAX_PAGE_SIZE)}"]
    if annotations:
        # Labels ("Won", "Web", "Net 30") and lookup targets are captured with the data.
        values.append('odata.include-annotations="OData.Community.Display.V1.FormattedValue,'
                      'Microsoft.Dynamics.CRM.lookuplogicalname"')
    if track_changes:
        values.append("odata.track-changes")
    return values


def pages(client: Client, first_url: str, prefer_values: Sequence[str], *, kind: str = "page",
          start_page: int = 1) -> Iterator[Page]:
    """Every page from `first_url` (a relative query or an absolute next/delta link) to the last.

    The next page is asked for as soon as this one's nextLink is known, so it is on the wire while the caller
    converts and lands this one (one page ahead at most; its request goes through the same client limiter).
    A caller that stops early only discards that one answer: its state still points at the next link. A stop
    request (ground/stop.py) ends the read between two pages: the caller has landed and checkpointed the last.
    """
    seen: set[str] = set()

    def fetch(url: str) -> Any:
        return client.get(url, prefer=prefer_values, kind=kind)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2c-next") as ahead:
        url, number = first_url, start_page
        reply = fetch(url)
        while True:
            stop.check()
            body: dict[str, Any] = reply.json
            next_link = body.get("@odata.nextLink")
            if next_link is not None:
                if next_link in seen or next_link == url:
                    raise SourceUnavailable("Dataverse returned the same @odata.nextLink twice; stopping instead "
                                            "of looping", hint="rerun later; the run resumes at the last good page",
                                            url=first_url.split("?")[0])
                seen.add(next_link)
            upcoming: Future[Any] | None = ahead.submit(fetch, next_link) if next_link is not None else None
            yield Page(records=body.get("value", []), next_link=next_link, delta_link=body.get("@odata.deltaLink"),
                       server_time=getattr(reply, "date", None), number=number, raw=body)
            if upcoming is None:
                return
            reply, url, number = upcoming.result(), str(next_link), number + 1


def stored_link(link: str | None) -> str | None:
    """A next/delta link as kept in state: its path and query untouched, without the origin, so it resolves
    against the configured DATAVERSE_URL (an org URL can change; the in-process sandbox's port does)."""
    if link is None:
        return None
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.scheme else link


def literal(value: str) -> str:
    """A string literal for $filter: single quotes doubled, so a name like O'Brien cannot break the query."""
    return "'" + value.replace("'", "''") + "'"


def datetime_literal(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
