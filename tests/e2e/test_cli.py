"""`l2c run`, `l2c sandbox serve|advance|truth` and the error contract, through the installed console script."""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import duckdb
import msal
import polars as pl
import pytest

from config.tables import load_tables
from connector.lake import Lake
from connector.tls import trusting_session
from sandbox.orgdata import BASE_CLOCK
from sandbox.schema import TABLES
from sandbox.simulator import simulate
from tests.conftest import in_catalogue
from tests.e2e.conftest import L2C, clean_env

LEADS = "300"


def test_run_without_url_uses_the_sandbox_and_lands_every_row(l2c, tmp_path: Path) -> None:  # noqa: ANN001
    done = l2c("run", L2C_SANDBOX_LEADS=LEADS, L2C_SANDBOX_SEED="7")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "sandbox" in lines[0] and "https://127.0.0.1:" in lines[0]
    org = simulate(7, int(LEADS), BASE_CLOCK)
    lake = Lake(tmp_path / "data")
    declared = [t.name for t in load_tables().table]  # the default config's tables: the org's custom ones are not
    assert set(declared) <= set(org.rows)
    for table in declared:
        frame, pk = org.rows[table], TABLES[table].primary_id
        assert sorted(lake.current(table, pk).get_column(pk).to_list()) == sorted(frame.get_column(pk).to_list())
        assert re.search(rf"^{table}: delta, {frame.height} rows", done.stdout, flags=re.M), table
    assert re.search(r"^transform: \d+ events in \d+ cases", done.stdout, flags=re.M)
    with duckdb.connect(str(tmp_path / "data" / "l2c.duckdb"), read_only=True) as con:
        events = con.execute('select count(*) from event_log_pm4py').fetchone()
    assert events == (in_catalogue(org.truth).height,)
    again = l2c("run", L2C_SANDBOX_LEADS=LEADS, L2C_SANDBOX_SEED="7")
    assert again.returncode == 0, again.stderr
    assert re.search(r"^lead: delta, 0 rows", again.stdout, flags=re.M)  # nothing changed: nothing landed


def test_advance_then_truth_follows_the_simulated_clock(l2c, tmp_path: Path) -> None:  # noqa: ANN001
    assert l2c("sandbox", "advance", "--days", "3", L2C_SANDBOX_LEADS=LEADS).returncode == 0
    out = tmp_path / "truth.parquet"
    done = l2c("sandbox", "truth", "--out", str(out), L2C_SANDBOX_LEADS=LEADS)
    assert done.returncode == 0, done.stderr
    written = pl.read_parquet(out)
    expected = simulate(42, int(LEADS), BASE_CLOCK + timedelta(days=3)).truth
    assert written.equals(expected)
    assert written.get_column("timestamp").max() > BASE_CLOCK  # the advanced days made new history


