"""A sandbox org extracted twice (deletions, rework and payments included) and transformed, shared by the export
and report tests: `built.settings` points `l2c` at its data directory; `built.log` and `built.cases` are the
event log and cases the exports must reproduce."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from config.settings import Settings
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.connector.test_extract import settings_for
from transforms.build import object_versions


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
