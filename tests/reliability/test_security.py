"""Issue #13, security, through the real `l2c` against the sandbox over HTTPS.

Secrets (the client secret, a certificate's password, wrong ones typed by mistake, and every access token the
sandbox issued) appear in no output (`--verbose` and tracebacks included) and in no file of the data directory,
read as bytes and, for Parquet and DuckDB whose compression would hide a plain match, as decoded values. Files
that hold delta links and the lock are user-only whatever the umask. TLS cannot be switched off: an untrusted
certificate ends the run with exit 2 (ConfigError, as connector/tls.py and connector/http.py promise: the fix is
L2C_CA_BUNDLE) and one line, whatever REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE say; no client code disables
verification. OData string literals round-trip through the sandbox's own $filter parser.
"""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.odata import Query, literal
from sandbox import odata, tls
from sandbox.runtime import OrgState, Sandbox
from sandbox.schema import TABLES
from sandbox.wire import Request
from tests.e2e.conftest import L2C, clean_env

SEED, LEADS = 9, 200
PASSWORD = "pfx-Pa55w0rd-" + "k" * 12
WRONG_PASSWORD = "not-the-pfx-password-" + "q" * 12
WRONG_SECRET = "not-the-secret-" + "z" * 24
TRUST_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, list[str]]]:
    """The sandbox, and every access token its Entra has issued so far (a spy on `issue_token`)."""
    with Sandbox(tmp_path_factory.mktemp("sb"), OrgState(seed=SEED, leads=LEADS)) as sb:
        assert sb.entra is not None
        issued: list[str] = []
        mint = sb.entra.issue_token

        def spy(*args: Any, **kwargs: Any) -> str:
            token = mint(*args, **kwargs)
            issued.append(token)
            return token

        sb.entra.issue_token = spy  # type: ignore[method-assign]
        yield sb, issued


def l2c(cwd: Path, env: dict[str, str], *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """The console script under a fixed umask (so modes do not depend on the caller's), data in `cwd/data`."""
    command = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', L2C, *args]
    return subprocess.run(command, cwd=cwd, env=clean_env(cwd, **env), capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


def secret_env(sb: Sandbox, **changes: str) -> dict[str, str]:
    return {**sb.env(), **changes}


def certificate_env(sb: Sandbox, path: Path, password: str) -> dict[str, str]:
    env = sb.env(certificate=True)
    env.update(AZURE_CLIENT_CERTIFICATE_PATH=str(path), AZURE_CLIENT_CERTIFICATE_PASSWORD=password)
    return env


def encrypted_bundle(sb: Sandbox, path: Path) -> Path:
    """The sandbox app's registered certificate with its key encrypted by PASSWORD, as a PEM bundle."""
    key = serialization.load_pem_private_key(sb.certificate.private_key_pem, password=None)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(PASSWORD.encode()))
    path.write_bytes(pem + sb.certificate.cert_pem)
    path.chmod(0o600)
    return path


def needles(sb: Sandbox, issued: list[str]) -> dict[str, str]:
    """What must never be written anywhere: name -> value (a token's signature alone is a leak too)."""
    found = {"client secret": sb.client_secret, "wrong secret": WRONG_SECRET, "certificate password": PASSWORD,
             "wrong password": WRONG_PASSWORD}
    for number, token in enumerate(issued):
        found[f"access token {number}"] = token
        found[f"signature of access token {number}"] = token.rsplit(".", 1)[1]
    return found


def readable_texts(data: Path) -> Iterator[tuple[str, str]]:
    """(where, text) for every file under `data`: its bytes, and the decoded values of Parquet and DuckDB files."""
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        where = str(path.relative_to(data))
        yield where, path.read_bytes().decode("latin-1")
        if path.suffix == ".parquet":
            yield f"{where} (values)", repr(pl.read_parquet(path).rows())
        elif path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                names = [row[0] for row in con.execute("select table_name from information_schema.tables").fetchall()]
                for name in names:
                    yield f"{where}:{name}", repr(con.execute(f'select * from "{name}"').fetchall())


def leaks(secrets: dict[str, str], outputs: list[str], data: Path) -> list[str]:
    texts = [(f"output {i}", text) for i, text in enumerate(outputs)] + list(readable_texts(data))
    return [f"{name} in {where}" for where, text in texts for name, value in secrets.items() if value in text]


def outputs_of(*runs: subprocess.CompletedProcess[str]) -> list[str]:
    return [text for done in runs for text in (done.stdout, done.stderr)]


# --- secrets ------------------------------------------------------------------------------------------------

def test_runs_doctor_and_status_write_no_secret_or_token_and_nothing_world_writable(
        sandbox: tuple[Sandbox, list[str]], tmp_path: Path) -> None:
    sb, issued = sandbox
    before = len(issued)
    first = l2c(tmp_path, secret_env(sb), "run")
    assert first.returncode == 0, first.stderr
    sb.advance(2)  # the verbose run has changes, audit rows and details to read
    verbose = l2c(tmp_path, secret_env(sb), "--verbose", "run")
    assert verbose.returncode == 0, verbose.stderr
    checks = [l2c(tmp_path, secret_env(sb), *args) for args in (["--verbose", "doctor"], ["status"])]
    assert [done.returncode for done in checks] == [0, 0], [done.stdout for done in checks]
    assert len(issued) > before  # the runs signed in: their tokens are among the needles
    assert leaks(needles(sb, issued), outputs_of(first, verbose, *checks), tmp_path / "data") == []
    data = tmp_path / "data"  # and under the usual umask 022, nothing in it is world-writable
    assert [p for p in [data, *data.rglob("*")] if p.stat().st_mode & stat.S_IWOTH] == []


def test_a_wrong_secret_fails_with_exit_3_and_no_secret_even_verbose(sandbox: tuple[Sandbox, list[str]],
                                                                     tmp_path: Path) -> None:
    sb, issued = sandbox
    done = l2c(tmp_path, secret_env(sb, AZURE_CLIENT_SECRET=WRONG_SECRET), "--verbose", "run")
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("l2c: error:")]
    assert len(errors) == 1 and "AADSTS7000215" in errors[0], done.stderr
    assert leaks(needles(sb, issued), outputs_of(done), tmp_path / "data") == []


