"""sql/load.py: l2c.duckdb is built from the transform's outputs and rebuilt only when they (or the SQL) changed;
a damaged or foreign database is rebuilt; a load killed half-way leaves the previous database, and its temp files
are cleared by the next one. Expected tables come from the outputs' own Parquet files, never from the loader."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import polars as pl
import pytest

from sql import load as loader
from tests.sql.org import BuiltOrg, build_org
from transforms.build import BuildResult


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> BuiltOrg:
    return build_org(tmp_path_factory.mktemp("load"), seed=3, leads=200)


@pytest.fixture
def result(org: BuiltOrg, tmp_path: Path) -> BuildResult:
    """The org's build result over a copy of its data directory (each test may spoil its own)."""
    data = tmp_path / "data"
    shutil.copytree(org.settings.data_dir, data)
    old = org.result
    moved = {name: data / path.relative_to(old.event_log.parent) for name, path in old.tables.items()}
    return BuildResult(old.events, old.cases, old.orphans, data / old.event_log.name, data / old.database.name,
                       data / old.cases_file.name, data / old.event_users.relative_to(old.event_log.parent),
                       moved, dict(old.quality))


def tables(database: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(database), read_only=True) as con:
        names = [row[0] for row in con.execute("select table_name from duckdb_tables()").fetchall()]
        return {name: con.sql(f'select * from "{name}"').pl() for name in names}


def same(loaded: pl.DataFrame, written: pl.DataFrame) -> bool:
    """Equal frames; DuckDB names UTC "Etc/UTC", the same instant as Parquet's "UTC"."""
    utc = [pl.col(name).dt.convert_time_zone("UTC") for name, dtype in loaded.schema.items()
           if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None]
    return loaded.with_columns(utc).equals(written)


def test_the_database_holds_every_output_as_a_table(result: BuildResult) -> None:
    loaded = tables(loader.load(result))
    assert same(loaded["event_log"], pl.read_parquet(result.event_log))
    assert same(loaded["cases"], pl.read_parquet(result.cases_file).sort("case_id"))
    assert set(result.tables) <= set(loaded) and result.tables  # the quality report and the analysis tables
    for name, path in result.tables.items():
        assert same(loaded[name], pl.read_parquet(path)), name


def test_nothing_new_keeps_the_database_and_a_changed_output_rebuilds_it(result: BuildResult) -> None:
    database = loader.load(result)
    built = database.stat().st_mtime_ns
    assert loader.load(result).stat().st_mtime_ns == built  # the same outputs, the same SQL: untouched
    log = pl.read_parquet(result.event_log)
    log.head(10).write_parquet(result.event_log)  # the transform wrote another log
    assert loader.load(replace(result, events=10)).stat().st_mtime_ns != built
    assert tables(database)["event_log"].height == 10


def test_a_damaged_or_foreign_database_is_built_again(result: BuildResult) -> None:
    result.database.write_bytes(b"not a database")
    assert tables(loader.load(result))["event_log"].height == result.events
    with duckdb.connect(str(result.database)) as con:  # a database without the stamp: someone else's
        con.execute(f"DROP TABLE {loader.STAMP_TABLE}")
    assert loader.stamp(result) is not None
    assert tables(loader.load(result))[loader.STAMP_TABLE].item() == loader.stamp(result)


def test_a_killed_load_keeps_the_previous_database_and_the_next_clears_its_temp_files(
        result: BuildResult, monkeypatch: pytest.MonkeyPatch) -> None:
    loader.load(result)
    before = result.database.read_bytes()
    pl.read_parquet(result.event_log).head(5).write_parquet(result.event_log)  # something new to load
    result = replace(result, events=5)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loader, "publish_file", killed)
        with pytest.raises(KeyboardInterrupt):
            loader.load(result)
    assert result.database.read_bytes() == before
    # A SIGKILL leaves the half-built temp file behind (the exception path removes it): plant one.
    stale = result.database.parent / f".{result.database.name}.1234.abcdef00.tmp"
    stale.write_bytes(b"half")
    loader.load(result)
    assert not stale.exists() and tables(result.database)["event_log"].height == 5
