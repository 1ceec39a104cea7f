"""What every export shares: the outputs of the last transform they read, and what an export reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config.settings import Settings
from ground.errors import ConfigError
from transforms.outputs import CASES, DATABASE, EVENT_LOG


@dataclass
class Exported:
    path: Path  # the file written, or the folder appended to
    events: int
    cases: int = 0
    objects: int = 0  # OCEL: objects of every type
    files: list[Path] = field(default_factory=list)  # pa-incremental: the file(s) written this time (maybe none)


def outputs(settings: Settings) -> tuple[Path, Path, Path]:
    """(event_log.parquet, cases.parquet, l2c.duckdb) of the last transform, or a ConfigError that says what to do."""
    paths = tuple(settings.data_dir / name for name in (EVENT_LOG, CASES, DATABASE))
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"no event log to export in {settings.data_dir} ({', '.join(missing)} missing)",
                          hint="run `l2c run` (or `l2c transform` after `l2c extract`) first, with the same "
                               "L2C_DATA_DIR")
    return paths  # type: ignore[return-value]
