"""One table's incremental read: change tracking (delta links) or a modifiedon watermark.

Change tracking ([PD] use-change-tracking-synchronize-data-external-systems.md): the first read sends
`Prefer: odata.track-changes` and pages to a deltaLink; later runs call the stored deltaLink, which returns
changed rows then `$deletedEntity` entries. Every page is landed before the state moves (the resume point
is the next link, so a killed run continues at the page it lost); the new deltaLink is stored only after
the last page is durable. An expired token (0x80044352) resyncs the table in full and records as deleted
whatever the resync no longer returns; a table without change tracking (0x80072491) falls back to the
watermark.

Watermark: `$filter=<col> ge <watermark - overlap>` ordered by (<col>, primary key); the closed lower bound
re-reads the boundary and rows already landed with the same (id, version) are dropped, so no tied row is
lost or doubled. The new watermark is capped at the server's time of the first page (the signpost), so rows
written while the run pages are read again next time.

A full read (the first, a resync) over a lake that already holds rows of the table reconciles in both modes:
ids it no longer returns were deleted meanwhile. `read_again` asks for one, e.g. when a landed page of the
table was found missing or damaged (connector/lake.py `damaged`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from config.tables import TableConfig, TablesConfig
from connector import rows as rowmod
from connector.lake import Lake
from connector.metadata import TableMeta
from connector.odata import Client, Query, datetime_literal, pages, prefer, stored_link
from connector.state import Resume, StateStore, TableState
from ground.errors import RequestRejected

log = logging.getLogger("l2c.sync")

CT_DISABLED = "0x80072491"
CT_EXPIRED = "0x80044352"


@dataclass
class SyncContext:
    client: Client
    lake: Lake
    states: StateStore
    tables: TablesConfig
    run_id: str
    page_size: int
    since: datetime | None = None
    on_page: Any = None  # callable(table, rows) for progress


@dataclass
class TableResult:
    table: str
    mode: str = ""
    rows: int = 0
    deletions: int = 0
    quarantined: int = 0
    pages: int = 0
    notes: list[str] = field(default_factory=list)
    delta_before: str | None = None  # delta mode: the delta link at the start and at the end
    delta_after: str | None = None
    watermark_before: datetime | None = None  # watermark mode: the watermark at the start and at the end
    watermark_after: datetime | None = None


def selected(cfg: TableConfig, meta: TableMeta) -> list[str]:
    return [meta.api_name(c) for c in cfg.columns]


def sync_table(ctx: SyncContext, cfg: TableConfig, meta: TableMeta) -> TableResult:
    state = ctx.states.load(cfg.name)
    result = TableResult(cfg.name)
    wants_delta = ctx.tables.incremental(cfg) == "auto" and meta.change_tracking and state.mode != "watermark"
    if wants_delta:
        try:
            return _delta(ctx, cfg, meta, state, result)
        except RequestRejected as exc:
            if exc.code == CT_DISABLED:
                result.notes.append("change tracking is off for this table: read by modifiedon watermark "
                                    "(deletions only from the audit history)")
                state = ctx.states.load(cfg.name)
                state.mode, state.delta_link, state.resume = "watermark", None, None
                ctx.states.save(state)
            elif exc.code == CT_EXPIRED:
                log.warning("%s: the delta token expired (0x80044352); resyncing the table in full", cfg.name)
                result.notes.append("delta token expired: full resync, deletions reconciled")
                state = ctx.states.load(cfg.name)
                state.delta_link, state.resume = None, None
                ctx.states.save(state)
                return _delta(ctx, cfg, meta, state, result, reconcile=True)
            else:
                raise
    elif not meta.change_tracking:
        result.notes.append("change tracking is off for this table: read by modifiedon watermark "
                            "(deletions only from the audit history)")
    return _watermark(ctx, cfg, meta, state, result)


def read_again(states: StateStore, table: str) -> None:
    """Make the next sync of `table` a full read from Dataverse that reconciles deletions, as an expired delta
    token does: its delta link or watermark and any resume point are dropped."""
    state = states.load(table)
    state.delta_link, state.resume, state.token_issued_at = None, None, None
    state.watermark, state.boundary_ids, state.signpost = None, [], None
    states.save(state)


def _land(ctx: SyncContext, cfg: TableConfig, meta: TableMeta, stream: str, page_no: int,
          records: list[dict[str, Any]], seen_at: datetime | None, result: TableResult,
          drop_known: bool = False) -> pl.DataFrame:
    specs = rowmod.column_specs(meta.attributes, selected(cfg, meta))
    live, deleted_ids = rowmod.split_deletions(records)
    notes: list[rowmod.ShapeNote] = []
    frame, bad = rowmod.to_frame(live, specs, notes)
    if drop_known and frame.height:
        frame = _drop_landed(ctx, cfg.name, meta.primary_id, frame)
    extracted = seen_at
    if frame.height:
        ctx.lake.write_page(cfg.name, stream, page_no, frame, run_id=ctx.run_id, extracted_at=extracted)
    if deleted_ids:
        gone = pl.DataFrame({meta.primary_id: deleted_ids}, schema={meta.primary_id: pl.Utf8})
        ctx.lake.write_page(cfg.name, stream, page_no, gone, run_id=ctx.run_id, extracted_at=extracted,
                            kind="deletions")
    if bad:
        ctx.lake.write_quarantine(cfg.name, stream, page_no, bad, run_id=ctx.run_id, extracted_at=extracted)
    if notes:
        ctx.lake.write_notes(cfg.name, stream, page_no, rowmod.notes_frame(live, notes, meta.primary_id),
                             run_id=ctx.run_id, extracted_at=extracted)
    result.rows += frame.height
    result.deletions += len(deleted_ids)
    result.quarantined += len(bad)
    result.pages += 1
    if ctx.on_page is not None:
        ctx.on_page(cfg.name, frame.height + len(deleted_ids))
    return frame


def _drop_landed(ctx: SyncContext, table: str, pk: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose (id, version) the lake already holds: the watermark's boundary re-read."""
    known = ctx.lake.versions(table, pk, frame.get_column(pk))
    if known.height == 0:
        return frame
    return frame.join(known, on=[pk, "_version"], how="anti")


