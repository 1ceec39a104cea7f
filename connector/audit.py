"""The audit history of the declared tables, and the old/new values the activity rules need.

Audit rows are read by a `createdon` watermark (closed lower bound with an overlap, capped at the server
time of the first page, rows already landed dropped by auditid). A first backfill is split into createdon
ranges read side by side. The Web API's audit rows carry no old/new values ([PD]
auditing/retrieve-audit-data.md: `changedata` is not exposed); those come from `RetrieveAuditDetails`, asked
only for the Update rows whose attributemask names a column an activity rule reads (or one listed in
`audit_columns`) and for the rare Delete rows, in `$batch` requests sent side by side (a batch counts once
against the request limit, [PD] api-limits.md) while the listing still pages (`_Details`). Every AuditDetail
lands whole, with its type (`detail_type`, `detail`); `old_values`/`new_values` are read from those that have
OldValue/NewValue (AttributeAuditDetail), null for the others (a relationship, a share, ...). An answer without an
AuditDetail object is quarantined, never landed as "no change". Details are "needed minus landed", so a killed
run, a quarantined answer or a rule added later simply fetches what is still missing (a details page lost from
the lake included). Without the audit privilege the run goes on without audit and says so. `read_again` makes
the next run read the audit history again from the start, e.g. when one of its landed pages was found missing or
damaged: a backfill over a lake that already holds audit rows drops those it re-reads, so only what was lost
lands again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import polars as pl

from config.tables import TablesConfig
from connector import rows as rowmod
from connector.lake import Lake
from connector.metadata import TableMeta
from connector.odata import Client, Query, datetime_literal, literal, pages, prefer, stored_link
from connector.state import Resume, StateStore, TableState
from connector.sync import state_time
from ground import stop
from ground.errors import PermissionDenied

log = logging.getLogger("l2c.audit")

AUDIT = "audit"
DETAILS = "audit_details"
# How audit rows are read, whatever EntityDefinitions says of the audit table's ChangeTrackingEnabled: the docs
# list Audit among the system tables with change tracking on ([PD] use-change-tracking-synchronize-data-external-
# systems.md) but show no tracked read of `audits` nor what it would answer. A createdon watermark needs no such
# promise and loses nothing: audit rows are only inserted ([PD] reference/entities/audit.md lists no Update
# message), and the watermark's overlap and auditid de-duplication cover rows committed late. So the audit stream
# never sends `Prefer: odata.track-changes`, and this does not depend on the org's metadata.
AUDIT_READ_MODE: Final = "watermark"
AUDIT_COLUMNS = ["auditid", "createdon", "operation", "action", "objecttypecode", "objectid", "userid",
                 "callinguserid", "attributemask", "transactionid"]
OP_UPDATE, OP_DELETE = 2, 3
BATCH_SIZE = 500
NEEDED_SCHEMA = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "_objectid_value": pl.Utf8}
# detail_type and detail came later: older pages without them read them as null (connector/lake.py `_scan`).
DETAIL_SCHEMA = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8,
                 "new_values": pl.Utf8, "detail_type": pl.Utf8, "detail": pl.Utf8}
TYPE_PREFIX = "#Microsoft.Dynamics.CRM."


@dataclass
class AuditResult:
    rows: int = 0
    pages: int = 0
    details: int = 0
    quarantined: int = 0  # audit rows and details that did not convert (raw/audit*/*/quarantine-*.parquet)
    deletions: dict[str, int] = field(default_factory=dict)
    available: bool = True
    details_available: bool = True
    notes: list[str] = field(default_factory=list)
    before: datetime | None = None  # the audit watermark at the start and at the end
    after: datetime | None = None


def mask_numbers(mask: str | None) -> set[int]:
    """attributemask as the Web API gives it ("47,45,2") or as the SQL column stores it (",47,45,2,")."""
    if not mask:
        return set()
    return {int(part) for part in mask.strip().strip(",").split(",") if part.strip().isdigit()}


@dataclass
class _Reader:
    """What every audit stream shares: where rows land and how they are typed and checked."""

    client: Client
    lake: Lake
    states: StateStore
    metas: dict[str, TableMeta]
    run_id: str
    page_size: int
    types: str
    watermark_tables: set[str]
    result: AuditResult
    lock: threading.Lock = field(default_factory=threading.Lock)
    landed: Callable[[pl.DataFrame], None] | None = None  # told each page's new rows once its state is saved

    @property
    def meta(self) -> TableMeta:
        return self.metas[AUDIT]

    def url(self, lower: datetime | None, upper: datetime | None) -> str:
        condition = f"({self.types})"
        if lower is not None:
            condition += f" and createdon ge {datetime_literal(lower)}"
        if upper is not None:
            condition += f" and createdon lt {datetime_literal(upper)}"
        select = [self.meta.api_name(c) for c in AUDIT_COLUMNS]
        return Query(self.meta.entity_set, select, filter=condition, orderby="createdon asc,auditid asc").url()

    def read(self, state_name: str, stream: str, url: str, page_no: int, signpost: datetime | None,
             *, dedupe: bool) -> datetime | None:
        """Page one query to its end, landing and checkpointing each page in `state_name`'s resume point."""
        specs = rowmod.column_specs(self.meta.attributes, [self.meta.api_name(c) for c in AUDIT_COLUMNS])
        for page in pages(self.client, url, prefer(self.page_size), kind="audit", start_page=page_no):
            signpost = signpost or page.server_time
            notes: list[rowmod.ShapeNote] = []
            frame, bad = rowmod.to_frame(page.records, specs, notes)
            if dedupe and frame.height:
                # An incremental read re-reads an overlap; a backfill over rows already landed, what they hold.
                known = self.lake.versions(AUDIT, "auditid", frame.get_column("auditid"))
                if known.height:
                    frame = frame.join(known.select("auditid"), on="auditid", how="anti")
            if frame.height:
                self.lake.write_page(AUDIT, stream, page.number, frame, run_id=self.run_id,
                                     extracted_at=page.server_time)
                _deletions(self.lake, frame, self.metas, self.watermark_tables, stream, page.number, self.run_id,
                           self.result, self.lock)
            if bad:
                self.lake.write_quarantine(AUDIT, stream, page.number, bad, run_id=self.run_id,
                                           extracted_at=page.server_time)
            if notes:
                self.lake.write_notes(AUDIT, stream, page.number, rowmod.notes_frame(page.records, notes, "auditid"),
                                      run_id=self.run_id, extracted_at=page.server_time)
            with self.lock:
                self.result.rows += frame.height
                self.result.pages += 1
                self.result.quarantined += len(bad)
            state = self.states.load(state_name)
            state.mode = AUDIT_READ_MODE
            if page.next_link:
                state.resume = Resume(stream=stream, next_link=stored_link(page.next_link) or "",
                                      page_no=page.number + 1, started_at=state_time(signpost))
            else:
                state.resume, state.last_error = None, None
                state.last_success = state_time(signpost)
            self.states.save(state)
            if self.landed is not None:
                self.landed(frame)
        return signpost


