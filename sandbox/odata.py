"""The emulator's OData query options, parsed and validated against a schema.Table as a real org does.

`parse_query` turns the decoded query parameters and the Prefer header into a ParsedQuery (selected Web API
names, a polars predicate for $filter, $orderby keys, paging and change-tracking preferences) or raises
ODataError with the status, code and message a real org answers. The $filter syntax is parsed in
sandbox/odata_parse.py and bound to polars in sandbox/odata_filter.py; the names other modules use from
those (and from sandbox/odata_errors.py) are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn

import polars as pl

from sandbox.odata_errors import CRM_CODE, ODATA_CODE, ODataError, _at, _fail, _no_property, _sandbox
from sandbox.odata_filter import column_kind, filter_expr, guid_key, sqlserver_guid_key
from sandbox.odata_parse import GUID_RE, _Parser, parse_date, parse_datetime, parse_filter
from sandbox.schema import TABLES, Table
from sandbox.wire import Response, json_response

__all__ = ["ANNOTATIONS", "CRM_CODE", "CT_OPTIONS", "ERROR_ANNOTATIONS", "GUID_RE", "KNOWN_OPTIONS", "MAX_PAGE_SIZE",
           "ODATA_CODE", "UNSUPPORTED_OPTIONS", "AnnotationFilter", "ODataError", "ParsedQuery", "Prefer",
           "check_expand", "column_kind", "error_annotations", "filter_expr", "guid_key", "parse_date",
           "parse_datetime", "parse_filter", "parse_orderby", "parse_prefer", "parse_query", "parse_select",
           "sqlserver_guid_key"]

MAX_PAGE_SIZE = 5000  # [PD] webapi/query/page-results.md
CT_OPTIONS = ("$filter", "$orderby", "$expand", "$top")  # [PD] use-change-tracking-synchronize-data-...md
UNSUPPORTED_OPTIONS = ("$apply", "fetchXml", "savedQuery", "userQuery")  # and $expand, once its names are checked
KNOWN_OPTIONS = frozenset({"$select", "$filter", "$orderby", "$top", "$skip", "$count", "$skiptoken",
                           "$deltatoken", "$expand", *UNSUPPORTED_OPTIONS})
CDS = "Microsoft.PowerApps.CDS"
# The annotations that add details to an error body ([PD] webapi/compose-http-requests-handle-errors.md,
# "Request annotations" and "Include more details with errors").
ERROR_ANNOTATIONS = tuple(f"{CDS}.{name}" for name in (
    "ErrorDetails.OperationStatus", "ErrorDetails.SubErrorCode", "HelpLink", "TraceText", "InnerError.Message"))
ANNOTATIONS = ("OData.Community.Display.V1.FormattedValue", *(f"Microsoft.Dynamics.CRM.{name}" for name in (
    "lookuplogicalname", "associatednavigationproperty", "totalrecordcount", "totalrecordcountlimitexceeded",
    "fetchxmlpagingcookie", "morerecords")), *ERROR_ANNOTATIONS)


# --- $select, $orderby, $top, $count ---------------------------------------------------------------------

def parse_select(table: Table, text: str) -> tuple[str, ...] | None:
    """The selected Web API names in request order (None: every column)."""
    names: list[str] = []
    pos = 0
    for raw in text.split(",") if text.strip() else []:
        item = raw.strip()
        if item == "*":
            return None
        if not item:
            _fail(f"Syntax error {_at(text, pos)}")
        if "/" in item or "(" in item:
            _sandbox(f"The $select item '{item}'")
        if item not in table.by_api_name:
            _no_property(table, item)
        names += [item] if item not in names else []
        pos += len(raw) + 1
    return tuple(names) or None


def parse_orderby(table: Table, text: str) -> tuple[tuple[str, bool], ...]:
    """$orderby as (Web API name, descending) pairs, parsed as ODataLib's ParseOrderBy does."""
    parser, out = _Parser(text), []
    while True:
        node = parser.expression()
        descending = parser.word("desc")
        if descending or parser.word("asc"):
            parser.advance()
        if node.kind != "prop":
            _sandbox("Ordering by anything but a column")
        if node.op not in table.by_api_name:
            _no_property(table, node.op)
        out.append((node.op, descending))
        if parser.tok.kind != ",":
            break
        parser.advance()
    parser.expect_end()
    return tuple(out)


