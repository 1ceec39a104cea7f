"""The emulator's read model: an OrgData made queryable the way the Dataverse Web API answers.

Each table is a polars frame sorted by its primary key in SQL Server uniqueidentifier order (Dataverse's
default order, [PD] webapi/query/page-results.md); queries filter and order it, and paging is keyset paging
after the cookie's last row, so rows inserted between two page requests appear or not exactly as on a real
org. Change tracking reads row versions: a delta token names the version it was issued at, and the delta
answer is the rows changed after it, oldest change first, then the deletions
([PD] use-change-tracking-synchronize-data-external-systems.md). Rendering to JSON (annotations included)
happens per page, so the cost is proportional to what is served.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from sandbox import paging
from sandbox.odata import CRM_CODE, ODataError
from sandbox.orgdata import OrgData
from sandbox.schema import CHOICE_TYPES, DISPLAY_NAMES, ENTITY_SETS, TABLES, Column, Table

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAV_PROPERTY = "Microsoft.Dynamics.CRM.associatednavigationproperty"

# Error texts of the change tracking paths (DATAVERSE.md, "Change tracking").
CT_DISABLED = "0x80072491"
CT_EXPIRED = "0x80044352"


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cookie: str | None  # encoded $skiptoken for the next page, None on the last page
    count: int | None = None


class ServedTable:
    """One table's rows, sorted by primary key, with lazily built alternative orders."""

    def __init__(self, table: Table, frame: pl.DataFrame) -> None:
        self.table = table
        self.frame = paging.sort_frame(frame, table, ())
        self._orders: dict[tuple[tuple[str, bool], ...], pl.DataFrame] = {(): self.frame}
        self._keys: dict[tuple[tuple[str, bool], ...], pl.DataFrame] = {}
        self._lock = threading.Lock()

    def ordered(self, orderby: list[tuple[str, bool]] | tuple[tuple[str, bool], ...]) -> pl.DataFrame:
        key = tuple(orderby)
        with self._lock:
            if key not in self._orders:
                self._orders[key] = paging.sort_frame(self.frame, self.table, key)
            return self._orders[key]

    def keys(self, orderby: list[tuple[str, bool]] | tuple[tuple[str, bool], ...]) -> pl.DataFrame:
        """`paging.sort_keys` of `ordered(orderby)`, row for row."""
        frame, key = self.ordered(orderby), tuple(orderby)
        with self._lock:
            if key not in self._keys:
                self._keys[key] = paging.sort_keys(frame, self.table, key)
            return self._keys[key]


def _mask(frame: pl.DataFrame, predicate: pl.Expr) -> pl.Series:
    """`predicate` over `frame` as one boolean per row (null as false, as `filter` reads it; a literal broadcast)."""
    return frame.with_columns(predicate.fill_null(False).alias("__mask")).get_column("__mask")


