"""`l2c status`: per table, from the local state and lake only (no request): mode, last sync, rows landed,
age of the delta token or watermark, a resumable page if a run was cut short, and the last error; then how the
last run ended, from its manifest (a failed run's line: a full disk or a read-only folder stops every table, and
may leave their states as they were)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from config.settings import Settings
from config.tables import load_tables
from connector.lake import Lake
from connector.metadata import primary_ids
from connector.state import RunManifest, StateStore


def _age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def status(settings: Settings, now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    tables = load_tables(settings.tables_file)
    states, lake = StateStore(settings.data_dir), Lake(settings.data_dir)
    keys = primary_ids(states.directory)
    lines = [f"{'table':<20} {'mode':<10} {'last sync':<26} {'rows':>10} {'token/wm age':>13}  notes"]
    missed: dict[str, int] = {}  # raw pages missing or damaged, or set aside and not read again yet
    for damage in [*lake.damaged(), *lake.waiting()]:
        table = "audit" if damage.table == "audit_details" else damage.table  # shown with the audit
        missed[table] = missed.get(table, 0) + 1
    for name in [t.name for t in tables.table] + ["audit"]:
        state = states.load(name)
        notes = []
        if name in missed:
            notes.append(f"{missed[name]} raw page(s) missing or damaged: the next extract reads the table again")
        rows: int | str = "-" if name in missed else (
            lake.current(name, keys.get(name, f"{name}id")).height if lake.has_rows(name) else 0)
        anchor = state.token_issued_at if state.mode == "delta" else state.watermark
        if state.resume:
            notes.append(f"resumes at page {state.resume.page_no}")
        if state.last_error:
            notes.append(f"last error: {state.last_error}")
        last_sync = state.last_success.isoformat() if state.last_success else "-"  # as l2c writes it in the state file
        lines.append(f"{name:<20} {state.mode or 'never':<10} {last_sync:<26} {rows:>10} "
                     f"{_age(anchor, now):>13}  {'; '.join(notes)}")
    last = last_run(settings.data_dir)
    return lines + ([last] if last else [])


def last_run(data_dir: Path) -> str | None:
    """How the latest run ended, from its manifest (run ids sort by start time); None before the first run."""
    runs = data_dir / "runs"
    ids = sorted(p.stem for p in runs.glob("*.json") if not p.name.startswith(".")) if runs.is_dir() else []
    if not ids:
        return None
    manifest = RunManifest.load(data_dir, ids[-1])
    line = f"last run {manifest.run_id}: {manifest.status}"
    if manifest.status == "running":
        return line + " (or stopped before it could record its end)"
    if manifest.status == "ok":
        return line
    error = manifest.error or next((f"{name}: {run.error}" for name, run in manifest.tables.items() if run.error),
                                   None)
    return line + f", exit {manifest.exit_code}" + (f": {error}" if error else "")

