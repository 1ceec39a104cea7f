"""A sandbox org extracted and transformed once per test module: the database the views run on, next to the
simulator's own record of the org (truth events of the default catalogue, which l2c's default config extracts,
and live rows), which the expected values come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from config.settings import Settings
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load as transform
from tests.conftest import in_catalogue, settings_for
from transforms.build import BuildResult

# Seed 12 has sales reps at UTC+00:00 as well as east and west of it (UserLocal dates shift only for some).
SEED, LEADS = 12, 1000


@dataclass
class BuiltOrg:
    settings: Settings
    result: BuildResult
    truth: pl.DataFrame
    rows: dict[str, pl.DataFrame]


def build_org(tmp: Path, seed: int = SEED, leads: int = LEADS) -> BuiltOrg:
    with Sandbox(tmp / "sandbox", OrgState(seed=seed, leads=leads)) as sandbox:
        settings = settings_for(sandbox, tmp / "data")
        extracted = extract(settings)
        assert extracted.exit_code == 0, extracted.errors
        result = transform(settings)
        return BuiltOrg(settings, result, in_catalogue(sandbox.org.truth), dict(sandbox.org.rows))
