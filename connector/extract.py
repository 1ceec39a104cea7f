"""`l2c extract`: every declared table and the audit history into the raw lake, incrementally, in parallel.

Order of a run: take the data directory's lock (a second run exits 5), read and check the declarations,
read the org's metadata (cached), then sync the tables side by side and the audit history beside them;
each stream lands its pages and moves its own state, so a failure in one table neither stops nor corrupts
the others. The run manifest (`runs/<run_id>.json`) records what happened per table; the run's exit status
is the worst of its tables', and a failed run's manifest keeps the line it ended with. An OSError about the
machine (disk full, read-only, another user's files: ground.errors.local_error) is a stream's or the run's
LocalEnvironmentError like any other error, exit 6; saving the manifest is then best effort, since the same disk
may refuse it too.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.activities import detail_columns, load_activities
from config.settings import Settings
from config.tables import load_tables
from connector import metadata
from connector.audit import AuditResult, sync_audit
from connector.http import DataverseClient
from connector.lake import Lake
from connector.lock import RunLock
from connector.state import RunManifest, StateStore
from connector.sync import SyncContext, TableResult, sync_table
from ground.errors import ConfigError, L2CError, LocalEnvironmentError, local_error

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

    def error_lines(self) -> list[str]:
        """One line per error, naming its stream ("run": the whole run). The machine refusing several streams
        (a full disk stops them all) is said once, with the other streams named."""
        return list(self._lines().values())

    @property
    def failure(self) -> str | None:
        """The line that explains the exit code: the first error of the worst kind (for the manifest)."""
        lines = self._lines()
        return next((lines[name] for name, error in self.errors.items()
                     if error.exit_code == self.exit_code and name in lines), None)

    def _lines(self) -> dict[str, str]:
        local = [name for name, error in self.errors.items() if isinstance(error, LocalEnvironmentError)]
        lines = {}
        for name, error in self.errors.items():
            if name in local[1:]:
                continue
            lines[name] = f"{'' if name == 'run' else name + ': '}{error}"
            if name in local[:1] and len(local) > 1:
                lines[name] += f" (this also stopped {', '.join(local[1:])})"
        return lines

    @property
    def notes(self) -> list[str]:
        out = [f"{name}: {note}" for name, r in self.tables.items() for note in r.notes]
        if self.audit is not None:
            out += [f"audit: {note}" for note in self.audit.notes]
        return out


def extract(settings: Settings, *, progress: Any = None) -> ExtractResult:
    data_dir = settings.data_dir
    tables = load_tables(settings.tables_file)  # validated whole before any request
    try:  # the rules say which audit rows' old/new values to fetch
        needs = detail_columns(load_activities(settings.activity_map, tables))
    except ConfigError:  # e.g. a trimmed L2C_TABLES the default map does not fit: `l2c transform` says so; the
        needs = {}  # first extract after the map is fixed fetches the details it needs (they are never skipped)
    since = datetime.fromisoformat(settings.since).replace(tzinfo=UTC) if settings.since else None
    with RunLock(data_dir):
        started = time.perf_counter()
        manifest = RunManifest.start()
        run_id = manifest.run_id
        result = ExtractResult(run_id)
        lake, states = Lake(data_dir), StateStore(data_dir)
        lake.cleanup()  # temp files a killed run left behind (we hold the lock)
        states.cleanup()
        manifest.save(data_dir)  # a killed run still leaves its record
        client: DataverseClient | None = None
        try:
            client = DataverseClient(settings)  # inside: a bad CA bundle or certificate still finishes the manifest
            client.sign_in()  # once, so a refused credential is one error, not one per table
            metas = metadata.load(client, tables, states.directory)
            ctx = SyncContext(client=client, lake=lake, states=states, tables=tables, run_id=run_id,
                              page_size=settings.page_size, since=since,
                              on_page=progress.page if progress else None)
            watermark_tables = {t.name for t in tables.table
                                if not metas[t.name].change_tracking or tables.incremental(t) == "watermark"}
            # A thread per stream: none waits for another to start; the client's limiter bounds the requests.
            workers = len(tables.table) + 1
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="l2c-sync") as pool:
                futures: dict[str, Future[Any]] = {
                    t.name: pool.submit(_guarded, states, t.name, sync_table, ctx, t, metas[t.name], progress)
                    for t in tables.table
                }
                futures["audit"] = pool.submit(
                    _guarded, states, "audit", sync_audit, client, lake, states, tables, metas, progress,
                    run_id=run_id, page_size=settings.page_size, since=since, watermark_tables=watermark_tables,
                    batch_get=client.batch_get, max_ranges=settings.max_concurrency, detail_columns=needs,
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
        except OSError as exc:  # e.g. the metadata cache could not be written
            result.errors["run"] = _local(exc, data_dir)
        result.seconds = time.perf_counter() - started
        result.requests = with_total(client.stats() if client else {})
        _fill(manifest, result)
        try:
            manifest.save(data_dir)
        except OSError as exc:  # best effort when the run already failed: its own line says why
            unsaved = _local(exc, data_dir)
            if not result.errors:  # the data is complete, but this run's record is not: say so, exit 6
                result.errors["run"] = unsaved
            log.debug("run manifest not saved: %s", unsaved)
    return result


def _local(exc: OSError, data_dir: Path) -> LocalEnvironmentError:
    """The machine's refusal as our error (files of another user in the data directory: give it back whole); any
    other OSError is a bug and goes on up."""
    local = local_error(exc, tree=data_dir)
    if local is None:
        raise exc
    return local


def _guarded(states: StateStore, name: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one stream; an L2CError is recorded in its state and returned, not raised, so others go on."""
    progress = args[-1]
    args = args[:-1]
    if progress is not None:
        progress.start(name)
    try:
        outcome = func(*args, **kwargs)
    except (L2CError, OSError) as exc:
        error = _local(exc, states.directory.parent) if isinstance(exc, OSError) else exc
        try:
            state = states.load(name)
            state.last_error = str(error)
            states.save(state)
        except (OSError, LocalEnvironmentError):  # the state folder may be what refuses (full, read-only, foreign)
            log.debug("%s: last error not saved in its state", name)
        if progress is not None:
            progress.fail(name, error)
        return error
    if progress is not None:
        progress.done(name, outcome)
    return outcome


def with_total(stats: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-kind request counters plus their sum under "total"."""
    total: dict[str, float] = {}
    for counts in stats.values():
        for key, value in counts.items():
            total[key] = round(total.get(key, 0) + value, 3)
    return {**stats, "total": total}


def _fill(manifest: RunManifest, result: ExtractResult) -> None:
    for name, table in result.tables.items():
        run = manifest.table(name)
        run.rows, run.pages = table.rows, table.pages
        run.deletions, run.quarantined = table.deletions, table.quarantined
        if table.mode == "delta":
            run.delta_before, run.delta_after = table.delta_before, table.delta_after
        else:
            run.watermark_before, run.watermark_after = table.watermark_before, table.watermark_after
    if result.audit is not None:
        run = manifest.table("audit")
        run.rows, run.pages, run.audit_details = result.audit.rows, result.audit.pages, result.audit.details
        run.quarantined = result.audit.quarantined
        run.watermark_before, run.watermark_after = result.audit.before, result.audit.after
    for name, error in result.errors.items():
        manifest.table(name).error = str(error)
    total = result.requests.get("total", {})
    summary = manifest.table("requests")
    summary.requests, summary.retries = int(total.get("requests", 0)), int(total.get("retries", 0))
    summary.throttled, summary.seconds = int(total.get("429s", 0)), round(result.seconds, 3)
    manifest.finish(result.exit_code, error=result.failure)