def sync_audit(client: Client, lake: Lake, states: StateStore, tables: TablesConfig, metas: dict[str, TableMeta],
               *, run_id: str, page_size: int, since: datetime | None, watermark_tables: set[str],
               batch_get: Any, max_ranges: int = 1,
               detail_columns: Mapping[str, Collection[str]] | None = None) -> AuditResult:
    result = AuditResult()
    audited = [t for t in tables.audited if t.name in metas]
    if not audited or AUDIT not in metas:
        result.available = False
        return result
    reader = _Reader(client, lake, states, metas, run_id, page_size,
                     " or ".join(f"objecttypecode eq {literal(t.name)}" for t in audited), watermark_tables, result)
    details = _Details(lake, run_id=run_id, result=result, result_lock=reader.lock, batch_get=batch_get,
                       workers=max_ranges, wanted=needed_filter(tables, metas, detail_columns))
    reader.landed = details.offer
    state = states.load(AUDIT)
    result.before = state.watermark
    try:
        try:
            if state.watermark is None and state.resume is None:
                _backfill(reader, since, max_ranges)
            else:
                _incremental(reader, tables)
        except PermissionDenied as exc:
            result.available = False
            result.notes.append(f"audit history not readable ({_privilege(str(exc))}): events fall back to "
                                "snapshot differences and record dates; deletions are seen only through change "
                                "tracking")
            return result
        result.after = states.load(AUDIT).watermark
        details.finish(lambda: needed_details(lake, tables, metas, detail_columns))
    finally:
        details.close()
    if result.quarantined:
        result.notes.append(f"{result.quarantined} quarantined (malformed audit rows or details, kept in "
                            "raw/audit*/*/quarantine-*.parquet)")
    return result


