"""`l2c extract`: every declared table and the audit history into the raw lake, incrementally, in parallel.

Order of a run: take the data directory's lock (a second run exits 5), read and check the declarations,
read the org's metadata (cached), then sync the tables side by side and the audit history beside them;
each stream lands its pages and moves its own state, so a failure in one table neither stops nor corrupts
the others. The run manifest (`runs/<run_id>.json`) records what happened per table; the run's exit status
is the worst of its tables'.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from config.tables import load_tables
from connector import metadata
from connector.audit import AuditResult, sync_audit
from connector.http import DataverseClient
from connector.lake import Lake
from connector.lock import RunLock
from connector.state import RunManifest, StateStore
from connector.sync import SyncContext, TableResult, sync_table
from l2c.errors import L2CError

log = logging.getLogger("l2c.extract")


@dataclass
class ExtractResult:
    run_id: str
    tables: dict[str, TableResult] = field(default_factory=dict)
    audit: AuditResult | None = None
    errors: dict[str, L2CError] = field(default_factory=dict)
    requests: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return max((e.exit_code for e in self.errors.values()), default=0)

    @property
    def notes(self) -> list[str]:
        out = [f"{name}: {note}" for name, r in self.tables.items() for note in r.notes]
        if self.audit is not None:
            out += [f"audit: {note}" for note in self.audit.notes]
        return out


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def extract(settings: Settings, *, progress: Any = None) -> ExtractResult:
    data_dir = settings.data_dir
    tables = load_tables(settings.tables_file)  # validated whole before any request
    since = datetime.fromisoformat(settings.since).replace(tzinfo=UTC) if settings.since else None
    with RunLock(data_dir):
        started = time.perf_counter()
        run_id = new_run_id()
        result = ExtractResult(run_id)
        client = DataverseClient(settings)
        lake, states = Lake(data_dir), StateStore(data_dir)
        manifest = RunManifest(data_dir, run_id)
        try:
            metas = metadata.load(client, tables, states.directory)
            ctx = SyncContext(client=client, lake=lake, states=states, tables=tables, run_id=run_id,
                              page_size=settings.page_size, since=since,
                              on_page=progress.page if progress else None)
            watermark_tables = {t.name for t in tables.table
                                if not metas[t.name].change_tracking or tables.incremental(t) == "watermark"}
            workers = max(2, min(settings.max_concurrency, len(tables.table) + 1))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l2c-sync") as pool:
                futures: dict[str, Future[Any]] = {
                    t.name: pool.submit(_guarded, states, t.name, sync_table, ctx, t, metas[t.name], progress)
                    for t in tables.table
                }
                futures["audit"] = pool.submit(
                    _guarded, states, "audit", sync_audit, client, lake, states, tables, metas, progress,
                    run_id=run_id, page_size=settings.page_size, since=since, watermark_tables=watermark_tables,
                    batch_get=client.batch_get,
                )
                for name, future in futures.items():
                    outcome = future.result()
                    if isinstance(outcome, L2CError):
                        result.errors[name] = outcome
                    elif name == "audit":
                        result.audit = outcome
                    else:
                        result.tables[name] = outcome
        except L2CError as exc:
            result.errors["run"] = exc
        result.seconds = time.perf_counter() - started
        result.requests = client.stats()
        manifest.write(_manifest(result))
    return result


def _guarded(states: StateStore, name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one stream; an L2CError is recorded in its state and returned, not raised, so others go on."""
    progress = args[-1]
    args = args[:-1]
    if progress is not None:
        progress.start(name)
    try:
        outcome = func(*args, **kwargs)
    except L2CError as exc:
        state = states.load(name)
        state.last_error = str(exc)
        states.save(state)
        if progress is not None:
            progress.fail(name, exc)
        return exc
    if progress is not None:
        progress.done(name, outcome)
    return outcome


def _manifest(result: ExtractResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(result.seconds, 3),
        "exit_code": result.exit_code,
        "tables": {name: asdict(r) for name, r in result.tables.items()},
        "audit": asdict(result.audit) if result.audit else None,
        "errors": {name: str(e) for name, e in result.errors.items()},
        "requests": result.requests,
        "notes": result.notes,
    }
