"""The Dataverse Web API emulator: `/api/data/v9.2/...` as a function of a Request.

Routes: WhoAmI; EntityDefinitions (and .../Attributes); entity sets (collection, single row, `/$count`),
with change tracking; `audits(<id>)/Microsoft.Dynamics.CRM.RetrieveAuditDetails`;
`RetrieveRecordChangeHistory(Target=@target,PagingInfo=@paginginfo)`; `$batch`. Every request is
authenticated (sandbox/entra.py) and admitted by service protection (sandbox/protection.py); errors are
Dataverse's `{"error":{"code","message"}}`. The org is read-only: the sandbox's clock only moves through
`advance` (sandbox/runtime.py).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

from sandbox import corrupt, odata, paging
from sandbox.batch import handle_batch
from sandbox.entra import InvalidToken
from sandbox.metadata import ATTRIBUTE, ENTITY, Addressed, attribute_cast, attribute_rows, entity_rows, query_metadata
from sandbox.odata import ODataError, error_response
from sandbox.protection import Throttled
from sandbox.schema import TABLES, Table
from sandbox.store import Annotations, ServedTable, Store, render_detail_values, render_entity
from sandbox.wire import API_PREFIX, Request, Response, json_response

GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ROW_PATH = re.compile(rf"^(?P<set>[a-z_]+)\((?P<id>{GUID})\)$")
AUDIT_DETAILS = re.compile(rf"^audits\((?P<id>{GUID})\)/Microsoft\.Dynamics\.CRM\.RetrieveAuditDetails(\(\))?$")
_KEY = r"\((?:LogicalName='{name}'|{mid})\)"
ENTITY_DEF = re.compile(
    "^EntityDefinitions" + _KEY.format(name="(?P<name>[a-z_]+)", mid=f"(?P<mid>{GUID})")
    + "(?:(?P<attrs>/Attributes)(?:" + _KEY.format(name="(?P<attr>[a-z_0-9]+)", mid=f"(?P<attr_mid>{GUID})")
    + ")?(?:/(?P<cast>[A-Za-z.]+))?)?$")
CHANGE_HISTORY = re.compile(r"^RetrieveRecordChangeHistory\((?P<args>[^)]*)\)$")
TARGET = re.compile(rf"^(?P<set>[a-z_]+)\((?P<id>{GUID})\)$")

CRM = "Microsoft.Dynamics.CRM"
MAX_COUNT = 5000  # $count and /$count stop counting here ([PD] webapi/query/count-rows.md)

# Privileges the sandbox can withdraw from the application user (flags on `l2c sandbox serve`).
PRV_AUDIT_SUMMARY = "prvReadAuditSummary"
PRV_RECORD_HISTORY = "prvReadRecordAuditHistory"
PRIVILEGE_IDS = {PRV_AUDIT_SUMMARY: "b5f2ba4d-0f4f-4b41-bb63-9c7b1c24a7a1",
                 PRV_RECORD_HISTORY: "d4a2bc2a-2d7f-4bc3-9d3c-7f3e2cbb4e0e"}


@dataclass(frozen=True)
class Seen:
    """One request as the Web API received it (a `$batch` part too), and the status it was answered."""

    method: str
    path: str  # percent-encoded, from the API root (`/api/data/v9.2/...`)
    query: str  # raw, percent-encoded
    prefer: str | None
    status: int
    in_batch: bool = False


@dataclass
class WebApiOptions:
    org_url: str  # e.g. https://127.0.0.1:8443 (what tokens must be issued for)
    withdrawn_privileges: set[str] = field(default_factory=set)
    max_batch: int = 1000
    corrupt: frozenset[str] = frozenset()  # malformed data on the way out (sandbox/corrupt.py)


class WebApi:
    """Routes a Request to the store. `authenticate(request) -> user id` raises on a bad token."""

    def __init__(self, store_ref: Callable[[], Store], options: WebApiOptions,
                 authenticate: Callable[[Request], str], protection: Any) -> None:
        self.store_ref = store_ref
        self.options = options
        self.authenticate = authenticate
        self.protection = protection
        self.counts: Counter[str] = Counter()  # requests per route kind, for tests and benchmarks
        self._count_lock = threading.Lock()
        self.seen: list[Seen] | None = None  # a list here records every request (tests of l2c's request shapes)

    def record(self, request: Request, status: int, *, in_batch: bool = False) -> None:
        if self.seen is not None:
            with self._count_lock:
                self.seen.append(Seen(request.method, request.path, request.query, request.headers.get("Prefer"),
                                      status, in_batch))

    def count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    def stats_operations(self, n: int) -> None:
        self.count("batch_operations", n)

    @property
    def base(self) -> str:
        return self.options.org_url.rstrip("/") + API_PREFIX.rstrip("/")

    def __call__(self, request: Request) -> Response:
        try:
            user = self.authenticate(request)
        except InvalidToken as exc:
            return exc.response
        except ODataError as exc:  # a valid token whose principal the org refuses (403, sandbox/runtime.py)
            self.record(request, exc.status)
            return self._stamped(error_response(exc.status, exc.code, exc.message, request.headers.get("Prefer")))
        return self.admitted(request, user)

    def admitted(self, request: Request, user: str) -> Response:
        self.count("requests")
        try:
            with self.protection.admit(user):
                response = self.dispatch(request, user)
        except Throttled as exc:
            self.count("throttled")
            return exc.response
        except ODataError as exc:
            response = error_response(exc.status, exc.code, exc.message, request.headers.get("Prefer"))
        self.record(request, response.status)
        response.headers.extend(self.protection.headers(user))
        return self._stamped(response)

    def _stamped(self, response: Response) -> Response:
        store = self.store_ref()
        response.headers.append(("Date", format_datetime(store.clock.astimezone(UTC), usegmt=True)))
        response.headers.append(("OData-Version", "4.0"))
        response.headers.append(("REQ_ID", str(uuid.uuid4())))
        return response

    # --- routing -----------------------------------------------------------------------------------------

    def dispatch(self, request: Request, user: str) -> Response:
        path = unquote(request.path[len(API_PREFIX):]) if request.path.startswith(API_PREFIX) else None
        if path is None:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{request.path}'.")
        self.count("route:" + re.split(r"[/(?]", path, maxsplit=1)[0])
        if path == "$batch":
            if request.method != "POST":
                raise ODataError(405, "0x80060888", "The requested resource does not support http method "
                                 f"'{request.method}'.")
            return handle_batch(self, request, user, self.options.max_batch)
        if request.method != "GET":
            raise ODataError(405, "0x80060888", "The sandbox org is read-only: only GET and POST $batch are "
                             "emulated.")
        store = self.store_ref()
        params = request.query_params()
        prefer = request.headers.get("Prefer")
        if path == "WhoAmI" or path == "WhoAmI()":
            return self._whoami(store)
        if path == "EntityDefinitions":
            return self._metadata(Addressed(ENTITY, False, "EntityDefinitions"), entity_rows(store), params, prefer)
        match = ENTITY_DEF.match(path)
        if match:
            return self._entity_definition(store, match, params, prefer)
        match = AUDIT_DETAILS.match(path)
        if match:
            return self._audit_details(store, match.group("id"), prefer)
        match = CHANGE_HISTORY.match(path)
        if match:
            return self._change_history(store, params, prefer)
        if path.endswith("/$count"):
            return self._count(store, path[: -len("/$count")], params, prefer)
        match = ROW_PATH.match(path)
        if match:
            return self._single(store, match.group("set"), match.group("id"), params, prefer)
        if "/" in path or "(" in path:
            segment = path.split("/")[0].split("(")[0]
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{segment}'.")
        return self._collection(store, path, request, params, prefer)

    def _check_read(self, table: Table) -> None:
        if table.logical_name == "audit":
            self._require(PRV_AUDIT_SUMMARY, table)

    def _require(self, privilege: str, table: Table) -> None:
        if privilege in self.options.withdrawn_privileges:
            store = self.store_ref()
            # Inferred from the real "Principal user ... is missing prv... privilege" texts (DATAVERSE.md).
            raise ODataError(403, "0x80040220", (
                f"Principal user (Id={store.org.meta.app_user_id}, type=8, roleCount=1, privilegeCount=412, "
                f"accessMode=4), is missing {privilege} privilege (Id={PRIVILEGE_IDS[privilege]}) on "
                f"OTC={table.object_type_code} for entity '{table.logical_name}'."
            ))

    # --- handlers ----------------------------------------------------------------------------------------

    def _whoami(self, store: Store) -> Response:
        meta = store.org.meta
        return json_response(200, {
            "@odata.context": f"{self.base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
            "BusinessUnitId": meta.business_unit_id,
            "UserId": meta.app_user_id,
            "OrganizationId": meta.organization_id,
        })

    def _metadata(self, addressed: Addressed, rows: list[dict[str, Any]], params: list[tuple[str, str]],
                  prefer: str | None) -> Response:
        value, context = query_metadata(addressed, rows, params, prefer)
        if not addressed.single:
            return json_response(200, {"@odata.context": f"{self.base}/$metadata#{context}", "value": value})
        if not value:  # the one row addressed is not of the cast's type
            raise ODataError(404, "0x80060888", "Resource not found for the segment 'Attributes'.")
        return json_response(200, {"@odata.context": f"{self.base}/$metadata#{context}", **value[0]})

    def _entity_definition(self, store: Store, match: re.Match[str], params: list[tuple[str, str]],
                           prefer: str | None) -> Response:
        """`EntityDefinitions(<key>)`, its `/Attributes` (optionally one of them, by LogicalName or MetadataId)
        and a cast of either to a derived AttributeMetadata type ([PD] webapi/query-metadata-web-api.md)."""
        rows = entity_rows(store)
        name, mid = match.group("name"), match.group("mid")
        found = [r for r in rows if (name and r["LogicalName"] == name) or (mid and r["MetadataId"] == mid)]
        if not found:
            raise ODataError(404, "0x80060888", f"Could not find entity with key '{name or mid}'.")
        logical = found[0]["LogicalName"]
        key = f"('{logical}')" if name else f"({mid})"
        if not match.group("attrs"):
            if match.group("cast"):
                raise ODataError(404, "0x80060888", f"Resource not found for the segment '{match.group('cast')}'.")
            return self._metadata(Addressed(ENTITY, True, "EntityDefinitions"), found, params, prefer)
        cast = attribute_cast(match.group("cast"))
        attributes = attribute_rows(TABLES[logical])
        context = f"EntityDefinitions{key}/Attributes"
        one, one_mid = match.group("attr"), match.group("attr_mid")
        if one or one_mid:
            attributes = [a for a in attributes if a["LogicalName"] == one or a["MetadataId"] == one_mid]
            if not attributes:
                raise ODataError(404, "0x80060888", f"Could not find attribute with key '{one or one_mid}'.")
        if cast != ATTRIBUTE:
            context += f"/Microsoft.Dynamics.CRM.{cast}"
        return self._metadata(Addressed(cast, bool(one or one_mid), context), attributes, params, prefer)

    def _count(self, store: Store, entity_set: str, params: list[tuple[str, str]],
               prefer: str | None) -> Response:
        """`<set>/$count` as plain text: the rows its $filter matches (OData URL conventions 4.8), or, with a
        delta link's $deltatoken, the number of changes since it ([PD] use-change-tracking-synchronize-data-
        external-systems.md, "Retrieve count of the changes made in tables using Web API")."""
        served = store.table_for_set(entity_set)
        self._check_read(served.table)
        parsed = odata.parse_query(served.table, params, prefer)
        if parsed.deltatoken is not None:
            store.check_tracking(served.table)
            version, issued = paging.decode_deltatoken(parsed.deltatoken)
            store.check_delta_token(version, issued)
            count = store.delta_count(served, version)
        else:
            frame = served.frame if parsed.filter is None else served.frame.filter(parsed.filter)
            count = frame.height
        return Response(200, [("Content-Type", "text/plain")], str(min(count, MAX_COUNT)).encode())

    def _single(self, store: Store, entity_set: str, key: str, params: list[tuple[str, str]],
                prefer: str | None) -> Response:
        served = store.table_for_set(entity_set)
        self._check_read(served.table)
        parsed = odata.parse_query(served.table, params, prefer)
        row = store.row_by_id(served, key)
        if row is None:
            raise ODataError(404, "0x80040217",
                             f"{served.table.logical_name} With Id = {key.lower()} Does Not Exist")
        columns = self._columns(served.table, parsed.select)
        body = {"@odata.context": f"{self.base}/$metadata#{entity_set}{self._select_suffix(parsed.select)}"
                                  "/$entity",
                **render_entity(store, served.table, row, columns, self._annotations(parsed))}
        return json_response(200, body, self._applied(parsed))

    def _collection(self, store: Store, entity_set: str, request: Request, params: list[tuple[str, str]],
                    prefer: str | None) -> Response:
        served = store.table_for_set(entity_set)
        table = served.table
        self._check_read(table)
        parsed = odata.parse_query(table, params, prefer)
        columns = self._columns(table, parsed.select)
        ann = self._annotations(parsed)
        context = f"{self.base}/$metadata#{entity_set}{self._select_suffix(parsed.select)}"
        if parsed.deltatoken is not None:
            return self._delta(store, served, request, parsed, columns, ann, context)
        start = None
        if parsed.track_changes:
            store.check_tracking(table)
            start = self._tracking_start(store, paging.decode_skiptoken(parsed.skiptoken) if parsed.skiptoken else None)
        page, next_token, total = store.query(
            served, filter_expr=parsed.filter, orderby=parsed.orderby, page_size=parsed.page_size,
            skiptoken=parsed.skiptoken, top=None if parsed.page_size_requested else parsed.top,
            count=parsed.count, istracking=parsed.track_changes, tracking_start=start,
        )
        body: dict[str, Any] = {"@odata.context": context}
        if total is not None:
            body["@odata.count"] = min(total, MAX_COUNT)
        # Any entity set, when the annotations are asked for: the $count value (else -1) and whether more rows
        # than 5,000 match ([PD] webapi/query/count-rows.md).
        wanted = parsed.prefer.annotations
        if wanted.includes(f"{CRM}.totalrecordcount"):
            body[f"@{CRM}.totalrecordcount"] = -1 if total is None else min(total, MAX_COUNT)
        if wanted.includes(f"{CRM}.totalrecordcountlimitexceeded"):
            body[f"@{CRM}.totalrecordcountlimitexceeded"] = total is not None and total > MAX_COUNT
        body["value"] = [render_entity(store, table, row, columns, ann) for row in page.iter_rows(named=True)]
        body["value"] = corrupt.rows(self.options.corrupt, store, table, body["value"])
        if next_token is not None:
            body["@odata.nextLink"] = paging.next_link(self.base + "/" + entity_set, request.query, next_token)
        elif start is not None:
            # The delta link's starting point is the initial request: "An empty JSON response is returned if no
            # table changes have occurred after the initial change tracking request was called" ([PD]
            # use-change-tracking-synchronize-data-external-systems.md). So a row changed while the sync paged
            # (after its page was read, a day later for a resumed sync) comes in the first delta; a token of
            # the version at the last page would lose it.
            token = paging.encode_deltatoken(*start)
            body["@odata.deltaLink"] = paging.delta_link(self.base + "/" + entity_set, request.query, token)
        return json_response(200, body, self._applied(parsed))

    @staticmethod
    def _tracking_start(store: Store, cookie: paging.PagingCookie | None) -> tuple[int, datetime]:
        """(version, time) of a tracking read's first request: now, or what its nextLink's cookie carries."""
        if cookie is not None:
            return paging.tracking_start(cookie)
        return store.delta_version(), store.clock

    def _delta(self, store: Store, served: ServedTable, request: Request, parsed: odata.ParsedQuery,
               columns: list[Any], ann: Annotations, context: str) -> Response:
        store.check_tracking(served.table)
        version, issued = paging.decode_deltatoken(parsed.deltatoken or "")
        store.check_delta_token(version, issued)
        cookie = paging.decode_skiptoken(parsed.skiptoken) if parsed.skiptoken else None
        after = paging.delta_position(cookie) if cookie is not None else None
        start = self._tracking_start(store, cookie)
        rows, deletions, more = store.delta(served, version, start[0], parsed.page_size, after)
        value: list[dict[str, Any]] = [render_entity(store, served.table, row, columns, ann)
                                       for row in rows.iter_rows(named=True)] if rows.height else []
        value = corrupt.rows(self.options.corrupt, store, served.table, value)
        entity_set = served.table.entity_set
        for gone in deletions:
            value.append({"@odata.context": f"{self.base}/$metadata#{entity_set}/$deletedEntity",
                          "id": gone["id"], "reason": "deleted"})
        body: dict[str, Any] = {"@odata.context": f"{context}/$delta", "value": value}
        if more is not None:
            token = paging.encode_delta_skiptoken(*more, start)
            body["@odata.nextLink"] = paging.next_link(self.base + "/" + entity_set, request.query, token)
        else:
            token = paging.encode_deltatoken(*start)  # as the initial sync's: see _collection
            body["@odata.deltaLink"] = paging.delta_link(self.base + "/" + entity_set, request.query, token)
        return json_response(200, body, self._applied(parsed))

    def _audit_details(self, store: Store, auditid: str, prefer: str | None) -> Response:
        audit_table = TABLES["audit"]
        self._require(PRV_RECORD_HISTORY, audit_table)
        row = store.audit_row(auditid)
        if row is None:
            raise ODataError(404, "0x80040217", f"audit With Id = {auditid.lower()} Does Not Exist")
        ann = self._annotations(odata.parse_query(audit_table, [], prefer))
        return json_response(200, {
            "@odata.context": f"{self.base}/$metadata#Microsoft.Dynamics.CRM.RetrieveAuditDetailsResponse",
            "AuditDetail": corrupt.detail(self.options.corrupt, store, row["auditid"], self._detail(store, row, ann)),
        })

    def _detail(self, store: Store, row: dict[str, Any], ann: Annotations) -> dict[str, Any]:
        table = TABLES[row["objecttypecode"]]
        return {
            "@odata.type": "#Microsoft.Dynamics.CRM.AttributeAuditDetail",
            "InvalidNewValueAttributes": [],
            "LocLabelLanguageCode": 0,
            "DeletedAttributes": {"Count": 0, "Keys": [], "Values": []},
            "OldValue": render_detail_values(store, table, row["_old"], ann),
            "NewValue": render_detail_values(store, table, row["_new"], ann),
        }

    def _change_history(self, store: Store, params: list[tuple[str, str]], prefer: str | None) -> Response:
        self._require(PRV_RECORD_HISTORY, TABLES["audit"])
        aliases = dict(params)
        try:
            target = alias_json(aliases.get("@target", "")).get("@odata.id", "")
            info = alias_json(aliases.get("@paginginfo", "") or "{}")
        except (ValueError, AttributeError):
            raise ODataError(400, "0x0", "Invalid JSON in the @target or @paginginfo parameter alias.") from None
        match = TARGET.match(target.strip().split("/")[-1])
        if not match:
            raise ODataError(400, "0x0", f"Invalid Target '{target}': expected '<entityset>(<id>)'.")
        served = store.table_for_set(match.group("set"))
        audits = store.record_audits(served.table.logical_name, match.group("id"))
        count = int(info.get("Count", 50) or 50)
        page_number = int(info.get("PageNumber", 1) or 1)
        cookie = info.get("PagingCookie")
        start = paging.decode_history_cookie(cookie) if cookie else (page_number - 1) * count
        chunk = audits.slice(start, count)
        ann = self._annotations(odata.parse_query(TABLES["audit"], [], prefer))
        more = start + chunk.height < audits.height
        collection: dict[str, Any] = {
            "MoreRecords": more,
            "PagingCookie": paging.encode_history_cookie(page_number, start + chunk.height),
            "TotalRecordCount": audits.height if info.get("ReturnTotalRecordCount") else -1,
            # The Web API's AttributeAuditDetail carries no AuditRecord (no time, no user):
            # [PD] auditing/retrieve-audit-data.md, note under RetrieveAttributeChangeHistory.
            "AuditDetails": [self._detail(store, row, ann) for row in chunk.iter_rows(named=True)],
        }
        return json_response(200, {
            "@odata.context": f"{self.base}/$metadata#Microsoft.Dynamics.CRM.RetrieveRecordChangeHistoryResponse",
            "AuditDetailCollection": collection,
        })

    # --- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def _columns(table: Table, select: Sequence[str] | None) -> list[Any]:
        if not select:
            return [c for c in table.columns]
        chosen = [table.by_api_name[name] for name in select]
        pk = table.by_name[table.primary_id]
        return chosen if pk in chosen else [*chosen, pk]  # the key always comes back

    @staticmethod
    def _select_suffix(select: Sequence[str] | None) -> str:
        return f"({','.join(select)})" if select else ""

    @staticmethod
    def _annotations(parsed: odata.ParsedQuery) -> Annotations:
        return Annotations(formatted=parsed.formatted_values, lookup=parsed.lookup_annotations)

    @staticmethod
    def _applied(parsed: odata.ParsedQuery) -> list[tuple[str, str]]:
        return [("Preference-Applied", value) for value in parsed.preference_applied]


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'((?:[^\'\\]|\\.)*)\'')


def alias_json(text: str) -> Any:
    """A parameter alias's JSON value. ODataLib's JSON reader also takes single-quoted strings, which is how
    the docs write them: `@target={ '@odata.id':'accounts(<id>)'}` ([PD] auditing/retrieve-audit-data.md)."""
    def requote(m: re.Match[str]) -> str:
        single = m.group(1)
        return m.group(0) if single is None else '"' + single.replace("\\'", "'").replace('"', '\\"') + '"'
    return json.loads(_JSON_STRING.sub(requote, text))