def read_again(states: StateStore) -> None:
    """Make the next audit read a backfill from the start (its rows already landed are dropped as re-read)."""
    states.save(TableState(table=AUDIT))


def _incremental(reader: _Reader, tables: TablesConfig) -> None:
    state = reader.states.load(AUDIT)
    if state.resume:
        resume = state.resume
        stream, url, page_no = resume.stream, resume.next_link, resume.page_no
        signpost: datetime | None = resume.started_at
    else:
        overlap = timedelta(seconds=tables.defaults.watermark_overlap_seconds)
        lower = state.watermark - overlap if state.watermark else None
        stream, url, page_no, signpost = f"audit-{reader.run_id}", reader.url(lower, None), 1, None
    signpost = reader.read(AUDIT, stream, url, page_no, signpost, dedupe=True)
    state = reader.states.load(AUDIT)
    state.watermark = state_time(signpost) if signpost else state.watermark
    reader.states.save(state)


def _range_name(index: int) -> str:
    return f"{AUDIT}-range-{index:02d}"


def _backfill(reader: _Reader, since: datetime | None, max_ranges: int) -> None:
    """First read: split [earliest, signpost) into createdon ranges paged side by side, each checkpointed in its
    own state; the audit watermark is set only when every range is complete."""
    state = reader.states.load(AUDIT)
    plans = [reader.states.load(_range_name(i)) for i in range(64)]
    plans = [p for p in plans if p.mode is not None]
    if state.signpost is None or not plans:
        probe = reader.client.get(reader.url(since, None).replace("?", "?$top=1&", 1), kind="audit")
        first = probe.json.get("value", [])
        signpost = probe.date or datetime.now(UTC)
        # A first row without a readable createdon (it lands in quarantine) cannot date the start: one range.
        lower = since or (_created(first[0]) if first else signpost)
        count = max(1, min(max_ranges, 64)) if first and lower is not None else 1
        bounds: list[datetime | None] = [None, signpost]
        if lower is not None:
            bounds = [lower + (signpost - lower) / count * i for i in range(count)] + [signpost]
        for index in range(count):
            plan = reader.states.load(_range_name(index))
            start = bounds[index]
            plan.mode, plan.watermark = AUDIT_READ_MODE, state_time(start) if start is not None else None
            plan.resume, plan.last_success = None, None
            # The last range has no upper bound: rows written while the run pages are read now, not lost.
            plan.signpost = state_time(bounds[index + 1]) if index + 1 < count else None
            reader.states.save(plan)
        state.signpost = state_time(signpost)
        reader.states.save(state)
        plans = [reader.states.load(_range_name(i)) for i in range(count)]
    # The ranges are disjoint, so a first backfill lands every row once as read. Over audit rows already landed
    # (a backfill resumed, or read again after a page was lost), the rows landed before are dropped as re-read;
    # what lands again may have its details landed still, so they are left to `finish` (needed minus landed).
    dedupe = reader.lake.has_rows(AUDIT)
    if dedupe:
        reader.landed = None

    def run(index: int, plan: TableState) -> None:
        if plan.last_success is not None:
            return
        name = _range_name(index)
        if plan.resume:
            resume = plan.resume
            reader.read(name, resume.stream, resume.next_link, resume.page_no, resume.started_at, dedupe=dedupe)
            return
        reader.read(name, f"audit-{reader.run_id}-r{index:02d}", reader.url(plan.watermark, plan.signpost), 1, None,
                    dedupe=dedupe)

    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="l2c-audit") as pool:
        for future in [pool.submit(run, i, plan) for i, plan in enumerate(plans)]:
            future.result()
    state = reader.states.load(AUDIT)
    state.mode, state.watermark, state.last_success = AUDIT_READ_MODE, state.signpost, state.signpost
    state.signpost, state.resume = None, None
    reader.states.save(state)
    for index in range(len(plans)):
        reader.states.path(_range_name(index)).unlink(missing_ok=True)


