"""Issue 25's Done-when, end to end through `l2c.cli.main`: the sandbox org exported as the Link would export it
(`l2c sandbox export-link`), read with L2C_SOURCE=link, against the Web API path on the same org and against the
simulator's truth.

- Delta export (it carries the audit table, docs/LINK.md §7): the event log equals the Web API path's, column for
  column and event id for event id.
- CSV append-only export (no audit table): every event the Web API path dates from the audit comes out of the
  versions (source link_versions) with the same object, activity, time and user, but the changes a later change of
  the same record overwrote within one sync cycle (sandbox.link_versions.collapsed_changes, from the simulator);
  a deletion is dated when the Link wrote it, at most a cycle (plus its write lag) after the truth.
- After `sandbox advance` and a second export into the same folders, an incremental run equals a full run over the
  final export.
- The same exports uploaded to Azurite and read through their URLs give the same event logs as the local folders.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from azure.storage.blob import BlobServiceClient

from l2c.cli import main
from sandbox.link_versions import collapsed_changes
from sandbox.runtime import OrgState, load_state
from sandbox.simulator import simulate
from tests.conftest import in_catalogue
from tests.connector.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

SEED, LEADS = "11", "300"
INTERVAL = timedelta(minutes=15)  # export-link's default sync cycle
WRITE_LAG = timedelta(seconds=60)  # the emulator's SinkModifiedOn lag is under a minute
FACT = ["object_id", "activity", "timestamp", "resource"]
DELETED = ("Quote Deleted", "Order Deleted", "Invoice Deleted")


class Org:
    """The sandbox org's folder (the Web API path's data directory, which holds the sandbox's state) and `l2c`."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.web = root, root / "web"
        self._monkeypatch, self._capsys = monkeypatch, capsys

    def call(self, data: Path, *args: str, **env: str) -> tuple[int, str, str]:
        """`l2c ARGS` in this process with L2C_DATA_DIR=data: exit code, stdout, stderr."""
        with self._monkeypatch.context() as scoped:
            for name in [n for n in os.environ if n.startswith(("DATAVERSE_", "AZURE_", "L2C_"))]:
                scoped.delenv(name)
            for name, value in {"L2C_SANDBOX_SEED": SEED, "L2C_SANDBOX_LEADS": LEADS, "L2C_DATA_DIR": str(data),
                                **env}.items():
                scoped.setenv(name, value)
            self._capsys.readouterr()
            code = main(list(args))
            out, err = self._capsys.readouterr()
        return code, out, err

    def l2c(self, data: Path, *args: str, **env: str) -> str:
        code, out, err = self.call(data, *args, **env)
        assert code == 0, err
        return out

    def export(self, fmt: str) -> Path:
        out = self.root / f"export-{fmt}"
        self.l2c(self.web, "sandbox", "export-link", "--format", fmt, "--out", str(out))
        return out

    def link(self, data: Path, url: str, **env: str) -> pl.DataFrame:
        self.l2c(data, "run", L2C_SOURCE="link", L2C_LINK_URL=url, **env)
        return events(data)

    def truth(self) -> pl.DataFrame:
        state = load_state(self.web / "sandbox", OrgState(seed=int(SEED), leads=int(LEADS)))
        org = simulate(state.seed, state.leads, state.clock)
        return in_catalogue(org.truth), collapsed_changes(org, int(INTERVAL.total_seconds() // 60))


def events(data: Path) -> pl.DataFrame:
    return pl.read_parquet(data / "event_log.parquet")


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Org:
    monkeypatch.chdir(tmp_path)  # no .env
    return Org(tmp_path, monkeypatch, capsys)


def assert_versions_give_the_audit_events(link: pl.DataFrame, web: pl.DataFrame, truth: pl.DataFrame,
                                          collapsed: pl.DataFrame) -> None:
    """The CSV export's events against the Web API path's (all from the audit) and the truth."""
    assert set(web.get_column("source")) == {"audit"}
    assert set(link.get_column("source")) <= {"link_versions", "record_dates"}
    hidden = collapsed.select("object_id", "activity", "timestamp")
    found = link.filter(~pl.col("activity").is_in(DELETED))
    for expected in (web, truth):
        # every fact but those a later change in the same cycle overwrote, at its time, by its user
        facts = FACT if "resource" in expected.columns else FACT[:-1]
        kept = expected.filter(~pl.col("activity").is_in(DELETED)).join(hidden, on=hidden.columns, how="anti")
        assert kept.join(found, on=facts, how="anti").is_empty()
        # what else the versions show is a collapsed change whose value outlived its cycle: seen, dated by the
        # cycle's last change of the record (docs/LINK.md §8)
        later = found.join(kept, on=facts, how="anti").join(
            hidden.rename({"timestamp": "happened"}), on=["object_id", "activity"], how="left")
        assert later.get_column("happened").null_count() == 0, later
        lag = later.get_column("timestamp") - later.get_column("happened")
        assert later.is_empty() or (lag.min() >= timedelta(0) and lag.max() < INTERVAL), later
        assert later.select("object_id", "activity").n_unique() == later.height <= collapsed.height
    assert found.join(truth, on=["case_id", "object_id", "activity"], how="anti").is_empty()  # in its case
    # deletions: the same records, dated when the Link wrote the delete row
    dated = (link.filter(pl.col("activity").is_in(DELETED)).select("object_id", "activity", "timestamp")
             .join(truth.filter(pl.col("activity").is_in(DELETED)).select("object_id", "activity",
                                                                          truth_at="timestamp"),
                   on=["object_id", "activity"], how="full", coalesce=True))
    assert dated.height > 0 and dated.null_count().sum_horizontal().item() == 0, dated
    late = dated.get_column("timestamp") - dated.get_column("truth_at")
    assert late.min() >= timedelta(0) and late.max() <= INTERVAL + WRITE_LAG, (late.min(), late.max())


def test_link_exports_give_the_web_api_paths_events_and_stay_equal_to_a_full_run(org: Org) -> None:
    org.l2c(org.web, "run")
    csv, delta = org.export("csv"), org.export("delta")
    web = events(org.web)
    assert org.link(org.root / "delta", str(delta)).equals(web)
    truth, collapsed = org.truth()
    assert_versions_give_the_audit_events(org.link(org.root / "csv", str(csv)), web, truth, collapsed)
    checked = org.l2c(org.root / "csv", "doctor", L2C_SOURCE="link", L2C_LINK_URL=str(csv))  # the export, no Web API
    assert "ok   lead: exported" in checked and "warn audit: no audit table" in checked

    org.l2c(org.web, "sandbox", "advance", "--days", "20")
    org.l2c(org.web, "run")
    org.export("csv"), org.export("delta")  # into the same folders: the Link kept running
    web = events(org.web)
    incremental = {fmt: org.link(org.root / fmt, str(export)) for fmt, export in (("csv", csv), ("delta", delta))}
    assert incremental["delta"].equals(web)
    truth, collapsed = org.truth()
    assert_versions_give_the_audit_events(incremental["csv"], web, truth, collapsed)
    for fmt, export in (("csv", csv), ("delta", delta)):
        full = org.link(org.root / f"{fmt}-full", str(export))
        assert incremental[fmt].equals(full), fmt
        assert pl.read_parquet(org.root / fmt / "cases.parquet").equals(
            pl.read_parquet(org.root / f"{fmt}-full" / "cases.parquet")), fmt


def upload(azurite: Azurite, folder: Path, container: str) -> str:
    """`folder` as a Synapse Link container (dataverse-<env>-<org>) holds it: the export at the container's root."""
    service = BlobServiceClient(azurite.blob_endpoint, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                                connection_verify=str(azurite.ca_path))
    client = service.create_container(container)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_blob(path.relative_to(folder).as_posix(), path.read_bytes())
    return azurite.url(container)


def test_an_export_in_azure_storage_gives_the_local_folders_event_log(org: Org, azurite: Azurite) -> None:
    remote: dict[str, Any] = {"AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY, "L2C_CA_BUNDLE": str(azurite.ca_path)}
    for fmt in ("csv", "delta"):
        export = org.export(fmt)
        local = org.link(org.root / f"{fmt}-local", str(export))
        url = upload(azurite, export, f"dataverse-l2c-{fmt}")
        assert org.link(org.root / f"{fmt}-remote", url, **remote).equals(local), fmt


def fingerprint(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_half_written_or_broken_export_file_loses_nothing_landed(org: Org) -> None:
    """A row the Link is still writing waits for the next run; a broken row stops its table with exit 4 and one
    line naming the file, leaves the lake and the outputs as they were, and the run after the repair equals a
    full run over the repaired export."""
    org.l2c(org.web, "sandbox", "advance", "--days", "3")
    csv = org.export("csv")
    data = org.root / "csv"
    org.link(data, str(csv))
    newest = max((csv / "lead").glob("*.csv"))
    clean = newest.read_bytes()
    row = clean.splitlines(keepends=True)[-1]
    newest.write_bytes(clean + row[: len(row) // 2])  # the Link is writing a row: no end of line yet
    assert "lead: link, 0 rows" in org.l2c(data, "extract", L2C_SOURCE="link", L2C_LINK_URL=str(csv))

    newest.write_bytes(clean + row.rstrip(b"\n") + b',"x"\n')  # a row with one field too many
    lake, outputs = fingerprint(data / "raw"), {n: (data / n).read_bytes() for n in ("event_log.parquet",
                                                                                    "cases.parquet")}
    code, _, err = org.call(data, "run", L2C_SOURCE="link", L2C_LINK_URL=str(csv))
    errors = [line for line in err.splitlines() if line.startswith("l2c: error")]
    assert code == 4 and len(errors) == 1 and f"lead/{newest.name}" in errors[0], err
    assert "Traceback" not in err
    assert fingerprint(data / "raw") == lake
    assert {n: (data / n).read_bytes() for n in outputs} == outputs

    newest.write_bytes(clean)  # repaired (the Link rewrote the file): read again whole, nothing lost or doubled
    assert org.link(data, str(csv)).equals(org.link(org.root / "csv-full", str(csv)))
