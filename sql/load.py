"""`l2c.duckdb` from the transform's outputs: sql/load.sql (event_log, cases, event_resources), each table the
transform wrote beside them (the quality report, the analysis tables), then the views of sql/views.sql.

The database is built whole in a temp file beside its final name and published by rename, so a reader sees the
old database or the new one. It remembers what it was built from (`l2c_build`: the transform's generation and the
SQL files' hash): a load with nothing new keeps it, and a changed view rebuilds only the database, not the event
log. `transform_and_load` is `l2c transform`: both steps under the data directory's run lock.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import duckdb

from config.settings import Settings
from connector.lock import RunLock
from ground.files import TEMP_SUFFIX, publish_file, remove_temp_files, temp_beside
from transforms.build import CASES_PER_PART, BuildResult, build_outputs

STAMP_TABLE = "l2c_build"


def transform_and_load(settings: Settings, *, full: bool = False,
                       cases_per_part: int = CASES_PER_PART) -> BuildResult:
    """The outputs brought up to date (transforms/build.py) and loaded into the database, under the run lock."""
    with RunLock(settings.data_dir):
        result = build_outputs(settings, full=full, cases_per_part=cases_per_part)
        load(result)
    return result


def stamp(result: BuildResult) -> str:
    """What a database built from `result` depends on: the files it loads (names, sizes, times) and the SQL."""
    digest = hashlib.sha256()
    for path in (result.event_log, result.cases_file, result.event_users, *result.tables.values()):
        info = path.stat()
        digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    sql = resources.files(__package__ or "sql")
    for name in ("load.sql", "views.sql"):
        digest.update(sql.joinpath(name).read_bytes())
    return digest.hexdigest()


def load(result: BuildResult) -> Path:
    """Build `result.database` unless it holds exactly these outputs already."""
    wanted = stamp(result)
    if _built_from(result.database) == wanted:
        return result.database
    # What a killed load left: a half-built database and its write-ahead log (and the name older l2c used).
    database = result.database
    remove_temp_files(iter([*database.parent.glob(f".{database.name}.*{TEMP_SUFFIX}*"),
                            *database.parent.glob(f"{database.name}.tmp*")]))
    temp = temp_beside(database)
    sql = resources.files(__package__ or "sql")
    try:
        with duckdb.connect(str(temp)) as con:
            # DuckDB draws a progress bar on stdout, terminal or not, for any query over 2 s (1M leads).
            con.execute("SET enable_progress_bar = false")
            con.execute("SET VARIABLE event_log_path = ?", [str(result.event_log)])
            con.execute("SET VARIABLE cases_path = ?", [str(result.cases_file)])
            con.execute("SET VARIABLE event_users_path = ?", [str(result.event_users)])
            con.execute(sql.joinpath("load.sql").read_text("utf-8"))
            for name, path in sorted(result.tables.items()):
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet(?)', [str(path)])
            con.execute(sql.joinpath("views.sql").read_text("utf-8"))
            con.execute(f"CREATE TABLE {STAMP_TABLE} AS SELECT ? AS stamp", [wanted])
        publish_file(temp, result.database)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return result.database


def _built_from(database: Path) -> str | None:
    if not database.is_file():
        return None
    try:
        with duckdb.connect(str(database), read_only=True) as con:
            row = con.execute(f"SELECT stamp FROM {STAMP_TABLE}").fetchone()
    except duckdb.Error:
        return None  # older, damaged or foreign: build it again
    return str(row[0]) if row else None
