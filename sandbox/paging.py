"""Continuation tokens of the emulated Web API: the $skiptoken paging cookie, the $deltatoken, keyset paging.

A nextLink is the original query plus `$skiptoken=<cookie pagenumber=.. pagingcookie=.. istracking=.. />`: the
outer element percent-encoded once (uppercase hex, '=' and '/' kept), the inner FetchXML paging cookie twice
(lowercase hex), GUIDs uppercase in braces ([PD] webapi/query/page-results.md, fetchxml/page-results.md). The
cookie holds the last and first values of the order columns and of the primary key; the next page is the rows
strictly after the last one in the query's order (keyset paging), so rows inserted between pages are neither
lost nor repeated. Order is SQL Server's: NULL lowest, strings case-insensitive, uniqueidentifier by byte
groups 10-15, 8-9, 6-7, 4-5, 0-3. Decoders parse rather than compare: any hex case, one decoding round more or
less. Delta tokens are `<version>!MM/dd/yyyy HH:mm:ss`, percent-encoded with lowercase hex
([PD] use-change-tracking-synchronize-data-external-systems.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import quote, unquote_plus

import polars as pl

from sandbox.odata import (
    CRM_CODE,
    GUID_RE,
    ODataError,
    column_kind,
    guid_key,
    parse_date,
    parse_datetime,
    sqlserver_guid_key,
)
from sandbox.schema import Table

__all__ = ["PagingCookie", "cookie_value", "decode_deltatoken", "decode_history_cookie", "decode_skiptoken",
           "delta_link", "delta_position", "encode_delta_skiptoken", "encode_history_cookie",
           "encode_deltatoken", "encode_skiptoken", "keyset_predicate", "next_link", "order_keys",
           "page_skiptoken", "sort_frame", "sort_keys", "sqlserver_guid_key", "tracking_start"]

# Codes and messages for malformed tokens are inferred: no captured response shows them.
_BAD_SKIPTOKEN = "The $skiptoken value is not a valid paging cookie."
_BAD_DELTATOKEN = "The $deltatoken value is not a valid delta token."
_ATTRS = r'((?:\s+\w+="[^"]*")*)'
_OUTER_RE = re.compile(rf"\s*<cookie{_ATTRS}\s*/>\s*")
_INNER_RE = re.compile(rf"\s*<cookie{_ATTRS}\s*>((?:\s*<\w+{_ATTRS}\s*/>)*)\s*</cookie>\s*")
_ELEMENT_RE = re.compile(rf"<(\w+){_ATTRS}\s*/>")
_DELTA_RE = re.compile(r"(\d+)!(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2}):(\d{2})", re.A)
_DIGITS = re.compile(r"[0-9]{1,19}")  # an Int64 at most
_ENTITIES = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "apos": "'"}
_ESCAPES = {'"': "&quot;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _bad_skiptoken() -> ODataError:
    return ODataError(400, CRM_CODE, _BAD_SKIPTOKEN)


@dataclass(frozen=True)
class PagingCookie:
    page_number: int  # the page this token asks for (the outer pagenumber)
    columns: dict[str, tuple[str | None, str | None]]  # cookie element name -> (last, first); None = null
    istracking: bool = False
    inner_page: int | None = None  # the page the values come from (the inner cookie's page)
    # A tracking read's start (version, time): its deltaLink's token, whenever its last page is asked for.
    tracking_start: tuple[int, datetime] | None = None


def cookie_value(value: object) -> str | None:
    """A value as a paging cookie writes it: GUIDs {UPPER}, UTC times ISO 8601, booleans True/False."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
        return f"{utc:%Y-%m-%dT%H:%M:%S}{fraction}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return "{" + text.upper() + "}" if isinstance(value, uuid.UUID) or GUID_RE.match(text) else text


def _xml_attr(text: str) -> str:  # control characters as character references, so they survive
    return "".join(_ESCAPES.get(c) or (f"&#{ord(c)};" if ord(c) < 32 else c) for c in text)