def check_expand(table: Table, text: str) -> NoReturn:
    """$expand: every item's first name bound as ODataLib binds it, then the option refused, as the sandbox joins
    no tables. A name that is no property of the type is ODataLib's "Could not find a property named ..." (code
    0x0, as for $select); a structural property is "... is not a navigation property or complex property. Only
    navigation properties can be expanded." (real, code 0x0: a 2023 blog post's capture, "Mastering Dataverse Web
    API Queries for Many-to-Many Relationships"). Collection-valued navigation properties are not modelled: they
    are refused as unknown names (the sandbox's tables declare only their lookups)."""
    if TABLES.get(table.logical_name) is table:  # the metadata types (sandbox/metadata.py) model no navigation
        navigation = {name for column in table.columns for name in column.navigation}
        for item in _expand_items(text):
            name = re.split(r"[(/;]", item, maxsplit=1)[0].strip()
            if not name or name == "*" or "." in name or name in navigation:
                continue
            if name in table.by_api_name:
                _fail(f"Property '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical_name}' is not a navigation "
                      "property or complex property. Only navigation properties can be expanded.")
            _no_property(table, name)
    _sandbox("The query option $expand")


def _expand_items(text: str) -> list[str]:
    """The comma-separated items of $expand, commas inside an item's parenthesised options and quotes kept."""
    items, depth, quoted, start = [], 0, False, 0
    for pos, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == ",":
            items.append(text[start:pos])
            start = pos + 1
    return [*items, text[start:]]


def _parse_top(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text) or int(text) < 0:  # ODataQueryOptionParser.ParseTop
        _fail(f"Invalid value '{text}' for $top query option found. The $top query option requires a "
              "non-negative integer value.")
    return int(text)


def _parse_count(text: str) -> bool:
    if text.strip() not in ("true", "false"):  # ODataQueryOptionParser.ParseCount
        _fail(f"'{text}' is not a valid count option.")
    return text.strip() == "true"


# --- Prefer ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotationFilter:
    """odata.include-annotations as ODataLib's AnnotationFilter: the most specific pattern wins, and an
    exclusion ('-ns.name') beats an inclusion of the same specificity."""

    patterns: tuple[str, ...] = ()

    def includes(self, term: str) -> bool:
        best: tuple[int, int, bool] | None = None
        for pattern in self.patterns:
            excluded, body = pattern.startswith("-"), pattern.lstrip("-")
            if body == "*":
                rank = (0, 0)
            elif body.endswith("*") and term.startswith(body[:-1]):  # "ns.*", or a name prefix "ns.Name*"
                rank = (1, len(body))
            elif body == term:
                rank = (2, len(body))
            else:
                continue
            if best is None or (*rank, excluded) > best:
                best = (*rank, excluded)
        return best is not None and not best[2]

    @property
    def wanted(self) -> frozenset[str]:
        """The annotations Dataverse knows that the client asked for."""
        return frozenset(term for term in ANNOTATIONS if self.includes(term))


@dataclass(frozen=True)
class Prefer:
    page_size: int = MAX_PAGE_SIZE  # rows per page actually served
    requested_page_size: int | None = None  # odata.maxpagesize as sent (its presence makes $top ignored)
    track_changes: bool = False
    annotations: AnnotationFilter = field(default_factory=AnnotationFilter)
    applied: tuple[str, ...] = ()  # Preference-Applied values, one per honoured preference