def test_certificate_credentials_write_no_password_or_token(sandbox: tuple[Sandbox, list[str]],
                                                            tmp_path: Path) -> None:
    sb, issued = sandbox
    bundle = encrypted_bundle(sb, tmp_path / "app.pem")
    good = l2c(tmp_path, certificate_env(sb, bundle, PASSWORD), "--verbose", "extract")
    assert good.returncode == 0, good.stderr
    wrong = l2c(tmp_path, certificate_env(sb, bundle, WRONG_PASSWORD), "--verbose", "extract")
    assert wrong.returncode == 2, wrong.stderr
    assert re.search(r"^l2c: error: cannot load the certificate in .*app\.pem", wrong.stderr, flags=re.M), wrong.stderr
    stranger = tls.make_client_certificate(tmp_path / "unregistered", password=PASSWORD)  # not on the app
    assert stranger.bundle_path is not None
    unknown = l2c(tmp_path, certificate_env(sb, stranger.bundle_path, PASSWORD), "extract")
    assert unknown.returncode == 3, unknown.stderr
    assert "AADSTS700027" in unknown.stderr and "Traceback" not in unknown.stderr
    assert unknown.stderr.count("l2c: error:") == 1, unknown.stderr  # after a good run: one sign-in, one error
    assert leaks(needles(sb, issued), outputs_of(good, wrong, unknown), tmp_path / "data") == []


# --- file modes ---------------------------------------------------------------------------------------------

def test_state_manifests_and_lock_are_user_only_whatever_the_umask(sandbox: tuple[Sandbox, list[str]],
                                                                   tmp_path: Path) -> None:
    sb, _ = sandbox
    done = l2c(tmp_path, secret_env(sb), "extract", umask=0o000)
    assert done.returncode == 0, done.stderr
    data = tmp_path / "data"
    protected = [data / ".l2c.lock", *(data / "state").glob("*.state.json"), *(data / "runs").glob("*.json")]
    assert len(protected) > 10
    modes = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in protected}
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
    for directory in (data / "state", data / "runs"):  # delta links and the manifests that repeat them
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


