"""`l2c.duckdb` from the transform's outputs: sql/load.sql (event_log, cases, event_resources), each table the
transform wrote beside them (the quality report, the analysis tables), then the views of sql/views.sql.

The database is built whole in a temp file beside its final name and CHECKPOINTed, so that its write-ahead log is
folded into the file before anything trusts it (DuckDB also folds it on close, but a failure there is silent: a
full disk left the data in a `.wal` that was never published, and an empty database replaced a good one). Then
it must reopen read-only and hold every table with the rows of the file it was loaded from (the event log and
the cases with the build's counts). Only then is it staged beside the transform's outputs, published with them
(transforms/build.py `publish`) and its size and checksum recorded in the transform's state, which the next
transform checks. It remembers what it was built from (`l2c_build`: the checksums of the outputs it loaded and
the SQL files' hash): a load with nothing new keeps it, and a changed view rebuilds only the database, not the
event log. Paths reach DuckDB only as paths: a Parquet file's with its glob characters escaped, and a database
whose path holds a `?` (DuckDB takes the rest for options and misplaces its log) is built in a private temp
directory and copied in. `transform_and_load` is `l2c transform`: both steps under the data directory's run lock.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import duckdb

from config.settings import Settings
from connector.lock import RunLock
from ground.errors import local_error
from ground.files import (
    TEMP_SUFFIX,
    Staging,
    file_stamp,
    machine_errors,
    not_whole,
    publish_file,
    read_back,
    remove_temp_files,
    temp_beside,
)
from transforms.build import CASES_PER_PART, BuildResult, build_outputs, publish

STAMP_TABLE = "l2c_build"


def transform_and_load(settings: Settings, *, full: bool = False,
                       cases_per_part: int = CASES_PER_PART) -> BuildResult:
    """The outputs brought up to date (transforms/build.py) and loaded into the database, published together,
    under the run lock."""
    try:
        with RunLock(settings.data_dir), Staging() as staging:
            result = build_outputs(settings, staging, full=full, cases_per_part=cases_per_part)
            load(result, staging)
            publish(result, staging)
    except OSError as exc:  # the machine refused: files of another user in the data directory are given back whole
        local = local_error(exc, tree=settings.data_dir)
        if local is None:
            raise
        raise local from exc
    return result


def _loaded(result: BuildResult) -> list[Path]:
    return [result.event_log, result.cases_file, result.event_users, *result.tables.values()]


def stamp(result: BuildResult, staging: Staging | None = None) -> str:
    """What a database built from `result` depends on: the content of the files it loads (the stamps the build
    recorded, else the files' own) and the SQL."""
    digest = hashlib.sha256()
    data_dir = result.event_log.parent
    recorded = result.state.outputs if result.state is not None else {}
    for path in _loaded(result):
        content = recorded.get(path.relative_to(data_dir).as_posix()) or file_stamp(_at(path, staging))
        digest.update(f"{path.name}\0{content[0]}\0{content[1]}\0".encode())
    sql = resources.files(__package__ or "sql")
    for name in ("load.sql", "views.sql"):
        digest.update(sql.joinpath(name).read_bytes())
    return digest.hexdigest()


def load(result: BuildResult, staging: Staging | None = None) -> Path:
    """Build `result.database` unless it holds exactly these outputs already (and is the one the build's state
    recorded: the transform checked it against its stamp). With `staging` the new database is staged, to be
    published with the outputs; without, it is published at once."""
    wanted = stamp(result, staging)
    database = result.database
    data_dir = database.parent
    vouched = result.state is None or database.name in result.state.outputs
    if vouched and _built_from(database) == wanted:
        return database
    # What a killed load left: a half-built database and its write-ahead log (and the name older l2c used).
    remove_temp_files(iter([*data_dir.glob(f".{database.name}.*{TEMP_SUFFIX}*"),
                            *data_dir.glob(f"{database.name}.tmp*")]))
    temp = temp_beside(database)
    try:
        with machine_errors(database, temp):
            _build(temp, result, staging, wanted)
            _check(temp, result, staging, wanted)
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        if result.state is not None:
            result.state.record(data_dir, database, file_stamp(temp))
        if staging is None:
            publish_file(temp, database)
        else:
            staging.add(temp, database)
    except BaseException:
        temp.unlink(missing_ok=True)
        Path(f"{temp}.wal").unlink(missing_ok=True)
        raise
    return database


def _build(temp: Path, result: BuildResult, staging: Staging | None, wanted: str) -> None:
    sql = resources.files(__package__ or "sql")
    with _writable(temp) as where:
        with duckdb.connect(where) as con:
            # DuckDB draws a progress bar on stdout, terminal or not, for any query over 2 s (1M leads).
            con.execute("SET enable_progress_bar = false")
            con.execute("SET VARIABLE event_log_path = ?", [_parquet(_at(result.event_log, staging))])
            con.execute("SET VARIABLE cases_path = ?", [_parquet(_at(result.cases_file, staging))])
            con.execute("SET VARIABLE event_users_path = ?", [_parquet(_at(result.event_users, staging))])
            con.execute(sql.joinpath("load.sql").read_text("utf-8"))
            for name, path in sorted(result.tables.items()):
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet(?)', [_parquet(_at(path, staging))])
            con.execute(sql.joinpath("views.sql").read_text("utf-8"))
            con.execute(f"CREATE TABLE {STAMP_TABLE} AS SELECT ? AS stamp", [wanted])
            con.execute("CHECKPOINT")  # the log folded into the file now, where a failure raises
        if Path(f"{where}.wal").exists():
            raise not_whole(temp, "its write-ahead log was not folded into it")


def _check(temp: Path, result: BuildResult, staging: Staging | None, wanted: str) -> None:
    """The built database reopens read-only and holds every table with the rows it was loaded from."""
    expected = {"event_log": result.events, "cases": result.cases,
                "event_resources": read_back(_at(result.event_users, staging)),
                **{name: read_back(_at(path, staging)) for name, path in result.tables.items()}}
    try:
        with duckdb.connect(str(temp), read_only=True) as con:
            found = {name: _count(con, name) for name in expected}
            built = con.execute(f"SELECT stamp FROM {STAMP_TABLE}").fetchone()
    except duckdb.Error as exc:
        raise not_whole(temp, f"it does not reopen ({exc})") from exc
    if found != expected or built is None or built[0] != wanted:
        wrong = {name: rows for name, rows in found.items() if rows != expected[name]}
        raise not_whole(temp, f"its tables hold {wrong} rows, {expected} were loaded")


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0]) if row else -1