def parse_prefer(header: str | None) -> Prefer:
    """Prefer: odata.maxpagesize=N, odata.track-changes, odata.include-annotations="..." (any name case)."""
    page_size, requested, track, applied = MAX_PAGE_SIZE, None, False, []
    patterns: tuple[str, ...] = ()
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', header or ""):
        name, _, value = item.split(";")[0].strip().partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "odata.maxpagesize":
            if not re.fullmatch(r"\s*[+-]?\d+\s*", value):  # ODataPreferenceHeader.MaxPageSize
                _fail(f"Invalid value '{value}' for odata.maxpagesize preference header found. The "
                      "odata.maxpagesize preference header requires an integer value.")
            requested = int(value)
            if 0 < requested <= MAX_PAGE_SIZE:  # larger requests are ignored ([PD] page-results.md)
                page_size = requested
                applied.append(f"odata.maxpagesize={requested}")
        elif name == "odata.track-changes":
            track = True
            applied.append("odata.track-changes")
        elif name == "odata.include-annotations":
            patterns = tuple(p.strip() for p in value.split(",") if p.strip())
            for pattern in patterns:
                _check_annotation_pattern(pattern)
            applied.append(f'odata.include-annotations="{value}"')
    return Prefer(page_size, requested, track, AnnotationFilter(patterns), tuple(applied))


def _check_annotation_pattern(pattern: str) -> None:
    body, prefix = pattern.lstrip("-"), "The pattern '" + pattern + "' is not a"  # AnnotationFilterPattern
    if body == "*":
        return
    if "." not in body:
        _fail(f"{prefix} valid pattern to match an annotation. It must contain at least one '.' separating "
              "the namespace and the name segments of an annotation.")
    segments = body.split(".")
    if any(not s for s in segments):
        _fail(f"{prefix} valid pattern to match an annotation. It must not contain a namespace or name "
              "segment that is empty.")
    # Dataverse takes a '*' closing the last segment as a prefix wildcard: its docs ask for
    # "OData.Community.Display.V1.FormattedValue,Microsoft.PowerApps.CDS.ErrorDetails*" "to include only the
    # formatted values and any additional error detail annotations" ([PD] webapi/compose-http-requests-handle-
    # errors.md, webapi/query-data-web-api.md), where ODataLib's own AnnotationFilterPattern would refuse it.
    if any("*" in s and s != "*" for s in segments[:-1]) or "*" in segments[-1].rstrip("*"):
        _fail(f"{prefix} supported pattern to match an annotation. It must not contain '*' as part of a "
              "segment.")
    if "*" in segments[:-1]:
        _fail(f"{prefix} supported pattern to match an annotation. '*' must be the last segment of the "
              "pattern.")


def error_annotations(code: str, message: str, prefer_header: str | None) -> dict[str, str]:
    """The details an error body carries inside `error` when the request's Prefer asks for them: "When a request
    includes the `Prefer: odata.include-annotations="*"` header, the response includes all the annotations that
    include more details about errors and a URL that may direct you to specific guidance for the error" ([PD]
    webapi/compose-http-requests-handle-errors.md, "Include more details with errors"; its example is shared
    payload 12). A Prefer the request itself is refused for asks for nothing."""
    try:
        wanted = parse_prefer(prefer_header).annotations
    except ODataError:
        return {}
    number = int(code, 16) if re.fullmatch(r"0x[0-9a-fA-F]{1,8}", code) else 0
    values = {
        # The doc's example comes from a plug-in's InvalidPluginExecutionException(OperationStatus.Canceled, 12345,
        # ...): "1" and "12345". The sandbox runs no plug-ins; for a platform error, inferred: Failed (0) and the
        # error code itself as the signed HRESULT the SDK's fault carries.
        f"{CDS}.ErrorDetails.OperationStatus": "0",
        f"{CDS}.ErrorDetails.SubErrorCode": str(number - (1 << 32) if number >= 1 << 31 else number),
        # The doc's form, with this error's code: "...&error=Microsoft.Crm.CrmException%3a80040265&client=platform".
        f"{CDS}.HelpLink": "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException"
                           f"%3a{code.removeprefix('0x')}&client=platform",
        # "Content written to the Plug-in trace log": no plug-in ran, so nothing was traced (inferred).
        f"{CDS}.TraceText": "",
        # "This message should be the same as the error message except in certain special cases".
        f"{CDS}.InnerError.Message": message,
    }
    return {f"@{term}": value for term, value in values.items() if wanted.includes(term)}


