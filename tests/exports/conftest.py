"""A sandbox org extracted twice (deletions, rework and payments included) and transformed, shared by the export
and report tests: `built.settings` points `l2c` at its data directory; `built.log` and `built.cases` are the
event log and cases the exports must reproduce. Also the helpers the tabular exports' tests share: an event log
written as a data directory's outputs, a synthetic log, the DFG counted from a log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from config.settings import Settings
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms.build import object_versions

ORDER = ["case_id", "timestamp", "activity", "event_id"]
CASE_ATTRIBUTES = ["case_type", "owner", "outcome", "amount", "currency", "lead_source", "stage", "account", "region"]


def log_dfg(log: pl.DataFrame) -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int]]:
    """(edges, start activities, end activities) counted from the event log in its order, with polars."""
    ordered = log.sort(ORDER)
    edges = ordered.select(
        pl.col("activity").alias("a"), pl.col("activity").shift(-1).over("case_id").alias("b")
    ).drop_nulls().group_by("a", "b").len()
    starts = ordered.group_by("case_id", maintain_order=True).first().get_column("activity").value_counts()
    ends = ordered.group_by("case_id", maintain_order=True).last().get_column("activity").value_counts()
    return ({(a, b): n for a, b, n in edges.iter_rows()}, dict(starts.iter_rows()), dict(ends.iter_rows()))


def data_dir_with(tmp: Path, log: pl.DataFrame, settings: Settings) -> Settings:
    """A data directory holding `log` as its event log (and the other outputs `exports.outputs` insists on)."""
    tmp.mkdir(parents=True, exist_ok=True)
    log.write_parquet(tmp / "event_log.parquet")
    log.group_by("case_id", maintain_order=True).first().select("case_id", *CASE_ATTRIBUTES).write_parquet(
        tmp / "cases.parquet")
    duckdb.connect(str(tmp / "l2c.duckdb")).close()
    return settings.model_copy(update={"data_dir": tmp})


def synthetic_log(schema: pl.Schema, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Event-log rows with the real schema; unspecified columns are null, end_timestamp = timestamp."""
    frame = pl.DataFrame([{c: row.get(c) for c in schema.names()} for row in rows], schema=schema, orient="row")
    return frame.with_columns(pl.col("timestamp").alias("end_timestamp")).sort(ORDER)


@dataclass
class Built:
    settings: Settings
    log: pl.DataFrame  # event_log.parquet
    cases: pl.DataFrame  # cases.parquet

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


def build_org(root: Path, *, seed: int = 11, leads: int = 400, advances: tuple[float, ...] = (3.0,)) -> Built:
    with Sandbox(root / "sb", OrgState(seed=seed, leads=leads)) as sandbox:
        settings = settings_for(sandbox, root / "data")
        assert extract(settings).exit_code == 0
        for days in advances:
            sandbox.advance(days)
            assert extract(settings).exit_code == 0
        result = transform(settings)
    object_versions(settings)  # what `l2c export` prepares before an OCEL export
    return Built(settings, pl.read_parquet(result.event_log), pl.read_parquet(settings.data_dir / "cases.parquet"))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    yield build_org(tmp_path_factory.mktemp("exports"))
