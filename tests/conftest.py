"""What many test modules share, in every folder: settings that point l2c at a running sandbox, the truth's
events of the default activity catalogue, and a JSON document with one field changed or dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from config.settings import Settings
from sandbox.runtime import Sandbox
from sandbox.simulator import ACTIVITIES
from tests.connector.azurite import Azurite, start_azurite, stop


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


class _Drop:
    def __repr__(self) -> str:  # the same test id in every xdist worker
        return "DROP"


DROP = _Drop()  # with_field: the field is removed


def with_field(document: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """A copy of `document` with the field at `path` (keys from the top) set to `value`, or removed: DROP."""
    changed = json.loads(json.dumps(document))
    *parents, name = path
    node = changed
    for part in parents:
        node = node[part]
    if value is DROP:
        del node[name]
    else:
        node[name] = value
    return changed  # type: ignore[no-any-return]


# --- azurite: Microsoft's Azure Storage emulator over HTTPS (tests/connector/azurite.py): the remote
# Link export tests of tests/connector and tests/e2e ---------------------------------------------------------------

@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    process, service = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield service
    finally:
        stop(process)
