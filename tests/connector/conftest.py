"""Fixtures for the connector's HTTPS tests: a small sandbox org per test and clients pointed at it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from config.activities import detail_columns, load_activities
from config.settings import Settings
from config.tables import load_tables
from connector.audit import OP_DELETE, OP_UPDATE, mask_numbers
from connector.http import DataverseClient
from sandbox.runtime import OrgState, Sandbox
from sandbox.schema import TABLES
from sandbox.tls import SandboxTLS, make_tls
from tests.realdata.org import ScriptedOrg

SCRUBBED_PREFIXES = ("DATAVERSE_", "AZURE_", "L2C_")


@pytest.fixture
def http_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A 200-lead sandbox over HTTPS; the developer's Dataverse/Azure/L2C variables do not leak in."""
    for name in [n for n in os.environ if n.startswith(SCRUBBED_PREFIXES)]:
        monkeypatch.delenv(name)
    with Sandbox(tmp_path / "sandbox", OrgState(seed=7, leads=200)) as sandbox:
        yield sandbox


@pytest.fixture
def http_settings(http_sandbox: Sandbox) -> Settings:
    return Settings(**http_sandbox.env(), L2C_MAX_CONCURRENCY=4, _env_file=None)  # type: ignore[arg-type, call-arg]


@pytest.fixture
def http_client(http_settings: Settings) -> Iterator[Callable[..., DataverseClient]]:
    """Build clients with test-sized backoff (the constructor's arguments override); closed at teardown."""
    made: list[DataverseClient] = []

    def make(settings: Settings | None = None, **kwargs: Any) -> DataverseClient:
        options: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.1, "budget_s": 30.0,
                                   "read_timeout": 10.0, **kwargs}
        client = DataverseClient(settings or http_settings, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# --- scripted_org: real payloads over HTTPS (tests/realdata) ---------------------------------------------

@pytest.fixture(scope="session")
def realdata_tls(tmp_path_factory: pytest.TempPathFactory) -> SandboxTLS:
    return make_tls(tmp_path_factory.mktemp("realdata_tls"))


@pytest.fixture
def scripted_org(realdata_tls: SandboxTLS, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedOrg]:
    """An org that answers each Web API request with the next scripted payload (tests/realdata/org.py)."""
    for name in [n for n in os.environ if n.startswith(SCRUBBED_PREFIXES)]:
        monkeypatch.delenv(name)
    org = ScriptedOrg(realdata_tls).start()
    yield org
    org.stop()


# --- lake_: a child process SIGKILLed in the middle of a durable write (test_lake.py, test_state.py) --------

LAKE_PRELUDE = '''
import os, sys
def pause(*args, **kwargs):
    print("PAUSED", flush=True)
    sys.stdin.read()  # never answered: the parent SIGKILLs this process here
'''


# Pauses (to be SIGKILLed) when a regular file is fsynced: the data is written but not yet renamed into place.
PAUSE_BEFORE_RENAME = """
import stat
real_fsync = os.fsync
def fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        pause()
    real_fsync(fd)
os.fsync = fsync
"""


@pytest.fixture
def lake_kill_during() -> Callable[[str], None]:
    """Run `code` in a fresh interpreter (after LAKE_PRELUDE); when it calls `pause()` it is SIGKILLed."""
    import signal
    import subprocess
    import sys
    import textwrap

    repo = Path(__file__).resolve().parents[2]

    def run(code: str) -> None:
        child = subprocess.Popen([sys.executable, "-c", LAKE_PRELUDE + textwrap.dedent(code)], cwd=repo, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "PAUSED\n", f"the child ended before its crash point: {child.communicate()[1]}"
            child.kill()
            assert child.wait() == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate()

    return run


def expected_details(sandbox: Sandbox) -> set[str]:
    """Update audit rows whose attributemask names a column a rule reads or a declared audit column, and Delete
    rows, from the org's audit."""
    out: set[str] = set()
    audits = sandbox.org.audits
    tables = load_tables()
    rule_columns = detail_columns(load_activities(None, tables))
    for cfg in tables.audited:
        numbers = {TABLES[cfg.name].by_name[c].number for c in {*cfg.audit_columns, *rule_columns.get(cfg.name, ())}}
        rows = audits.filter(pl.col("objecttypecode") == cfg.name)
        for auditid, operation, mask in rows.select("auditid", "operation", "attributemask").iter_rows():
            if (operation == OP_UPDATE and mask_numbers(mask) & numbers) or operation == OP_DELETE:
                out.add(auditid)
    return out
