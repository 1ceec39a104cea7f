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
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.activities import detail_columns, load_activities
from config.settings import Settings
from config.tables import TablesConfig, load_tables
from connector import metadata
from connector.audit import AUDIT, DETAILS, AuditResult, sync_audit
from connector.audit import read_again as read_audit_again
from connector.http import DataverseClient
from connector.lake import Damage, Lake
from connector.lock import RunLock
from connector.state import RunManifest, StateStore
from connector.sync import SyncContext, TableResult, read_again, sync_table
from ground import stop
from ground.errors import ConfigError, L2CError, LocalEnvironmentError, local_error
from ground.stop import Interrupted

log = logging.getLogger("l2c.extract")
STOP_GRACE_S = 1.5  # after a stop request, how long a stream stuck in a request is waited for


@dataclass
class ExtractResult:
    run_id: str
    tables: dict[str, TableResult] = field(default_factory=dict)
    audit: AuditResult | None = None
    errors: dict[str, L2CError] = field(default_factory=dict)
    requests: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    damaged: list[tuple[Damage, str]] = field(default_factory=list)  # pages found missing or damaged: what was done

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
        out = [f"{damage}: {done}" for damage, done in self.damaged]
        out += [f"{name}: {note}" for name, r in self.tables.items() for note in r.notes]
        if self.audit is not None:
            out += [f"audit: {note}" for note in self.audit.notes]
        return out


def extract(settings: Settings, *, progress: Any = None,
            expected: Callable[[], Collection[str]] = tuple) -> ExtractResult:
    """Run the extract; `expected()` names landed pages (relative to the data directory) that must still be
    there, e.g. those the last transform read (asked under the lock, once the manifest records the run). Raises
    Interrupted (ground/stop.py) when a signal stopped it, once its streams have stopped between two pages, its
    manifest says so and its lock is free."""
    data_dir = settings.data_dir
    tables = load_tables(settings.tables_file)  # validated whole before any request
    try:  # the rules say which audit rows' old/new values to fetch
        needs = detail_columns(load_activities(settings.activity_map, tables))
    except ConfigError:  # e.g. a trimmed L2C_TABLES the default map does not fit: `l2c transform` says so; the
        needs = {}  # first extract after the map is fixed fetches the details it needs (they are never skipped)
    since = datetime.fromisoformat(settings.since).replace(tzinfo=UTC) if settings.since else None
    interrupted: Interrupted | None = None
    with stop.polled(), RunLock(data_dir):
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
            result.damaged = _read_damaged_again(lake, states, tables, expected(), run_id)
            client = DataverseClient(settings)  # inside: a bad CA bundle or certificate still finishes the manifest
            client.sign_in()  # once, so a refused credential is one error, not one per table
            metas = metadata.load(client, tables, states.directory)
            ctx = SyncContext(client=client, lake=lake, states=states, tables=tables, run_id=run_id,
                              page_size=settings.page_size, since=since,
                              on_page=progress.page if progress else None)
            watermark_tables = {t.name for t in tables.table
                                if not metas[t.name].change_tracking or tables.incremental(t) == "watermark"}
            # A thread per stream: none waits for another to start; the client's limiter bounds the requests.
            pool = ThreadPoolExecutor(max_workers=len(tables.table) + 1, thread_name_prefix="l2c-sync")
            futures: dict[str, Future[Any]] = {
                t.name: pool.submit(_guarded, states, t.name, sync_table, ctx, t, metas[t.name], progress)
                for t in tables.table
            }
            futures["audit"] = pool.submit(
                _guarded, states, "audit", sync_audit, client, lake, states, tables, metas, progress,
                run_id=run_id, page_size=settings.page_size, since=since, watermark_tables=watermark_tables,
                batch_get=client.batch_get, max_ranges=settings.max_concurrency, detail_columns=needs,
            )
            _collect(pool, futures, result)
            _read_again(lake, result)
        except L2CError as exc:
            result.errors["run"] = exc
        except Interrupted as exc:
            interrupted = exc
        except OSError as exc:  # e.g. the metadata cache could not be written
            result.errors["run"] = _local(exc, data_dir)
        result.seconds = time.perf_counter() - started
        result.requests = with_total(client.stats() if client else {})
        fill_manifest(manifest, result, interrupted)
        try:
            manifest.save(data_dir)
        except OSError as exc:  # best effort when the run already failed: its own line says why
            unsaved = _local(exc, data_dir)
            if not result.errors and interrupted is None:  # the data is complete, but not this run's record: exit 6
                result.errors["run"] = unsaved
            log.debug("run manifest not saved: %s", unsaved)
    if interrupted is not None:
        raise interrupted
    return result


