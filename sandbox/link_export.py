"""`l2c sandbox export-link`: the sandbox org as Azure Synapse Link for Dataverse would have exported it up to
the sandbox clock, and, run again after `sandbox advance`, as the Link that kept running.

The export's own cursor, `.l2c-sandbox-link.json` in the export root (a name no Link writes), records which org
and layout the folder holds, the newest published batch, the byte size of every file it appends to and the
incremental folder in progress. It is written last, atomically: an export killed before it is redone from the
previous cursor (appends are cut back to the recorded sizes first), and an export at the same clock is a no-op.
A folder holding another org, format or layout is refused. The layouts are in sandbox/link_layout.py (CSV) and
sandbox/link_delta.py (Delta); the rows in sandbox/link_rows.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ground.errors import ConfigError
from ground.files import atomic_write, make_dirs
from sandbox.link_delta import write_delta
from sandbox.link_layout import sink_text, write_append_only, write_in_place, write_incremental, write_static
from sandbox.link_rows import lag_seconds
from sandbox.link_versions import Cycles
from sandbox.orgdata import OrgData

CURSOR = ".l2c-sandbox-link.json"
FORMATS = ("csv", "delta")
MODES = ("append-only", "in-place")
MIN_INCREMENTAL_MINUTES = 15  # DOCS INC: "the minimum time interval is 15 minutes"


@dataclass(frozen=True)
class LinkOptions:
    format: str = "csv"
    mode: str = "append-only"
    incremental: bool = False
    interval_minutes: int = 15

    def layout(self) -> dict[str, Any]:
        return {"format": self.format, "mode": self.mode if self.format == "csv" else "in-place",
                "incremental": self.incremental, "interval_minutes": self.interval_minutes}


@dataclass(frozen=True)
class ExportResult:
    out: Path
    batch: int  # the newest published batch
    rows: int  # rows written by this export (CSV) or held by the tables (Delta)
    seconds: float
    noop: bool


def validate(options: LinkOptions) -> None:
    if options.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {options.format!r}")
    if options.mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    if options.interval_minutes < 1:
        raise ConfigError(f"--interval-minutes must be at least 1, got {options.interval_minutes}")
    if options.incremental and options.format != "csv":
        raise ConfigError("--incremental-folders is a CSV layout", hint="drop it, or use --format csv")
    if options.incremental and options.mode != "append-only":
        # DOCS INC: with the incremental folder structure "all tables become append-only"
        raise ConfigError("--incremental-folders writes append-only rows", hint="drop --mode in-place")
    if options.incremental and options.interval_minutes < MIN_INCREMENTAL_MINUTES:
        raise ConfigError(f"--interval-minutes must be at least {MIN_INCREMENTAL_MINUTES} with "
                          f"--incremental-folders (the Link's minimum), got {options.interval_minutes}")


def _identity(org: OrgData) -> dict[str, Any]:
    return {"seed": org.seed, "leads": org.leads, "organization_id": org.meta.organization_id}


def _read_cursor(out: Path, org: OrgData, options: LinkOptions) -> dict[str, Any] | None:
    """The cursor of the export already in `out`, None for a new (missing or empty) folder; refuses a folder
    that holds something else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    path = out / CURSOR
    if not path.exists():
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"--out {out} is not empty and holds no sandbox Link export",
                              hint="name an empty or new folder")
        return None
    try:
        cursor: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the export cursor {path}: {exc}", hint="name an empty or new folder") \
            from None
    held = {**{k: cursor.get(k) for k in _identity(org)}, **{k: cursor.get(k) for k in options.layout()}}
    wanted = {**_identity(org), **options.layout()}
    if held != wanted:
        differ = ", ".join(f"{k} {held[k]!r} (asked {wanted[k]!r})" for k in wanted if held[k] != wanted[k])
        raise ConfigError(f"--out {out} holds another sandbox Link export: {differ}",
                          hint="name an empty folder, or export with the same org and options")
    return cursor


def export_link(org: OrgData, out: Path, options: LinkOptions) -> ExportResult:
    """Write (or continue) the Link export of `org` in `out`."""
    started = time.perf_counter()
    validate(options)
    cursor = _read_cursor(out, org, options)
    cycles = Cycles(options.interval_minutes * 60)
    upto = cycles.last_published(org.clock)
    after = int(cursor["batch"]) if cursor else -2
    if cursor and after > upto:
        raise ConfigError(f"--out {out} holds an export up to {cursor['clock']}, later than the sandbox clock "
                          f"{org.clock.isoformat()}", hint="name an empty folder")
    if cursor and after == upto:
        return ExportResult(out, upto, 0, time.perf_counter() - started, noop=True)
    make_dirs(out)
    cursor = cursor or {**_identity(org), **options.layout(), "sizes": {}, "in_progress": None}
    sizes: dict[str, int] = cursor["sizes"]
    synced = sink_text(cycles.end_of(-1) + lag_seconds(-1, org.seed))
    if after == -2 and options.format == "csv":
        write_static(org, out, synced)
    if options.format == "delta":
        rows = sum(write_delta(org, out, cycles, upto, first=after == -2).values())
    elif options.incremental:
        rows = write_incremental(org, out, cycles, after, upto, sizes, cursor, synced)
    elif options.mode == "append-only":
        rows = write_append_only(org, out, cycles, after, upto, sizes, cursor, synced)
    else:
        rows = write_in_place(org, out, cycles, upto, synced)
    cursor.update(batch=upto, clock=org.clock.isoformat(), published_until=cycles.end_of(upto))
    text = json.dumps(cursor, indent=1, sort_keys=True).encode("utf-8")
    atomic_write(out / CURSOR, lambda handle: handle.write(text))
    return ExportResult(out, upto, rows, time.perf_counter() - started, noop=False)

