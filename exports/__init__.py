"""Files for process-mining tools, written from the transform's outputs (never from Dataverse).

One module per format, each with `export(settings, out) -> Exported`: `xes` (IEEE 1849 XES, streamed),
`tabular` (CSV for Celonis, Disco, ProcessMind and Power Automate Process Mining), `pa_incremental` (the events new
since the last export, appended as YYYYMMDDHHMMSS.csv for Power Automate's incremental refresh), `ocel`
(OCEL 2.0 as SQLite or JSON) and `report` (one self-contained HTML page). `FORMATS` maps the CLI's
`--format` names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from exports import ocel, pa_incremental, tabular, xes
from exports.common import Exported

FORMATS: dict[str, Callable[[Settings, Path], Exported]] = {
    "xes": xes.export, "ocel2-sqlite": ocel.export_sqlite, "ocel2-json": ocel.export_json, "csv": tabular.export,
    "pa-incremental": pa_incremental.export}
OCEL_FORMATS = ("ocel2-sqlite", "ocel2-json")  # these read every version of each object (see exports/ocel.py)


def export(settings: Settings, fmt: str, out: Path) -> Exported:
    return FORMATS[fmt](settings, out)