def _read_damaged_again(lake: Lake, states: StateStore, tables: TablesConfig, expected: Collection[str],
                        run_id: str) -> list[tuple[Damage, str]]:
    """Landed pages found missing or damaged: each table they belong to is read again from Dataverse (a full
    read that reconciles deletions; the audit from its start, dropping the rows it still holds; audit details
    are fetched again anyway, being "needed minus landed"), then the pages are set aside. In that order, so a
    run killed in between finds them again."""
    damaged = lake.damaged(expected, adopt=True)
    declared = {t.name for t in tables.table}
    for table in sorted({d.table for d in damaged}):
        if table in declared:
            read_again(states, table)
        elif table == AUDIT:
            read_audit_again(states)
    lake.set_aside(damaged, run_id, read_again=declared | {AUDIT, DETAILS})
    aside = lake.data_dir / "damaged" / run_id
    done = [(damage, ("" if damage.why == "missing" else f"moved to {aside}; ") + _repair(damage.table, declared))
            for damage in damaged]
    for damage, what in done:
        log.warning("%s: %s", damage, what)
    return done


def _repair(table: str, declared: set[str]) -> str:
    if table in declared:
        return f"{table} is read again from Dataverse in full, deletions reconciled"
    if table == AUDIT:
        return "the audit history is read again from its start, keeping the rows still landed"
    if table == DETAILS:
        return "the audit details it held are fetched again"
    return "no declared table reads it"


def _collect(pool: ThreadPoolExecutor, futures: dict[str, Future[Any]], result: ExtractResult) -> None:
    """Wait for every stream and keep its outcome. Once a stop is asked for, each stream ends at its next check
    (between two pages, before a request, in a sleep); one stuck in a request is waited for STOP_GRACE_S at
    most, and then the run raises Interrupted without it (the CLI ends the process: ground/stop.py)."""
    deadline: float | None = None
    pending = set(futures.values())
    try:
        while pending:
            _, pending = wait(pending, timeout=0.1)
            if stop.requested():
                deadline = deadline or time.monotonic() + STOP_GRACE_S
                if time.monotonic() > deadline:
                    break
    finally:
        pool.shutdown(wait=not pending, cancel_futures=True)
    for name, future in futures.items():
        if not future.done() or isinstance(future.exception(), Interrupted):
            continue
        outcome = future.result()  # raises what a stream raised that is no L2CError: a bug
        if isinstance(outcome, L2CError):
            result.errors[name] = outcome
        elif name == AUDIT:
            result.audit = outcome
        else:
            result.tables[name] = outcome
    stop.check()


def _read_again(lake: Lake, result: ExtractResult) -> None:
    """Tell the register which tables this run read to the end: any page of theirs set aside is no longer missed
    (a table set for a full read by `_read_damaged_again` was read in full when its sync ends well)."""
    for name in result.tables:
        lake.read_again(name, result.run_id)
    if result.audit is not None and result.audit.available:
        lake.read_again(AUDIT, result.run_id)
        if result.audit.details_available:
            lake.read_again(DETAILS, result.run_id)


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


def fill_manifest(manifest: RunManifest, result: ExtractResult, interrupted: Interrupted | None = None) -> None:
    for damage, _ in result.damaged:
        run = manifest.table(damage.table)
        run.damaged = [*run.damaged, f"{damage.page}: {damage.why}"]
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
    if interrupted is not None:
        manifest.finish(interrupted.exit_code)
    else:
        manifest.finish(result.exit_code, error=result.failure)