def _xml_unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        ref = m[1]
        return chr(int(ref[2:], 16) if ref[:2] == "#x" else int(ref[1:])) if ref[0] == "#" else _ENTITIES[ref]
    return re.sub(r"&(#x[0-9a-fA-F]+|#\d+|quot|amp|lt|gt|apos);", one, text)


def _percent(text: str, safe: str, lower: bool) -> str:
    encoded = quote(text, safe=safe)
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded) if lower else encoded


def encode_skiptoken(page_number: int, primary_key: str, last_row: Mapping[str, object],
                     first_row: Mapping[str, object], order_columns: Sequence[str] = (),
                     istracking: bool = False, tracking_start: tuple[int, datetime] | None = None) -> str:
    """The $skiptoken value, ready to append to a nextLink, asking for page `page_number` (>= 2).

    Elements follow `order_columns` then the primary key, each with the last and first row's values read
    from the rows by the same names (a null is written lastnull="1"/firstnull="1"). A tracking read's
    `tracking_start` rides along in the inner cookie (`trackingstart="<version>!MM/dd/yyyy HH:mm:ss"`,
    sandbox-specific: where a real org keeps it is not documented)."""
    elements = []
    for name in [*(c for c in order_columns if c != primary_key), primary_key]:
        attrs = []
        for which, row in (("last", last_row), ("first", first_row)):
            text = cookie_value(row.get(name))
            attrs.append(f'{which}null="1"' if text is None else f'{which}="{_xml_attr(text)}"')
        elements.append(f"<{name} {' '.join(attrs)} />")
    start = "" if tracking_start is None else f' trackingstart="{_delta_text(*tracking_start)}"'
    inner = f'<cookie page="{page_number - 1}"{start}>{"".join(elements)}</cookie>'
    twice = _percent(_percent(inner, "-_.", lower=True), "-_.", lower=True)
    outer = f'<cookie pagenumber="{page_number}" pagingcookie="{twice}" istracking="{istracking}" />'
    return _percent(outer, "=/%-_.", lower=False)


def _decoded(text: str, prefix: str) -> str:
    """Percent-decode until the text starts with `prefix`, whatever rounds a framework or client did."""
    for _ in range(4):
        if text.lstrip().startswith(prefix):
            return text
        text = unquote_plus(text)
    raise _bad_skiptoken()


def decode_skiptoken(raw: str) -> PagingCookie:
    """A $skiptoken as sent (raw from the URL, or already decoded once), parsed into its cookie."""
    outer = _OUTER_RE.fullmatch(_decoded(raw, "<"))
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', outer[1])) if outer else {}
    if not _DIGITS.fullmatch(attrs.get("pagenumber", "")) or "pagingcookie" not in attrs:
        raise _bad_skiptoken()
    inner = _INNER_RE.fullmatch(_decoded(attrs["pagingcookie"], "<"))
    if inner is None:
        raise _bad_skiptoken()
    inner_attrs = dict(re.findall(r'(\w+)="([^"]*)"', inner[1]))
    page, start = inner_attrs.get("page", ""), inner_attrs.get("trackingstart")
    columns: dict[str, tuple[str | None, str | None]] = {}
    for element in _ELEMENT_RE.finditer(inner[2]):
        try:
            values = {k: _xml_unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', element[2])}
        except (ValueError, OverflowError):  # a character reference beyond Unicode
            raise _bad_skiptoken() from None
        columns[element[1]] = (None if values.get("lastnull") == "1" else values.get("last"),
                               None if values.get("firstnull") == "1" else values.get("first"))
    tracking_start = None
    if start is not None:
        try:
            tracking_start = decode_deltatoken(start)
        except ODataError:
            raise _bad_skiptoken() from None
    return PagingCookie(int(attrs["pagenumber"]), columns, attrs.get("istracking", "").lower() == "true",
                        int(page) if _DIGITS.fullmatch(page) else None, tracking_start)


def _with_token(base_url: str, query: str, name: str, token: str, drop: tuple[str, ...]) -> str:
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) not in drop]
    return f"{base_url}?{'&'.join([*kept, f'{name}={token}'])}"