class Store:
    """Read-only view of one OrgData; swapped whole when the sandbox clock advances."""

    def __init__(self, org: OrgData, *, change_tracking_off: Iterable[str] = (), base_url: str = "") -> None:
        self.org = org
        self.clock = org.clock
        self.change_tracking_off = set(change_tracking_off)
        self.tables: dict[str, ServedTable] = {}
        for name, frame in org.rows.items():
            self.tables[name] = ServedTable(TABLES[name], frame)
        audit_frame = org.audits.sort("_version")
        self.tables["audit"] = ServedTable(TABLES["audit"], audit_frame)
        self.audit_by_id = {
            a: i for i, a in enumerate(self.tables["audit"].frame.get_column("auditid").to_list())
        }
        self.deleted = org.deleted.sort("version")
        self.names = self._lookup_names()

    # --- lookups -----------------------------------------------------------------------------------------

    def _lookup_names(self) -> dict[str, dict[str, str]]:
        """id -> primary name per table, for lookup FormattedValue annotations."""
        names: dict[str, dict[str, str]] = {}
        for name, served in self.tables.items():
            primary = served.table.primary_name
            if primary is None:
                continue
            frame = served.frame.select(served.table.primary_id, primary)
            names[name] = dict(zip(frame.get_column(served.table.primary_id).to_list(),
                                   frame.get_column(primary).to_list(), strict=True))
        return names

    def table_for_set(self, entity_set: str) -> ServedTable:
        table = ENTITY_SETS.get(entity_set)
        if table is None or table.logical_name not in self.tables:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{entity_set}'.")
        return self.tables[table.logical_name]

    def row_by_id(self, served: ServedTable, key: str) -> dict[str, Any] | None:
        pk = served.table.primary_id
        hit = served.frame.filter(pl.col(pk) == key.lower())
        return hit.row(0, named=True) if hit.height else None

    # --- queries -----------------------------------------------------------------------------------------

    def query(self, served: ServedTable, *, filter_expr: pl.Expr | None,
              orderby: tuple[tuple[str, bool], ...], page_size: int, skiptoken: str | None, top: int | None,
              count: bool, istracking: bool = False,
              tracking_start: tuple[int, datetime] | None = None) -> tuple[pl.DataFrame, str | None, int | None]:
        # Which rows qualify is a mask over the columns the filter and the keyset read; only the page's rows are
        # then taken from the frame (filtering the frame itself copied every qualifying row of every column on
        # every page: at 1M leads, 40 % of the emulator's time went into the audit listing's keyset filters).
        frame = served.ordered(orderby)
        mask = None if filter_expr is None else _mask(frame, filter_expr)
        # uncapped: the caller caps it and says if it exceeded
        total = (frame.height if mask is None else int(mask.sum())) if count else None
        next_page = 2  # the first nextLink asks for page 2 ([PD] webapi/query/page-results.md)
        if skiptoken:
            cookie = paging.decode_skiptoken(skiptoken)
            next_page = cookie.page_number + 1
            after = _mask(served.keys(orderby), paging.keyset_predicate(served.table, orderby, cookie))
            mask = after if mask is None else mask & after
        limit = page_size if top is None else min(top, page_size)
        window = frame.head(limit + 1) if mask is None else frame[mask.arg_true().head(limit + 1)]
        page = window.head(limit)
        next_token = None
        if window.height > limit and (top is None or top > limit):
            next_token = paging.page_skiptoken(served.table, orderby, next_page, page, istracking, tracking_start)
        return page, next_token, total

    # --- change tracking ---------------------------------------------------------------------------------

    def check_tracking(self, table: Table) -> None:
        if not table.change_tracking or table.logical_name in self.change_tracking_off:
            raise ODataError(400, CT_DISABLED, f"Entity {table.logical_name} isn't enabled for change tracking.")
        if not table.delta_documented:
            # Inferred: the docs say change tracking is on (EntityDefinitions agrees) but show no tracked read of
            # this table, so the sandbox refuses one as it refuses any option it does not emulate.
            raise ODataError(400, CRM_CODE, f"Change tracking of {table.entity_set} is not supported by the sandbox.")

    def delta_version(self) -> int:
        return self.org.max_version

    def check_delta_token(self, version: int, issued: datetime) -> None:
        expiry = timedelta(days=self.org.meta.expire_change_tracking_days)
        if self.clock - issued > expiry or version > self.org.max_version:
            raise ODataError(
                400, CT_EXPIRED,
                "Version stamp associated with the client has expired. Please perform a full sync.",
            )

    def delta_count(self, served: ServedTable, since: int) -> int:
        """How many entries a delta from `since` holds: changed rows plus deletions."""
        changed = served.frame.filter(pl.col("versionnumber") > since).height
        table = served.table.logical_name
        return changed + self.deleted.filter((pl.col("table") == table) & (pl.col("version") > since)).height

    def delta(self, served: ServedTable, since: int, upto: int, page_size: int,
              after: tuple[int, int] | None) -> tuple[pl.DataFrame, list[dict[str, Any]], tuple[int, int] | None]:
        """Rows changed after `since` up to `upto` (the version when the delta was first asked for), by version,
        then deletions in the same range; keyset on (phase, version). A change made while the delta pages has
        a higher version: it comes in the next delta (whose token is `upto`), never lost between the two."""
        phase, last = after or (0, since)
        rows = pl.DataFrame()
        if phase == 0:
            changed = served.frame.filter(pl.col("versionnumber").is_between(last, upto, closed="right"))
            changed = changed.sort("versionnumber")
            rows = changed.head(page_size + 1)
            if rows.height > page_size:
                rows = rows.head(page_size)
                return rows, [], (0, int(rows.get_column("versionnumber")[-1]))
            last = since
        room = page_size - rows.height
        gone = self.deleted.filter((pl.col("table") == served.table.logical_name)
                                   & pl.col("version").is_between(last, upto, closed="right"))
        gone_page = gone.head(room + 1)
        more = gone_page.height > room
        gone_page = gone_page.head(room)
        deletions = gone_page.select("id", "version").to_dicts()
        if more:
            return rows, deletions, (1, int(gone_page.get_column("version")[-1]) if gone_page.height else last)
        return rows, deletions, None

    # --- audit details -----------------------------------------------------------------------------------

    def audit_row(self, auditid: str) -> dict[str, Any] | None:
        index = self.audit_by_id.get(auditid.lower())
        if index is None:
            return None
        return self.tables["audit"].frame.row(index, named=True)

    def record_audits(self, logical_name: str, record_id: str) -> pl.DataFrame:
        frame = self.tables["audit"].frame
        return frame.filter(
            (pl.col("objecttypecode") == logical_name) & (pl.col("_objectid_value") == record_id.lower())
        ).sort("_version")


