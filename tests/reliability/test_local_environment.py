"""Issue 24, the local environment and the edges of input, made for real against the sandbox (seed 42, 300 leads)
over HTTPS.

The machine refuses (a disk that fills up during the extract, a read-only mount, an immutable state folder, a state
folder or state files of another user, a read-only or full `--out` folder), with a tmpfs, bind mounts, chattr and a
non-root uid: each is exit 6 and one line naming the path and the fix, no traceback; the run manifest records the
failure and `l2c status` shows it; nothing landed is damaged: once the machine is fixed, the next run completes and
its lake equals a clean run's. The edges of input: a 150k-line `.env`, a certificate refused for clock skew, a
metadata cache dated in the future, a wrong secret with non-ASCII characters, `--out` to a FIFO, a device or a
symlink (a FIFO and a `mknod` device in tmp: never the real /dev/stdout)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from config.tables import load_tables
from connector import metadata
from connector.extract import extract
from connector.http import DataverseClient
from connector.lake import Lake
from ground.files import TEMP_SUFFIX
from l2c.cli import main
from sandbox.runtime import OrgState, Sandbox
from sql.load import transform_and_load
from tests.conftest import settings_for
from tests.e2e.conftest import L2C, clean_env
from tests.reliability.conftest import Machine, unavailable

STREAMS = [t.name for t in load_tables().table] + ["audit", "audit_details"]
PAGE_SIZE = "100"  # more pages, so a filling disk stops the extract at more different moments
SERVICE_UID = 42424  # a user without a name, like a service account of another machine
OTHER_UID = 42425


@dataclass
class Org:
    sandbox: Sandbox
    clean: dict[str, str]  # every stream's lake fingerprint after a clean extract
    shared: Path  # a folder every uid can enter (the sandbox's CA is there)
    outputs: Path  # a data directory after a clean extract and transform (for exports)


@pytest.fixture(scope="module")
def org() -> Iterator[Org]:
    shared = Path(tempfile.mkdtemp(prefix="l2c-local-env-"))
    shared.chmod(0o755)
    try:
        with Sandbox(shared / "sandbox", OrgState(seed=42, leads=300)) as sandbox:
            settings = settings_for(sandbox, shared / "clean", L2C_PAGE_SIZE=int(PAGE_SIZE))
            assert extract(settings).exit_code == 0
            transform_and_load(settings)
            yield Org(sandbox, fingerprints(settings.data_dir), shared, settings.data_dir)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def fingerprints(data: Path) -> dict[str, str]:
    return {stream: Lake(data).fingerprint(stream) for stream in STREAMS}


def temp_files(data: Path) -> list[Path]:
    return [p for p in data.rglob(f".*{TEMP_SUFFIX}")]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("l2c: error:")]


Cli = Callable[..., Ran]


@pytest.fixture
def l2c(org: Org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`l2c ARGS` in this process (l2c.cli.main) with L2C_DATA_DIR=data, pointed at the org's sandbox; `env` sets
    more variables (None: unsets one)."""
    for name in [n for n in os.environ if n.startswith(("DATAVERSE_", "AZURE_", "L2C_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env

    def call(data: Path, *args: str, env: dict[str, str | None] | None = None) -> Ran:
        with monkeypatch.context() as scoped:
            for name, value in {**org.sandbox.env(), "L2C_PAGE_SIZE": PAGE_SIZE, "L2C_DATA_DIR": str(data),
                                **(env or {})}.items():
                if value is None:
                    scoped.delenv(name, raising=False)
                else:
                    scoped.setenv(name, value)
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
        return Ran(code, out, err)

    return call


def last_manifest(data: Path) -> dict[str, object]:
    return json.loads(sorted((data / "runs").glob("*.json"))[-1].read_text())  # type: ignore[no-any-return]


def assert_one_line(ran: Ran, *needles: str) -> str:
    """Exit 6, one error line holding every needle, no traceback."""
    assert ran.code == 6, ran.err
    assert "Traceback" not in ran.err and "internal error" not in ran.err, ran.err
    assert len(ran.errors) == 1, ran.err
    for needle in needles:
        assert needle in ran.errors[0], (needle, ran.err)
    return ran.errors[0]


def assert_recorded(l2c: Cli, data: Path, *needles: str) -> None:
    """The run manifest says failed, exit 6, with the line; `l2c status` shows it."""
    manifest = last_manifest(data)
    assert (manifest["status"], manifest["exit_code"]) == ("failed", 6), manifest
    assert all(needle in str(manifest["error"]) for needle in needles), manifest["error"]
    shown = l2c(data, "status")
    assert shown.code == 0, shown.err
    last = shown.out.splitlines()[-1]
    assert last.startswith(f"last run {manifest['run_id']}: failed, exit 6: "), shown.out
    assert all(needle in last for needle in needles), last


# Sizes of the data directory's file system for a first extract, from too small for the first state file to enough.
# A denser sweep by hand: L2C_EXTRACT_FULL_DISK_KIB=first:last:step (e.g. 8:900:8); CI found a full disk at 160k
# failing the page register's append, whose OSError named no file.
EXTRACT_SIZES = ([f"{k}k" for k in range(*map(int, os.environ["L2C_EXTRACT_FULL_DISK_KIB"].split(":")))]
                 if os.environ.get("L2C_EXTRACT_FULL_DISK_KIB") else ["40k", "160k", "440k", "760k"])


@pytest.mark.parametrize("size", EXTRACT_SIZES)
def test_a_disk_that_fills_during_the_extract_exits_6_and_the_next_run_equals_a_clean_one(
        org: Org, l2c: Cli, machine: Machine, size: str) -> None:
    data = machine.tmpfs(size)
    full = l2c(data, "extract")
    if full.code == 0:  # never exit 0 with fewer rows
        assert fingerprints(data) == org.clean
    else:
        line = assert_one_line(full, f"cannot write {data}/", "no space left on the device")
        assert "Free space there" in line
        if list((data / "runs").glob("*.json")):  # best effort: the same full disk may refuse it, even at the start
            manifest = last_manifest(data)
            assert manifest["status"] in ("running", "failed")
            if manifest["status"] == "failed":
                assert manifest["exit_code"] == 6 and "no space left" in str(manifest["error"])
        shown = l2c(data, "status")
        assert shown.code == 0, shown.err
    machine.remount(data, "size=64m")
    again = l2c(data, "extract")
    assert again.code == 0, again.err
    assert fingerprints(data) == org.clean
    assert temp_files(data) == []


def test_a_read_only_mount_exits_6_records_it_and_the_next_run_completes(org: Org, l2c: Cli, machine: Machine,
                                                                         tmp_path: Path) -> None:
    data = tmp_path / "data"
    raw = machine.read_only(data / "raw")  # the lake on a read-only mount (e.g. a share mounted ro)
    refused = l2c(data, "extract")
    assert_one_line(refused, f"cannot write {raw}/", "the file system is read-only", "Remount it read-write")
    assert_recorded(l2c, data, "read-only")
    machine.remount(raw, "rw,bind")
    assert l2c(data, "extract").code == 0
    assert fingerprints(data) == org.clean


def test_an_immutable_state_folder_exits_6_records_it_and_the_next_run_completes(
        org: Org, l2c: Cli, machine: Machine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = l2c(data, "extract")
    assert first.code == 0, first.err
    machine.immutable(data / "state")  # every table's run ends by saving its state (a new delta link) there
    refused = l2c(data, "extract")
    assert_one_line(refused, f"cannot write {data / 'state'}/", "permission denied", "lsattr")
    assert_recorded(l2c, data, "permission denied")
    machine.undo()
    again = l2c(data, "extract")
    assert again.code == 0, again.err
    assert fingerprints(data) == org.clean


# --- files of another user ------------------------------------------------------------------------------------

def as_user(uid: int | None, org: Org, data: Path, *args: str) -> Ran:
    """The real `l2c ARGS` in a subprocess, as `uid` (setpriv; None: as root), in a folder every uid can enter."""
    env = clean_env(org.shared, **org.sandbox.env(), L2C_PAGE_SIZE=PAGE_SIZE)
    env["L2C_DATA_DIR"] = str(data)
    prefix = [] if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    done = subprocess.run([*prefix, L2C, *args], cwd=org.shared, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    return Ran(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def service_home(org: Org) -> Iterator[Path]:
    """A folder of the service user SERVICE_UID, which can run l2c (needs root and setpriv)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        unavailable("running l2c as another uid needs root and setpriv")
    home = Path(tempfile.mkdtemp(prefix="service-", dir=org.shared))
    os.chown(home, SERVICE_UID, SERVICE_UID)
    probe = subprocess.run(["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
                            sys.executable, "-c", "import l2c"], capture_output=True, text=True, cwd=home)
    if probe.returncode != 0:
        unavailable(f"uid {SERVICE_UID} cannot run {sys.executable}: {probe.stderr.strip()[-200:]}")
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_root_ran_l2c_once_in_a_service_users_data_directory(org: Org, service_home: Path) -> None:
    """The service user's next run names the files root left, their owner and the chown; never "delete it"."""
    data = service_home / "data"
    settings = settings_for(org.sandbox, data, L2C_PAGE_SIZE=int(PAGE_SIZE))
    assert extract(settings).exit_code == 0
    subprocess.run(["chown", "-R", f"{SERVICE_UID}:{SERVICE_UID}", str(data)], check=True)  # the service's lake
    assert extract(settings).exit_code == 0  # root, by hand, in this process: the state files are now root's, 0600
    for command in ("extract", "status"):
        refused = as_user(SERVICE_UID, org, data, command)
        line = assert_one_line(refused, f"cannot read {data / 'state'}/", ".state.json: permission denied",
                               "belongs to root (uid 0); l2c runs as uid 42424", f"sudo chown -R $(id -un) {data}`")
        assert "delete it" not in line and "not readable JSON" not in line
    manifest = last_manifest(data)  # runs/ is still the service user's: the failed run is recorded
    assert (manifest["status"], manifest["exit_code"]) == ("failed", 6) and "belongs to root" in str(manifest["error"])
    subprocess.run(["chown", "-R", f"{SERVICE_UID}:{SERVICE_UID}", str(data)], check=True)
    again = as_user(SERVICE_UID, org, data, "extract")
    assert again.code == 0, again.err
    assert fingerprints(data) == org.clean


def test_a_state_folder_of_another_user_exits_6_with_its_owner_and_the_chown(org: Org, service_home: Path) -> None:
    data = service_home / "data"
    (data / "state").mkdir(parents=True, mode=0o700)
    os.chown(data, SERVICE_UID, SERVICE_UID)
    os.chown(data / "state", OTHER_UID, OTHER_UID)
    refused = as_user(SERVICE_UID, org, data, "extract")
    assert_one_line(refused, f"{data / 'state'} belongs to uid {OTHER_UID}; l2c runs as uid {SERVICE_UID}",
                    f"sudo chown -R $(id -un) {data}`")
    manifest = last_manifest(data)
    assert (manifest["status"], manifest["exit_code"]) == ("failed", 6) and "belongs to uid" in str(manifest["error"])
    os.chown(data / "state", SERVICE_UID, SERVICE_UID)
    again = as_user(SERVICE_UID, org, data, "extract")
    assert again.code == 0, again.err
    assert fingerprints(data) == org.clean


# --- --out --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["read-only folder", "full disk"])
def test_an_export_or_report_the_machine_refuses_exits_6_naming_the_out_file(org: Org, l2c: Cli, machine: Machine,
                                                                            fault: str) -> None:
    if fault == "read-only folder":
        folder, says = machine.read_only(machine.root / "out"), "the file system is read-only"
    else:
        folder, says = machine.tmpfs("12k"), "no space left on the device"
        (folder / "report.html").write_bytes(b"the previous report")
    for command in (["export", "--format", "csv", "--out", str(folder / "log.csv")],
                    ["export", "--format", "xes", "--out", str(folder / "log.xes")],
                    ["report", "--out", str(folder / "report.html")]):
        refused = l2c(org.outputs, *command)
        assert_one_line(refused, f"cannot write {command[-1]}: {says}")
    assert sorted(p.name for p in folder.iterdir()) == ([] if fault == "read-only folder" else ["report.html"])
    if fault == "full disk":
        assert (folder / "report.html").read_bytes() == b"the previous report"


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "character device", "link to a device"])
def test_out_to_a_fifo_or_device_is_written_in_place_never_replaced(org: Org, l2c: Cli, tmp_path: Path,
                                                                    kind: str) -> None:
    """`--out /dev/stdout` run as root renamed a temp file over the /dev/stdout link, for the whole machine. Never
    tried on the real one: a FIFO and a `mknod` twin of /dev/null in tmp stand for it."""
    folder = tmp_path / "dev"
    folder.mkdir()
    if "fifo" in kind:
        node = folder / "pipe"
        os.mkfifo(node)
    else:
        node = folder / "null"
        made = subprocess.run(["mknod", str(node), "c", "1", "3"], capture_output=True, text=True)
        if made.returncode != 0:
            unavailable(f"mknod: {made.stderr.strip()} (needs root)")
    out = node
    if kind.startswith("link"):
        out = folder / "stdout"
        out.symlink_to(node)
    before = sorted(p.name for p in folder.iterdir())
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(node.read_bytes())) if "fifo" in kind else None
    if reader is not None:
        reader.start()
    try:
        ran = l2c(org.outputs, "export", "--format", "csv", "--out", str(out))
    finally:
        if reader is not None:
            reader.join(timeout=10)
            if reader.is_alive():  # the export never opened the FIFO: open it for a moment to let the reader go
                with contextlib.suppress(OSError):  # ENXIO: it has no reader any more
                    os.close(os.open(node, os.O_WRONLY | os.O_NONBLOCK))
                reader.join(timeout=10)
    assert ran.code == 0, ran.err
    assert sorted(p.name for p in folder.iterdir()) == before  # no temp file beside it
    kept = node.lstat().st_mode
    assert stat.S_ISFIFO(kept) if "fifo" in kind else stat.S_ISCHR(kept)
    if kind.startswith("link"):
        assert out.is_symlink() and out.readlink() == node
    if reader is not None:
        events = pl.read_parquet(org.outputs / "event_log.parquet").height
        assert received and received[0].count(b"\n") == events + 1  # the header, then every event


def test_out_through_a_symlink_to_a_file_replaces_the_target_and_keeps_the_link(org: Org, l2c: Cli,
                                                                                 tmp_path: Path) -> None:
    target = tmp_path / "exports" / "log.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    ran = l2c(org.outputs, "export", "--format", "csv", "--out", str(link))
    assert ran.code == 0, ran.err
    assert link.is_symlink() and link.readlink() == target
    assert target.read_text().startswith("Case ID,") and target.read_text() != "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["log.csv"]


# --- the edges of input -------------------------------------------------------------------------------------

def test_a_150k_line_env_file_is_read_in_linear_time(tmp_path: Path) -> None:
    """Once quadratic: ~150 s for this 10 MB file (and ~45 s for 40k lines); the timeout is generous for a linear
    read, which takes a few seconds (the figure: tests/bench/test_env_file.py)."""
    lines = [f"SOME_VARIABLE_{i}=value-{i}-" + "x" * 50 for i in range(150_000)]
    lines += ["L2C_PAGE_SIZE=123", "AZURE_TENANT_ID=${SOME_VARIABLE_149999}", "L2C_SINCE=${UNSET_VARIABLE:-2024-01-31}"]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAVERSE_", "AZURE_", "L2C_"))}
    read = subprocess.run([sys.executable, "-c", "from config.settings import load_settings as l; s = l(); "
                           "print(s.page_size, s.azure_tenant_id, s.since)"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split() == ["123", "value-149999-" + "x" * 50, "2024-01-31"]


def test_a_certificate_refused_for_clock_skew_says_check_the_clock(org: Org, l2c: Cli, tmp_path: Path) -> None:
    org.sandbox.options.clock_skew = 3600  # this machine's clock is an hour behind Entra's
    try:
        refused = l2c(tmp_path / "data", "extract",
                      env={**org.sandbox.env(certificate=True), "AZURE_CLIENT_SECRET": None})
    finally:
        org.sandbox.options.clock_skew = 0.0
    assert refused.code == 3, refused.err
    assert len(refused.errors) == 1 and "Traceback" not in refused.err, refused.err
    line = refused.errors[0]
    assert "AADSTS700024" in line and "check this machine's clock" in line and "AZURE_TENANT_ID" not in line


def test_a_metadata_cache_written_while_the_clock_was_ahead_is_read_again(org: Org, tmp_path: Path) -> None:
    settings = settings_for(org.sandbox, tmp_path / "data", L2C_PAGE_SIZE=int(PAGE_SIZE))
    state = settings.data_dir / "state"
    ahead = datetime.now(UTC) + timedelta(days=2)
    metadata.load(DataverseClient(settings), load_tables(), state, now=ahead)  # the clock was two days ahead
    assert json.loads((state / metadata.CACHE_FILE).read_text())["fetched_at"] == ahead.isoformat()
    result = extract(settings)
    assert result.exit_code == 0, result.errors
    assert result.requests["metadata"]["requests"] > 0  # stale: read again, not trusted for two more days
    assert datetime.fromisoformat(json.loads((state / metadata.CACHE_FILE).read_text())["fetched_at"]) < ahead


def test_a_wrong_secret_with_non_ascii_characters_exits_3_at_once(org: Org, l2c: Cli, tmp_path: Path) -> None:
    """The sandbox answered it 500 (hmac.compare_digest refuses non-ASCII str): l2c retried for its whole budget
    and exited 4."""
    refused = l2c(tmp_path / "data", "extract",
                  env={"AZURE_CLIENT_SECRET": "mot-de-passe-é-ü-€-" + "k" * 12, "L2C_RETRY_BUDGET": "5"})
    assert refused.code == 3, refused.err
    assert len(refused.errors) == 1 and "AADSTS7000215" in refused.errors[0], refused.err