def next_link(base_url: str, original_query_string: str, skiptoken: str) -> str:
    """The @odata.nextLink: the original (still percent-encoded) query with its $skiptoken replaced."""
    return _with_token(base_url, original_query_string, "$skiptoken", skiptoken, ("$skiptoken",))


def delta_link(base_url: str, original_query_string: str, deltatoken: str) -> str:
    """The @odata.deltaLink: the original query without paging or delta tokens, plus the new $deltatoken."""
    drop = ("$skiptoken", "$deltatoken")
    return _with_token(base_url, original_query_string, "$deltatoken", deltatoken, drop)


def encode_deltatoken(version: int, timestamp: datetime) -> str:
    """`919042%2108%2f22%2f2017%2008%3a10%3a44` for version 919042 at 2017-08-22 08:10:44 UTC."""
    return _percent(_delta_text(version, timestamp), "", lower=True)


def _delta_text(version: int, timestamp: datetime) -> str:
    utc = timestamp.astimezone(UTC) if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    return f"{version}!{utc:%m/%d/%Y %H:%M:%S}"


def decode_deltatoken(raw: str) -> tuple[int, datetime]:
    """(version, UTC timestamp) from a $deltatoken in any hex case, raw or partly or wholly decoded."""
    text = raw.strip()
    for _ in range(4):
        m = _DELTA_RE.fullmatch(text)
        if m:
            month, day, year, hh, mm, ss = (int(g) for g in m.groups()[1:])
            try:
                return int(m[1]), datetime(year, month, day, hh, mm, ss, tzinfo=UTC)
            except ValueError:
                break
        text = unquote_plus(text)
    raise ODataError(400, CRM_CODE, _BAD_DELTATOKEN)


# --- keyset paging ---------------------------------------------------------------------------------------

