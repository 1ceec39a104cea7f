"""What many test modules share, in every folder: settings that point l2c at a running sandbox, and the truth's
events of the default activity catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from config.settings import Settings
from sandbox.runtime import Sandbox
from sandbox.simulator import ACTIVITIES


def settings_for(sandbox: Sandbox, data_dir: Path, **extra: Any) -> Settings:
    env = sandbox.env()
    return Settings(
        DATAVERSE_URL=env["DATAVERSE_URL"], AZURE_TENANT_ID=env["AZURE_TENANT_ID"],  # type: ignore[call-arg]
        AZURE_CLIENT_ID=env["AZURE_CLIENT_ID"], AZURE_CLIENT_SECRET=env["AZURE_CLIENT_SECRET"],
        AZURE_AUTHORITY_HOST=env["AZURE_AUTHORITY_HOST"], L2C_CA_BUNDLE=env["L2C_CA_BUNDLE"],
        L2C_DATA_DIR=str(data_dir), **extra,
    )


def in_catalogue(truth: pl.DataFrame) -> pl.DataFrame:
    """The truth's events of the default activity catalogue: the custom tables' activities (e.g. Contract Signed)
    are in the truth but not in l2c's default config."""
    return truth.filter(pl.col("activity").is_in(ACTIVITIES))
