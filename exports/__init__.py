"""Files for process-mining tools, written from the transform's outputs (never from Dataverse).

One module per format, each with `export(settings, out) -> Exported`: `xes` (IEEE 1849 XES, streamed),
`tabular` (CSV for Celonis, Disco, ProcessMind and Power Automate Process Mining), `pa_incremental` (the events new
since the last export, appended as YYYYMMDDHHMMSS.csv for Power Automate's incremental refresh), `ocel`
(OCEL 2.0 as SQLite or JSON) and `report` (one self-contained HTML page). `FORMATS` maps the CLI's
`--format` names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import Settings
from l2c.errors import ConfigError


@dataclass
class Exported:
    path: Path  # the file written, or the folder appended to
    events: int
    cases: int = 0
    objects: int = 0  # OCEL: objects of every type
    files: list[Path] = field(default_factory=list)  # pa-incremental: the file(s) written this time (maybe none)


def outputs(settings: Settings) -> tuple[Path, Path, Path]:
    """(event_log.parquet, cases.parquet, l2c.duckdb) of the last transform, or a ConfigError that says what to do."""
    paths = tuple(settings.data_dir / name for name in ("event_log.parquet", "cases.parquet", "l2c.duckdb"))
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"no event log to export in {settings.data_dir} ({', '.join(missing)} missing)",
                          hint="run `l2c run` (or `l2c transform` after `l2c extract`) first, with the same "
                               "L2C_DATA_DIR")
    return paths  # type: ignore[return-value]


def _formats() -> dict[str, Callable[[Settings, Path], Exported]]:
    from exports import ocel, pa_incremental, tabular, xes

    return {"xes": xes.export, "ocel2-sqlite": ocel.export_sqlite, "ocel2-json": ocel.export_json,
            "csv": tabular.export, "pa-incremental": pa_incremental.export}


FORMATS = ("xes", "ocel2-sqlite", "ocel2-json", "csv", "pa-incremental")


def export(settings: Settings, fmt: str, out: Path) -> Exported:
    return _formats()[fmt](settings, out)