# --- rendering ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotations:
    formatted: bool = False
    lookup: bool = False  # lookuplogicalname and associatednavigationproperty


def render_value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _format_number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def formatted_value(store: Store, column: Column, value: Any, row: dict[str, Any]) -> str | None:
    """The en-US FormattedValue annotation as Dataverse renders it for an app user in UTC."""
    if value is None:
        return None
    if column.type in CHOICE_TYPES or (column.options is not None):
        return (column.options or {}).get(value, str(value))
    if column.type == "EntityName":
        return DISPLAY_NAMES.get(value)
    if column.is_lookup:
        for target in column.targets:
            name = store.names.get(target, {}).get(value)
            if name is not None:
                return name
        return None
    if column.type == "Money":
        symbol = _currency_symbol(store, row.get("_transactioncurrencyid_value"))
        return f"{symbol}{_format_number(value, 2)}"
    if column.type == "Decimal":
        return _format_number(value, 2)
    if column.type in ("Integer", "BigInt"):
        return _format_number(value, 0)
    if column.type == "Boolean":
        return "Yes" if value else "No"
    if isinstance(value, datetime):
        local = value.astimezone(UTC)
        if column.date_only:
            return f"{local.month}/{local.day}/{local.year}"
        hour = local.hour % 12 or 12
        return f"{local.month}/{local.day}/{local.year} {hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    if isinstance(value, date):
        return f"{value.month}/{value.day}/{value.year}"
    return None


def _currency_symbol(store: Store, currency_id: str | None) -> str:
    if currency_id is None:
        return ""
    cache = store.__dict__.setdefault("_symbols", {})
    if not cache:
        frame = store.tables["transactioncurrency"].frame
        cache.update(zip(frame.get_column("transactioncurrencyid").to_list(),
                         frame.get_column("currencysymbol").to_list(), strict=True))
    return str(cache.get(currency_id, ""))


def render_entity(store: Store, table: Table, row: dict[str, Any], columns: list[Column],
                  ann: Annotations, *, etag: bool = True) -> dict[str, Any]:
    """One entity as the Web API serialises it: etag first, each annotation just before its property."""
    out: dict[str, Any] = {}
    if etag and "versionnumber" in row and row["versionnumber"] is not None:
        out["@odata.etag"] = f'W/"{row["versionnumber"]}"'
    for column in columns:
        name = column.api_name
        value = row.get(name)
        if value is not None:
            if ann.formatted:
                text = formatted_value(store, column, value, row)
                if text is not None:
                    out[f"{name}@{FORMATTED}"] = text
            if ann.lookup and column.is_lookup:
                if table.logical_name != "audit":
                    # The audit EntityType omits associatednavigationproperty ([PD] auditing/retrieve-audit-data.md).
                    out[f"{name}@{NAV_PROPERTY}"] = column.name
                out[f"{name}@{LOOKUP_LOGICAL}"] = _lookup_target(store, column, value, row)
        out[name] = render_value(column, value)
    return out


def _lookup_target(store: Store, column: Column, value: str, row: dict[str, Any]) -> str:
    if column.name == "objectid" and row.get("objecttypecode"):
        return str(row["objecttypecode"])
    for target in column.targets:
        if value in store.names.get(target, {}):
            return target
    return column.targets[0]


def render_detail_values(store: Store, table: Table, values_json: str, ann: Annotations) -> dict[str, Any]:
    """An OldValue/NewValue entity of an AttributeAuditDetail."""
    values = json.loads(values_json) if values_json else {}
    out: dict[str, Any] = {"@odata.type": f"#Microsoft.Dynamics.CRM.{table.logical_name}"}
    row = dict(values)
    for name, raw in values.items():
        column = table.column(name)
        if column is None:
            out[name] = raw
            continue
        typed = _parse_rendered(column, raw)
        rendered = render_entity(store, table, {name: typed, **{k: v for k, v in row.items() if k != name}},
                                 [column], ann, etag=False)
        out.update(rendered)
    return out


def _parse_rendered(column: Column, raw: Any) -> Any:
    if raw is None or column.type != "DateTime" or not isinstance(raw, str):
        return raw
    if len(raw) == 10:
        return date.fromisoformat(raw)
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))