# --- TLS ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trust_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("trust")
    (base / "empty.pem").write_text("")
    (base / "other-ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    return {"empty": str(base / "empty.pem"), "other": str(base / "other-ca.pem")}


@pytest.mark.parametrize("case", ["no L2C_CA_BUNDLE", "REQUESTS_CA_BUNDLE=sandbox CA", "CURL_CA_BUNDLE=sandbox CA",
                                  "both=empty file", "L2C_CA_BUNDLE=another CA"])
def test_an_untrusted_certificate_fails_with_exit_2_whatever_the_environment_says(
        sandbox: tuple[Sandbox, list[str]], trust_files: dict[str, str], tmp_path: Path, case: str) -> None:
    sb, _ = sandbox
    env = sb.env()
    ca = env.pop("L2C_CA_BUNDLE")
    env.update({"REQUESTS_CA_BUNDLE=sandbox CA": {"REQUESTS_CA_BUNDLE": ca},
                "CURL_CA_BUNDLE=sandbox CA": {"CURL_CA_BUNDLE": ca},
                "both=empty file": dict.fromkeys(TRUST_VARIABLES, trust_files["empty"]),
                "L2C_CA_BUNDLE=another CA": {"L2C_CA_BUNDLE": trust_files["other"]}}.get(case, {}))
    done = l2c(tmp_path, env, "run")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(r"l2c: error: the TLS certificate of 127\.0\.0\.1:\d+ is not trusted\. .*L2C_CA_BUNDLE.*",
                        lines[0]), lines[0]
    assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "data" / "state").exists()


def test_the_environment_cannot_take_away_the_trust_l2c_was_given(sandbox: tuple[Sandbox, list[str]],
                                                                   trust_files: dict[str, str], tmp_path: Path) -> None:
    sb, _ = sandbox
    done = l2c(tmp_path, {**sb.env(), **dict.fromkeys(TRUST_VARIABLES, trust_files["empty"])}, "extract")
    assert done.returncode == 0, done.stderr


VERIFICATION_OFF = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
                              r"|InsecureRequestWarning|PYTHONHTTPSVERIFY")


def test_no_client_code_switches_verification_off() -> None:
    sources = [p for package in ("connector", "l2c", "config") for p in sorted((REPO / package).rglob("*.py"))]
    assert len(sources) > 20
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in sources
             for n, line in enumerate(p.read_text("utf-8").splitlines(), 1) if VERIFICATION_OFF.search(line)]
    assert found == []


# --- OData literals -----------------------------------------------------------------------------------------

def _decoys(name: str) -> set[str]:
    """Texts a broken escape would match instead of (or as well as) `name`."""
    return {name + "'", "'" + name, name.replace("'", "''"), name.replace("'", ""), name.replace("'", "\\'"),
            name + "' or name ne '", "x" + name, name + " "}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=30))  # what a URL can carry: no lone surrogates
@example("O'Brien \"&\" Sons")
@example("'; DROP TABLE account; --")
@example("x' or name ne 'y")
@example("''")
@example("50% off_[sale] \\ #1 + ?=&;")
def test_a_string_literal_matches_exactly_its_own_text_in_the_sandbox_filter(name: str) -> None:
    candidates = sorted({name, *_decoys(name)})
    url = Query("accounts", ["name"], filter=f"name eq {literal(name)}").url()
    path, _, query = url.partition("?")
    parsed = odata.parse_query(TABLES["account"], Request("GET", f"/api/data/v9.2/{path}", query).query_params(), None)
    assert parsed.filter is not None
    matched = pl.DataFrame({"name": candidates}).filter(parsed.filter).get_column("name").to_list()
    # Dataverse compares strings case-insensitively ([PD] webapi/query/filter-rows.md); nothing else may differ.
    assert sorted(matched) == [c for c in candidates if c.lower() == name.lower()]