# --- the whole request -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedQuery:
    table: Table
    select: tuple[str, ...] | None = None  # Web API names; None = all columns
    filter: pl.Expr | None = None
    filter_text: str | None = None
    orderby: tuple[tuple[str, bool], ...] = ()  # (Web API name, descending); empty = primary key order
    top: int | None = None  # None if absent, or ignored as odata.maxpagesize is set ([PD] page-results.md)
    count: bool = False
    skiptoken: str | None = None  # raw; decode with sandbox.paging.decode_skiptoken
    deltatoken: str | None = None  # raw; decode with sandbox.paging.decode_deltatoken
    prefer: Prefer = field(default_factory=Prefer)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def track_changes(self) -> bool:
        return self.prefer.track_changes or self.deltatoken is not None

    @property
    def page_size(self) -> int:
        return self.prefer.page_size

    @property
    def page_size_requested(self) -> bool:
        return self.prefer.requested_page_size is not None

    @property
    def preference_applied(self) -> tuple[str, ...]:
        return self.prefer.applied

    @property
    def formatted_values(self) -> bool:
        return self.prefer.annotations.includes("OData.Community.Display.V1.FormattedValue")

    @property
    def lookup_annotations(self) -> bool:
        return self.prefer.annotations.includes("Microsoft.Dynamics.CRM.lookuplogicalname")


def parse_query(table: Table, query_params: list[tuple[str, str]], prefer_header: str | None) -> ParsedQuery:
    """Validate a collection GET the way a real org does, in this order: unknown or repeated parameters,
    $skip, the Prefer header, change-tracking rules, options the sandbox lacks, then each option's value."""
    options: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name, value in query_params:
        if name.startswith("@"):
            aliases[name] = value
        elif name not in KNOWN_OPTIONS:  # real, for utm_source: rappen/FetchXMLBuilder issue #437
            _fail(f"The query parameter {name} is not supported")
        elif name in options:
            _fail(f"Query option '{name}' was specified more than once, but it must be specified at most "
                  "once.")
        else:
            options[name] = value
    if "$skip" in options:
        _fail("Skip Clause is not supported in CRM", CRM_CODE)
    prefer = parse_prefer(prefer_header)
    if prefer.track_changes or "$deltatoken" in options:
        if not table.change_tracking:
            _fail(f"Entity {table.logical_name} isn't enabled for change tracking.", "0x80072491")
        for name in CT_OPTIONS:  # code inferred: the docs give only the message
            if name in options:
                _fail(f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.',
                      CRM_CODE)
    for name in UNSUPPORTED_OPTIONS:
        if name in options:
            _sandbox(f"The query option {name}")
    select = parse_select(table, options["$select"]) if "$select" in options else None
    if "$expand" in options:  # ODataLib binds $select and $expand together
        check_expand(table, options["$expand"])
    text = options.get("$filter")
    return ParsedQuery(
        table=table,
        select=select,
        filter=filter_expr(table, text, aliases) if text is not None else None,
        filter_text=text,
        orderby=parse_orderby(table, options["$orderby"]) if "$orderby" in options else (),
        top=_parse_top(options["$top"]) if "$top" in options and prefer.requested_page_size is None else None,
        count=_parse_count(options["$count"]) if "$count" in options else False,
        skiptoken=options.get("$skiptoken"),
        deltatoken=options.get("$deltatoken"),
        prefer=prefer,
        aliases=aliases,
    )


def error_response(status: int, code: str, message: str, prefer: str | None = None) -> Response:
    """Dataverse's error body `{"error":{"code","message"}}`, with the detail annotations when Prefer asks."""
    error = {"code": code, "message": message, **error_annotations(code, message, prefer)}
    return json_response(status, {"error": error}, content_type="application/json; charset=utf-8")