def _delta(ctx: SyncContext, cfg: TableConfig, meta: TableMeta, state: TableState, result: TableResult,
           *, reconcile: bool = False) -> TableResult:
    result.mode = "delta"
    result.delta_before = state.delta_link
    resume = state.resume
    first_time: datetime | None = None  # the server's time at the read's first page: its token's start
    if resume:
        stream, url, page_no = resume.stream, resume.next_link, resume.page_no
        reconcile = reconcile or resume.reconcile
        full = resume.full
        first_time = resume.started_at
    elif state.delta_link:
        stream, url, page_no, full = f"delta-{ctx.run_id}", state.delta_link, 1, False
    else:
        stream, page_no, full = f"sync-{ctx.run_id}", 1, True
        url = Query(meta.entity_set, selected(cfg, meta)).url()
        reconcile = reconcile or ctx.lake.has_rows(cfg.name)
    kind = "page" if full else "delta"
    for page in pages(ctx.client, url, prefer(ctx.page_size, track_changes=True), kind=kind, start_page=page_no):
        first_time = first_time or page.server_time
        _land(ctx, cfg, meta, stream, page.number, page.records, page.server_time, result)
        state = ctx.states.load(cfg.name)
        if page.next_link:
            state.resume = Resume(stream=stream, next_link=stored_link(page.next_link) or "", page_no=page.number + 1,
                                  started_at=state_time(first_time), full=full, reconcile=reconcile)
        else:
            if reconcile and full:
                result.deletions += _reconcile(ctx, cfg, meta, stream, page.server_time)
            state.mode, state.delta_link, state.resume = "delta", stored_link(page.delta_link), None
            # The token starts at the read's first request ([PD] use-change-tracking-synchronize-data-external-
            # systems.md), which may be runs ago for a resumed read: its age (tokens expire) counts from there.
            state.token_issued_at = state_time(first_time) if first_time else None
            state.last_success = state.token_issued_at
            state.last_error = None
        ctx.states.save(state)
    result.delta_after = state.delta_link
    return result


def _reconcile(ctx: SyncContext, cfg: TableConfig, meta: TableMeta, stream: str, seen_at: datetime | None) -> int:
    """After a full resync: ids the lake holds that the resync no longer returned were deleted meanwhile."""
    pk = meta.primary_id
    returned = ctx.lake.stream_ids(cfg.name, stream, pk)
    gone = ctx.lake.current(cfg.name, pk).select(pk).join(returned, on=pk, how="anti")
    if gone.height:
        ctx.lake.write_page(cfg.name, stream, 999_999, gone, run_id=ctx.run_id, extracted_at=seen_at,
                            kind="deletions")
    return gone.height


def _watermark(ctx: SyncContext, cfg: TableConfig, meta: TableMeta, state: TableState,
               result: TableResult) -> TableResult:
    result.mode = "watermark"
    column = ctx.tables.watermark_column(cfg)
    overlap = timedelta(seconds=ctx.tables.defaults.watermark_overlap_seconds)
    result.watermark_before = state.watermark
    incremental = state.watermark is not None  # only a re-read overlap can hold rows already landed
    resume = state.resume
    if resume:
        stream, url, page_no = resume.stream, resume.next_link, resume.page_no
        signpost: datetime | None = resume.started_at
        full, reconcile = resume.full, resume.reconcile
    else:
        lower = state.watermark - overlap if state.watermark else ctx.since
        condition = f"{column} ge {datetime_literal(lower)}" if lower else None
        query = Query(meta.entity_set, selected(cfg, meta), filter=condition,
                      orderby=f"{column} asc,{meta.primary_id} asc")
        stream, url, page_no, signpost = f"wm-{ctx.run_id}", query.url(), 1, None
        # Every row the table has, over rows landed before: what it no longer returns was deleted meanwhile.
        full = lower is None
        reconcile = full and ctx.lake.has_rows(cfg.name)
    for page in pages(ctx.client, url, prefer(ctx.page_size), kind="page", start_page=page_no):
        signpost = signpost or page.server_time
        _land(ctx, cfg, meta, stream, page.number, page.records, page.server_time, result, drop_known=incremental)
        state = ctx.states.load(cfg.name)
        state.mode = "watermark"
        if page.next_link:
            flags = {"full": True, "reconcile": True} if reconcile else {}
            state.resume = Resume(stream=stream, next_link=stored_link(page.next_link) or "", page_no=page.number + 1,
                                  started_at=state_time(signpost), **flags)
            state.signpost = state_time(signpost)
        else:
            if reconcile and full:
                result.deletions += _reconcile(ctx, cfg, meta, stream, page.server_time)
            # Everything written up to the signpost has been read; later writes come next run.
            state.watermark = state_time(signpost) if signpost else state.watermark
            state.signpost = None
            state.resume, state.last_error = None, None
            state.last_success = state.watermark
        ctx.states.save(state)
    result.watermark_after = state.watermark
    return result


def state_time(moment: datetime | None) -> datetime:
    """State times are UTC; a reply without a Date header falls back to our clock."""
    return (moment or datetime.now(UTC)).astimezone(UTC)
