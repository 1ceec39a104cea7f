"""The audit history of the declared tables, and the old/new values the activity rules need.

Audit rows are read by a `createdon` watermark (closed lower bound with an overlap, capped at the server
time of the first page, rows already landed dropped by auditid). A first backfill is split into createdon
ranges read side by side. The Web API's audit rows carry no old/new values ([PD]
auditing/retrieve-audit-data.md: `changedata` is not exposed); those come from `RetrieveAuditDetails`, asked
only for the Update rows whose attributemask names a column listed in `audit_columns`, in `$batch` requests
(a batch counts once against the request limit, [PD] api-limits.md). Details are "needed minus landed", so
a killed run simply fetches what is still missing. Without the audit privilege the run goes on without
audit and says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from config.tables import TablesConfig
from connector import rows as rowmod
from connector.lake import Lake
from connector.metadata import TableMeta
from connector.odata import Client, Query, datetime_literal, literal, pages, prefer, stored_link
from connector.state import StateStore
from connector.sync import state_time
from l2c.errors import PermissionDenied

log = logging.getLogger("l2c.audit")

AUDIT = "audit"
DETAILS = "audit_details"
AUDIT_COLUMNS = ["auditid", "createdon", "operation", "action", "objecttypecode", "objectid", "userid",
                 "callinguserid", "attributemask", "transactionid"]
OP_UPDATE, OP_DELETE = 2, 3
BATCH_SIZE = 500
NEEDED_SCHEMA = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "_objectid_value": pl.Utf8}
DETAIL_SCHEMA = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8,
                 "new_values": pl.Utf8}


@dataclass
class AuditResult:
    rows: int = 0
    pages: int = 0
    details: int = 0
    deletions: dict[str, int] = field(default_factory=dict)
    available: bool = True
    details_available: bool = True
    notes: list[str] = field(default_factory=list)
    before: str | None = None
    after: str | None = None


def mask_numbers(mask: str | None) -> set[int]:
    """attributemask as the Web API gives it ("47,45,2") or as the SQL column stores it (",47,45,2,")."""
    if not mask:
        return set()
    return {int(part) for part in mask.strip().strip(",").split(",") if part.strip().isdigit()}


def sync_audit(client: Client, lake: Lake, states: StateStore, tables: TablesConfig, metas: dict[str, TableMeta],
               *, run_id: str, page_size: int, since: datetime | None, watermark_tables: set[str],
               batch_get: Any) -> AuditResult:
    result = AuditResult()
    audited = [t for t in tables.audited if t.name in metas]
    if not audited or AUDIT not in metas:
        result.available = False
        return result
    meta = metas[AUDIT]
    state = states.load(AUDIT)
    result.before = state.watermark
    overlap = timedelta(seconds=tables.defaults.watermark_overlap_seconds)
    types = " or ".join(f"objecttypecode eq {literal(t.name)}" for t in audited)
    resume = state.resume
    if resume:
        stream, url, page_no = resume["stream"], resume["next_link"], int(resume["page_no"])
        signpost = datetime.fromisoformat(resume["started_at"])
    else:
        lower = datetime.fromisoformat(state.watermark) - overlap if state.watermark else since
        condition = f"({types})" + (f" and createdon ge {datetime_literal(lower)}" if lower else "")
        select = [meta.api_name(c) for c in AUDIT_COLUMNS]
        url = Query(meta.entity_set, select, filter=condition, orderby="createdon asc,auditid asc").url()
        stream, page_no, signpost = f"audit-{run_id}", 1, None
    specs = rowmod.column_specs(meta.attributes, [meta.api_name(c) for c in AUDIT_COLUMNS])
    try:
        for page in pages(client, url, prefer(page_size), kind="audit", start_page=page_no):
            signpost = signpost or page.server_time
            frame, bad = rowmod.to_frame(page.records, specs)
            if frame.height:
                known = lake.versions(AUDIT, "auditid", frame.get_column("auditid"))
                if known.height:
                    frame = frame.join(known.select("auditid"), on="auditid", how="anti")
            if frame.height:
                lake.write_page(AUDIT, stream, page.number, frame, run_id=run_id, extracted_at=page.server_time)
                _deletions(lake, frame, metas, watermark_tables, stream, page.number, run_id, result)
            if bad:
                lake.write_quarantine(AUDIT, stream, page.number, bad, run_id=run_id, extracted_at=page.server_time)
            result.rows += frame.height
            result.pages += 1
            state = states.load(AUDIT)
            state.mode = "watermark"
            if page.next_link:
                state.resume = {"stream": stream, "next_link": stored_link(page.next_link) or "",
                                "page_no": page.number + 1, "started_at": state_time(signpost)}
            else:
                state.watermark = state_time(signpost) if signpost else state.watermark
                state.resume, state.last_error = None, None
                state.last_success = state.watermark
            states.save(state)
    except PermissionDenied as exc:
        result.available = False
        result.notes.append(f"audit history not readable ({_privilege(str(exc))}): events fall back to "
                            "snapshot differences and record dates; deletions are seen only through change "
                            "tracking")
        return result
    result.after = states.load(AUDIT).watermark
    _details(client, lake, tables, metas, run_id=run_id, result=result, batch_get=batch_get)
    return result


def _privilege(message: str) -> str:
    for name in ("prvReadAuditSummary", "prvReadRecordAuditHistory"):
        if name in message:
            return f"{name} missing"
    return "permission denied"


def _deletions(lake: Lake, frame: pl.DataFrame, metas: dict[str, TableMeta], watermark_tables: set[str],
               stream: str, page_no: int, run_id: str, result: AuditResult) -> None:
    """Tables read by watermark see deletions only here, at the real delete time from the audit row."""
    deletes = frame.filter(pl.col("operation") == OP_DELETE)
    for table in watermark_tables:
        rows = deletes.filter(pl.col("objecttypecode") == table)
        if rows.height == 0 or table not in metas:
            continue
        pk = metas[table].primary_id
        gone = rows.select(pl.col("_objectid_value").alias(pk), pl.col("createdon").alias("_deleted_at"))
        lake.write_page(table, f"audit-deletes-{stream}", page_no, gone, run_id=run_id,
                        extracted_at=None, kind="deletions")
        result.deletions[table] = result.deletions.get(table, 0) + rows.height


def mask_hits(mask: pl.Expr, numbers: list[int]) -> pl.Expr:
    """Vectorised `mask_numbers(mask) & numbers` is not empty."""
    parts = mask.str.strip_chars(" ,").str.split(",").list.eval(pl.element().str.strip_chars().cast(pl.Int64,
                                                                                                     strict=False))
    return parts.list.eval(pl.element().is_in(numbers)).list.any().fill_null(False)


def needed_details(lake: Lake, tables: TablesConfig, metas: dict[str, TableMeta]) -> pl.DataFrame:
    """Audit rows (auditid, objecttypecode) whose details an audit column needs and that are not landed."""
    if not lake.has_rows(AUDIT):
        return pl.DataFrame(schema=NEEDED_SCHEMA)
    audit = lake.scan(AUDIT)
    wanted: list[pl.DataFrame] = []
    for cfg in tables.audited:
        if not cfg.audit_columns or cfg.name not in metas:
            continue
        numbers = list(metas[cfg.name].column_numbers(cfg.audit_columns))
        hits = (audit.filter((pl.col("objecttypecode") == cfg.name) & (pl.col("operation") == OP_UPDATE)
                             & mask_hits(pl.col("attributemask"), numbers))
                .select("auditid", "objecttypecode", "_objectid_value").unique("auditid").collect())
        wanted.append(hits)
    if not wanted:
        return pl.DataFrame(schema=NEEDED_SCHEMA)
    needed = pl.concat(wanted)
    if lake.has_rows(DETAILS):
        landed = lake.scan(DETAILS).select("auditid").unique().collect()
        needed = needed.join(landed, on="auditid", how="anti")
    return needed.sort("auditid")


def _details(client: Client, lake: Lake, tables: TablesConfig, metas: dict[str, TableMeta], *, run_id: str,
             result: AuditResult, batch_get: Any) -> None:
    needed = needed_details(lake, tables, metas)
    if needed.height == 0:
        return
    ids = needed.get_column("auditid").to_list()
    types = dict(zip(ids, needed.get_column("objecttypecode").to_list(), strict=True))
    objects = dict(zip(ids, needed.get_column("_objectid_value").to_list(), strict=True))
    stream = f"details-{run_id}"
    for number, start in enumerate(range(0, len(ids), BATCH_SIZE), start=1):
        chunk = ids[start:start + BATCH_SIZE]
        try:
            replies = batch_get([f"audits({a})/Microsoft.Dynamics.CRM.RetrieveAuditDetails" for a in chunk],
                                prefer=['odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'],
                                kind="audit_detail")
        except PermissionDenied as exc:
            result.details_available = False
            result.notes.append(f"audit details not readable ({_privilege(str(exc))}): state changes come from "
                                "audit actions and snapshot differences only")
            return
        records = []
        for auditid, reply in zip(chunk, replies, strict=True):
            if reply.status == 403:
                result.details_available = False
                result.notes.append("audit details not readable (prvReadRecordAuditHistory missing)")
                return
            if reply.status != 200:
                log.warning("RetrieveAuditDetails(%s) answered %s; skipped this run", auditid, reply.status)
                continue
            detail = reply.json.get("AuditDetail", {})
            records.append({"auditid": auditid, "objecttypecode": types[auditid],
                            "objectid": objects[auditid],
                            "old_values": json.dumps(_values(detail.get("OldValue")), default=str),
                            "new_values": json.dumps(_values(detail.get("NewValue")), default=str)})
        if records:
            frame = pl.DataFrame(records, schema=DETAIL_SCHEMA)
            lake.write_page(DETAILS, stream, number, frame, run_id=run_id, extracted_at=None)
            result.details += frame.height


def _values(entity: dict[str, Any] | None) -> dict[str, Any]:
    if not entity:
        return {}
    return {k: v for k, v in entity.items() if not k.startswith("@")}