def order_keys(table: Table, orderby: Sequence[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The $orderby (Web API name, descending) pairs plus the primary key as the final tiebreak."""
    keys = list(orderby)
    return keys if table.primary_id in (name for name, _ in keys) else [*keys, (table.primary_id, False)]


def _key(col: pl.Expr, kind: str) -> pl.Expr:
    return sqlserver_guid_key(col) if kind == "guid" else col.str.to_lowercase() if kind == "string" else col


def sort_frame(frame: pl.DataFrame, table: Table, orderby: Sequence[tuple[str, bool]]) -> pl.DataFrame:
    """Rows in the order a real org returns them; NULL sorts lowest (first ascending, last descending)."""
    keys = order_keys(table, orderby)
    exprs = [_key(pl.col(name), column_kind(table.by_api_name[name])) for name, _ in keys]
    flags = [descending for _, descending in keys]
    return frame.sort(exprs, descending=flags, nulls_last=flags, maintain_order=True)


def page_skiptoken(table: Table, orderby: Sequence[tuple[str, bool]], page_number: int, page: pl.DataFrame,
                   istracking: bool = False, tracking_start: tuple[int, datetime] | None = None) -> str:
    """The $skiptoken for page `page_number` after `page` (non-empty, sorted with `sort_frame`). Elements are
    named by logical names (`parentaccountid`, not `_parentaccountid_value`), as FetchXML cookies are."""
    logical = {name: table.by_api_name[name].name for name, _ in order_keys(table, orderby)}
    first, last = page.row(0, named=True), page.row(-1, named=True)
    return encode_skiptoken(page_number, table.primary_id, {logical[k]: last[k] for k in logical},
                            {logical[k]: first[k] for k in logical}, list(logical.values()), istracking,
                            tracking_start)


def _typed(kind: str, text: str) -> object:
    """A cookie value back as the column's comparison key (lowercase strings, SQL Server GUID order)."""
    try:
        if kind == "guid":
            guid = text.strip("{}")
            return guid_key(guid) if GUID_RE.match(guid) else None
        if kind == "string":
            return text.lower()
        if kind in ("int32", "int64"):
            return int(text)
        if kind == "decimal":
            return float(text)
        if kind == "bool":
            return {"true": True, "false": False}.get(text.lower())
        if kind == "date":
            return parse_date(text)
        return parse_datetime(text) or datetime.strptime(text, "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def sort_keys(frame: pl.DataFrame, table: Table, orderby: Sequence[tuple[str, bool]]) -> pl.DataFrame:
    """The comparison keys `sort_frame` sorts by (`key0`, `key1`, ...; null where the column is null), row for row
    of `frame`: computed once per order, so each page's `keyset_predicate` compares them
    instead of re-deriving every row's key (SQL Server GUID order, lowercase text) on every page."""
    return frame.select(_key(pl.col(name), column_kind(table.by_api_name[name])).alias(f"key{i}")
                        for i, (name, _) in enumerate(order_keys(table, orderby)))


def keyset_predicate(table: Table, orderby: Sequence[tuple[str, bool]], cookie: PagingCookie) -> pl.Expr:
    """Rows strictly after the cookie's last row in the query's order (with the primary-key tiebreak), over the
    columns `sort_keys` computes for that order."""
    clauses, same = [], pl.lit(True)
    for i, (name, descending) in enumerate(order_keys(table, orderby)):
        column = table.by_api_name[name]
        written = cookie.columns.get(column.name, cookie.columns.get(name))
        if written is None:  # a cookie from another query (Dataverse would fall back to simple paging)
            raise _bad_skiptoken()
        col, kind = pl.col(f"key{i}"), column_kind(column)
        if written[0] is None:
            after, equal = (pl.lit(False) if descending else col.is_not_null()), col.is_null()
        else:
            last = _typed(kind, written[0])
            if last is None:
                raise _bad_skiptoken()
            value = pl.lit(last)
            after = col.is_null() | (col < value) if descending else (col > value).fill_null(False)
            equal = (col == value).fill_null(False)
        clauses.append(same & after)
        same = same & equal
    return pl.any_horizontal(clauses)


# --- tokens whose content only the sandbox reads ---------------------------------------------------------

def encode_delta_skiptoken(phase: int, version: int, tracking_start: tuple[int, datetime],
                           page_number: int = 2) -> str:
    """A nextLink $skiptoken inside a delta answer: changed rows (phase 0) or deletions (phase 1) continue
    after `version`, up to the delta's `tracking_start`. Same envelope as a paging cookie, istracking="True";
    the content is sandbox-specific."""
    row = {"phase": phase, "versionnumber": version}
    return encode_skiptoken(page_number, "versionnumber", row, row, ["phase"], istracking=True,
                            tracking_start=tracking_start)


def delta_position(cookie: PagingCookie) -> tuple[int, int]:
    """(phase, version) from a cookie made by `encode_delta_skiptoken`."""
    phase, version = (cookie.columns.get(name, (None, None))[0] for name in ("phase", "versionnumber"))
    if phase not in ("0", "1") or version is None or not _DIGITS.fullmatch(version):
        raise _bad_skiptoken()
    return int(phase), int(version)


def tracking_start(cookie: PagingCookie) -> tuple[int, datetime]:
    """The start a tracking read's cookie carries (see `encode_skiptoken`); a cookie without one is invalid."""
    if cookie.tracking_start is None:
        raise _bad_skiptoken()
    return cookie.tracking_start


def encode_history_cookie(page_number: int, start: int) -> str:
    """AuditDetailCollection.PagingCookie for RetrieveRecordChangeHistory: the offset of the next detail.
    A real cookie names audit ids (`<cookie page=".."><auditid last=".." first=".." /></cookie>`, inferred);
    the sandbox keeps the offset so a client can only echo it back."""
    return f'<cookie page="{page_number}"><offset last="{start}" first="{start}" /></cookie>'


def decode_history_cookie(cookie: str) -> int:
    text = _decoded(cookie, "<")
    element = _ELEMENT_RE.search(text)
    last = dict(re.findall(r'(\w+)="([^"]*)"', element[2])).get("last", "") if element else ""
    valid = text.lstrip().startswith("<cookie") and element and element[1] == "offset"
    if not (valid and _DIGITS.fullmatch(last)):
        raise ODataError(400, CRM_CODE, "The PagingCookie is not valid.")
    return int(last)