def _created(row: dict[str, Any]) -> datetime | None:
    try:
        created = datetime.fromisoformat(str(row.get("createdon")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo is not None else None


def _privilege(message: str) -> str:
    for name in ("prvReadAuditSummary", "prvReadRecordAuditHistory"):
        if name in message:
            return f"{name} missing"
    return "permission denied"


def _deletions(lake: Lake, frame: pl.DataFrame, metas: dict[str, TableMeta], watermark_tables: set[str],
               stream: str, page_no: int, run_id: str, result: AuditResult, lock: threading.Lock) -> None:
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
        with lock:
            result.deletions[table] = result.deletions.get(table, 0) + rows.height


def mask_hits(mask: pl.Expr, numbers: list[int]) -> pl.Expr:
    """Vectorised `mask_numbers(mask) & numbers` is not empty."""
    parts = mask.str.strip_chars(" ,").str.split(",").list.eval(pl.element().str.strip_chars().cast(pl.Int64,
                                                                                                     strict=False))
    return parts.list.eval(pl.element().is_in(numbers)).list.any().fill_null(False)


def needed_filter(tables: TablesConfig, metas: dict[str, TableMeta],
                  columns: Mapping[str, Collection[str]] | None = None) -> pl.Expr | None:
    """Audit rows whose details are needed: Update rows that change a column a rule reads (`columns`, see
    config.activities.detail_columns) or an `audit_columns` column, and every Delete row: its old values name
    the record's links (e.g. a quote's opportunity) even when the record was created and deleted between two
    runs. None when no audited table is known."""
    wanted: pl.Expr | None = None
    for cfg in tables.audited:
        if cfg.name not in metas:
            continue
        watched = sorted({*cfg.audit_columns, *(columns or {}).get(cfg.name, ())})
        numbers = list(metas[cfg.name].column_numbers(watched))
        changes = (pl.col("operation") == OP_UPDATE) & mask_hits(pl.col("attributemask"), numbers)
        hit = (pl.col("objecttypecode") == cfg.name) & (changes | (pl.col("operation") == OP_DELETE))
        wanted = hit if wanted is None else wanted | hit
    return wanted


def needed_details(lake: Lake, tables: TablesConfig, metas: dict[str, TableMeta],
                   columns: Mapping[str, Collection[str]] | None = None) -> pl.DataFrame:
    """Audit rows (auditid, objecttypecode, objectid) whose details are needed (`needed_filter`) and not landed."""
    wanted = needed_filter(tables, metas, columns)
    if not lake.has_rows(AUDIT) or wanted is None:
        return pl.DataFrame(schema=NEEDED_SCHEMA)
    needed = (lake.scan(AUDIT).filter(wanted).select("auditid", "objecttypecode", "_objectid_value")
              .unique("auditid").collect())
    if lake.has_rows(DETAILS):
        landed = lake.scan(DETAILS).select("auditid").unique().collect()
        needed = needed.join(landed, on="auditid", how="anti")
    return needed.sort("auditid")


class _Details:
    """RetrieveAuditDetails in `$batch` requests of BATCH_SIZE, sent side by side and landed as they answer.

    The audit listing `offer`s each page's needed rows as soon as that page and its resume point are saved, so
    detail batches fill the request slots the listing's serial nextLink chains leave idle; `finish` sends the
    last partial batch and asks for whatever else is needed and not landed (what a killed run missed).
    Offering only after the page's state is saved means a crash can never make a page's details land twice.
    At most 2 x workers batches are in flight or unlanded; `offer` waits for the oldest beyond that.
    """

    def __init__(self, lake: Lake, *, run_id: str, result: AuditResult, result_lock: threading.Lock, batch_get: Any,
                 workers: int, wanted: pl.Expr | None) -> None:
        self.lake, self.run_id, self.result, self.batch_get, self.wanted = lake, run_id, result, batch_get, wanted
        self.result_lock = result_lock  # the audit reader's: both update `result`
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="l2c-details")
        self.lock = threading.Lock()
        self.pending: list[tuple[str, str, str]] = []  # (auditid, objecttypecode, objectid) not yet sent
        self.in_flight: deque[Future[None]] = deque()
        self.sent: list[pl.Series] = []  # the auditids of every batch sent
        self.number = 0
        self.stopped = False  # details not readable: asked for no more

    def offer(self, frame: pl.DataFrame) -> None:
        """Queue the needed rows of a landed audit page; send every full batch."""
        if self.wanted is None or frame.height == 0 or self.stopped:
            return
        hits = frame.filter(self.wanted).select("auditid", "objecttypecode", "_objectid_value")
        self._add(hits, final=False)

    def finish(self, needed: Callable[[], pl.DataFrame]) -> None:
        """The listing is done: send the last partial batch at once, then, while the last batches are answered,
        find what is needed and not landed (`needed_details`) and send it unless this run sent it already (in
        flight, or answered with an error: asked for again by the next run). That rest is what a killed run
        offered and never landed. Returns when every batch has landed."""
        self._add(pl.DataFrame(schema=NEEDED_SCHEMA), final=True)
        if not self.stopped:
            missing = needed()
            with self.lock:
                sent = pl.concat(self.sent) if self.sent else pl.Series("auditid", [], pl.Utf8)
            self._add(missing.filter(~pl.col("auditid").is_in(sent.implode())), final=True)
        self.wait()

    def wait(self) -> None:
        while True:
            with self.lock:
                if not self.in_flight:
                    return
                oldest = self.in_flight.popleft()
            oldest.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _add(self, rows: pl.DataFrame, *, final: bool) -> None:
        sends: list[tuple[int, list[tuple[str, str, str]]]] = []
        with self.lock:
            self.pending.extend(rows.iter_rows())
            while self.pending and (len(self.pending) >= BATCH_SIZE or final) and not self.stopped:
                chunk, self.pending = self.pending[:BATCH_SIZE], self.pending[BATCH_SIZE:]
                self.number += 1
                sends.append((self.number, chunk))
                self.sent.append(pl.Series("auditid", [auditid for auditid, _, _ in chunk], pl.Utf8))
        for number, chunk in sends:
            while True:  # back-pressure: the listing waits rather than queue unbounded answers
                with self.lock:
                    oldest = self.in_flight.popleft() if len(self.in_flight) >= 2 * self.workers else None
                if oldest is None:
                    break
                oldest.result()
            future = self.pool.submit(self._fetch_and_land, number, chunk)
            with self.lock:
                self.in_flight.append(future)

    def _fetch_and_land(self, number: int, chunk: list[tuple[str, str, str]]) -> None:
        if self.stopped:
            return
        ids = [auditid for auditid, _, _ in chunk]
        try:
            replies: Any = self.batch_get([f"audits({a})/Microsoft.Dynamics.CRM.RetrieveAuditDetails" for a in ids],
                                          prefer=['odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'],
                                          kind="audit_detail")
        except PermissionDenied as exc:
            replies = exc
        stop.check()  # a run asked to stop lands nothing more: these details are "needed" again next run
        landed, bad, refusal = _land_details(self.lake, chunk, replies, number=number,
                                             stream=f"details-{self.run_id}", run_id=self.run_id)
        with self.result_lock:
            self.result.details += landed
            self.result.quarantined += bad
            if refusal is not None and not self.stopped:
                self.stopped = True
                self.result.details_available = False
                self.result.notes.append(refusal)


def _land_details(lake: Lake, chunk: list[tuple[str, str, str]], replies: Any, *, number: int, stream: str,
                  run_id: str) -> tuple[int, int, str | None]:
    """Land one batch's details (and quarantine what does not parse): (landed, quarantined, refusal), where
    refusal says why details are not readable at all (nothing is landed then)."""
    if isinstance(replies, PermissionDenied):
        return 0, 0, (f"audit details not readable ({_privilege(str(replies))}): state changes come from "
                      "audit actions and snapshot differences only")
    records, bad = [], []
    for (auditid, objecttypecode, objectid), reply in zip(chunk, replies, strict=True):
        if reply.status == 403:
            return 0, 0, "audit details not readable (prvReadRecordAuditHistory missing)"
        if reply.status != 200:
            log.warning("RetrieveAuditDetails(%s) answered %s; skipped this run", auditid, reply.status)
            continue
        detail = reply.json.get("AuditDetail") if isinstance(reply.json, dict) else None
        if not isinstance(detail, dict):
            reason = "the answer has no AuditDetail object" if detail is None else "AuditDetail is not an object"
        elif not all(isinstance(detail.get(side) or {}, dict) for side in ("OldValue", "NewValue")):
            reason = "OldValue or NewValue is not an object"
        else:
            records.append({"auditid": auditid, "objecttypecode": objecttypecode, "objectid": objectid,
                            **_detail_columns(detail)})
            continue
        # Kept apart and counted, never landed as "no change"; asked for again by the next run.
        bad.append(({"auditid": auditid, "reply": reply.json}, f"RetrieveAuditDetails: {reason}"))
    if records:
        lake.write_page(DETAILS, stream, number, pl.DataFrame(records, schema=DETAIL_SCHEMA), run_id=run_id,
                        extracted_at=None)
    if bad:
        lake.write_quarantine(DETAILS, stream, number, bad, run_id=run_id)
    return len(records), len(bad), None


def _detail_columns(detail: dict[str, Any]) -> dict[str, str | None]:
    """An AuditDetail's columns: its type without the namespace, the whole object as JSON text (annotations kept),
    and the OldValue/NewValue entities without annotations. Only an AttributeAuditDetail has those (the Web API's
    AuditDetail types, [PD] auditing/retrieve-audit-data.md and its reference: AttributeAuditDetail,
    RelationshipAuditDetail, ShareAuditDetail, ...; payloads 02, 25, 26): a detail without them has null values,
    not "no change"."""
    kind = detail.get("@odata.type")
    values = kind == TYPE_PREFIX + "AttributeAuditDetail" or "OldValue" in detail or "NewValue" in detail
    return {"old_values": json.dumps(_values(detail.get("OldValue")), default=str) if values else None,
            "new_values": json.dumps(_values(detail.get("NewValue")), default=str) if values else None,
            "detail_type": kind.removeprefix(TYPE_PREFIX) if isinstance(kind, str) else None,
            "detail": json.dumps(detail, default=str)}


def _values(entity: dict[str, Any] | None) -> dict[str, Any]:
    if not entity:
        return {}
    return {k: v for k, v in entity.items() if not k.startswith("@")}