def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen([L2C, "sandbox", "serve", "--leads", "1000", *extra], cwd=tmp_path,
                            env=clean_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exports: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.match(r"export (\w+)=(.*)$", line.strip())
        if match:
            exports[match.group(1)] = match.group(2).strip("'")
        if "L2C_DATA_DIR" in exports:
            break
    return proc, exports


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201
    proc, exports = _serve(tmp_path)
    yield exports
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def test_serve_prints_exports_that_msal_and_l2c_can_use(served: dict[str, str], tmp_path: Path) -> None:
    for name in ("DATAVERSE_URL", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
                 "AZURE_AUTHORITY_HOST", "L2C_CA_BUNDLE"):
        assert served.get(name), name
    session = trusting_session(Path(served["L2C_CA_BUNDLE"]))
    app = msal.ConfidentialClientApplication(
        served["AZURE_CLIENT_ID"], authority=f"{served['AZURE_AUTHORITY_HOST']}/{served['AZURE_TENANT_ID']}",
        client_credential=served["AZURE_CLIENT_SECRET"], instance_discovery=False, http_client=session)
    token = app.acquire_token_for_client(scopes=[f"{served['DATAVERSE_URL']}/.default"])
    assert "access_token" in token, token
    who = session.get(f"{served['DATAVERSE_URL']}/api/data/v9.2/WhoAmI",
                      headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=30)
    assert who.status_code == 200 and who.json()["UserId"]
    done = subprocess.run([L2C, "extract"], cwd=tmp_path, env=clean_env(tmp_path, **served), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "sandbox" not in done.stdout.splitlines()[0]  # a configured URL is used as a real environment


def test_wrong_secret_exits_3_with_one_line_and_no_secret(served: dict[str, str], tmp_path: Path) -> None:
    wrong = "not-the-secret-" + "x" * 20
    done = subprocess.run([L2C, "extract"], cwd=tmp_path,
                          env=clean_env(tmp_path, **{**served, "AZURE_CLIENT_SECRET": wrong}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if line.startswith("l2c: error:")]
    assert len(errors) == 1 and "AADSTS7000215" in errors[0]
    assert "Traceback" not in done.stderr
    assert wrong not in done.stdout + done.stderr


@pytest.mark.parametrize(("flag", "code"), [("--not-member", "0x80072560"), ("--api-restricted", "0x80095ffc")])
def test_an_app_the_org_refuses_exits_3_with_one_line(tmp_path: Path, flag: str, code: str) -> None:
    proc, served = _serve(tmp_path, flag)
    try:
        done = subprocess.run([L2C, "extract"], cwd=tmp_path, env=clean_env(tmp_path, **served),
                              capture_output=True, text=True, timeout=120)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("l2c: error:")]
    assert len(errors) == 1 and code in errors[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({"DATAVERSE_URL": "http://contoso.crm.dynamics.com"}, "DATAVERSE_URL"),
    ({"L2C_MAX_CONCURRENCY": "500"}, "L2C_MAX_CONCURRENCY"),
    ({"L2C_PAGE_SIZE": "0"}, "L2C_PAGE_SIZE"),
    ({"DATAVERSE_URL": "https://contoso.crm.dynamics.com"}, "AZURE_TENANT_ID"),
])
def test_bad_configuration_exits_2_naming_the_setting(l2c, env: dict[str, str], message: str) -> None:  # noqa: ANN001
    done = l2c("extract", **env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_usage_error_exits_2(l2c) -> None:  # noqa: ANN001
    assert l2c("frobnicate").returncode == 2


def test_an_unknown_declared_column_exits_2_before_reading_data(l2c, tmp_path: Path) -> None:  # noqa: ANN001
    tables = tmp_path / "tables.toml"
    tables.write_text('[[table]]\nname = "lead"\ncolumns = ["leadid", "favouritecolour"]\n')
    done = l2c("extract", L2C_TABLES=str(tables), L2C_SANDBOX_LEADS=LEADS)
    assert done.returncode == 2, done.stderr
    assert "table lead: column favouritecolour does not exist" in done.stderr
    assert not (tmp_path / "data" / "raw").exists() or not any((tmp_path / "data" / "raw").iterdir())


def test_doctor_and_status_report_per_table(l2c) -> None:  # noqa: ANN001
    doctor = l2c("doctor", L2C_SANDBOX_LEADS=LEADS)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(r"^ok\s+sign-in", doctor.stdout, flags=re.M)
    assert re.search(r"^ok\s+audit details: RetrieveAuditDetails readable", doctor.stdout, flags=re.M)
    assert l2c("run", L2C_SANDBOX_LEADS=LEADS).returncode == 0
    status = l2c("status", L2C_SANDBOX_LEADS=LEADS)
    assert status.returncode == 0
    org = simulate(42, int(LEADS), BASE_CLOCK)
    assert re.search(rf"^lead\s+delta\s+\S+\s+{org.rows['lead'].height}\s", status.stdout, flags=re.M), status.stdout