def _at(path: Path, staging: Staging | None) -> Path:
    return staging.at(path) if staging is not None else path


def _parquet(path: Path) -> str:
    """`path` as DuckDB's read_parquet reads it literally: absolute (no URL, no `~`), and each glob character
    (`*`, `?`, `[`) in a class of its own, which matches only that character."""
    return re.sub(r"([*?\[])", r"[\1]", os.path.abspath(path))


@contextmanager
def _writable(temp: Path) -> Iterator[str]:
    """Where DuckDB may build the database that is to be `temp`: `temp` itself, unless its path holds a `?`.
    DuckDB reads what follows a `?` as options: the write-ahead log of `/a?b/x` would be `/a.wal?b/x`, even
    through a symlink (the path is resolved). Then a private temp directory, copied to `temp` once built."""
    if "?" not in os.path.abspath(temp):
        yield os.path.abspath(temp)
        return
    with tempfile.TemporaryDirectory(prefix="l2c-duckdb-") as private:
        built = Path(private) / "l2c.duckdb"
        yield str(built)
        shutil.copyfile(built, temp)


def _built_from(database: Path) -> str | None:
    if not database.is_file():
        return None
    try:
        with duckdb.connect(str(database), read_only=True) as con:
            row = con.execute(f"SELECT stamp FROM {STAMP_TABLE}").fetchone()
    except duckdb.Error:
        return None  # older, damaged or foreign: build it again
    return str(row[0]) if row else None
