"""Files written before the pydantic models (tests/connector/state_fixtures, see its README) load unchanged,
save again to the same bytes, and `l2c status` prints what it printed for them then."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.settings import Settings
from connector.state import RunManifest, StateStore
from connector.status import status
from l2c.cli import main

FIXTURES = Path(__file__).parent / "state_fixtures"
STATES = sorted(FIXTURES.glob("*/state/*.state.json"))
MANIFESTS = sorted(FIXTURES.glob("*/runs/*.json"))
MOMENTS = sorted(p.parent.name for p in FIXTURES.glob("*/status.txt"))
STATUS_AT = datetime(2026, 1, 20, tzinfo=UTC)  # the `now` of the saved status.txt


def _id(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def test_the_fixtures_cover_every_kind_of_file() -> None:
    documents = [json.loads(p.read_text()) for p in STATES]
    assert {d["mode"] for d in documents} == {None, "delta", "watermark"}
    resumes = [d["resume"] for d in documents if d["resume"]]
    assert any("full" in r for r in resumes) and any("full" not in r for r in resumes)
    assert any(r.get("reconcile") for r in resumes) and any(d["last_error"] for d in documents)
    assert {json.loads(p.read_text())["status"] for p in MANIFESTS} == {"running", "ok", "failed"}


@pytest.mark.parametrize("fixture", STATES, ids=_id)
def test_a_state_written_before_loads_and_saves_to_the_same_bytes(tmp_path: Path, fixture: Path) -> None:
    store = StateStore(tmp_path)
    store.directory.mkdir()
    shutil.copyfile(fixture, store.directory / fixture.name)
    table = fixture.name.removesuffix(".state.json")
    state = store.load(table)
    assert state.table == table
    path = store.save(state)
    assert path.read_bytes() == fixture.read_bytes()
    assert store.load(table) == state


@pytest.mark.parametrize("fixture", MANIFESTS, ids=_id)
def test_a_manifest_written_before_loads_and_saves_to_the_same_bytes(tmp_path: Path, fixture: Path) -> None:
    (tmp_path / "runs").mkdir()
    shutil.copyfile(fixture, tmp_path / "runs" / fixture.name)
    manifest = RunManifest.load(tmp_path, fixture.stem)
    assert manifest.run_id == fixture.stem and manifest.started_at.tzinfo is not None
    assert manifest.save(tmp_path).read_bytes() == fixture.read_bytes()


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer's Dataverse/Azure/L2C variable and no .env: the data directory is `tmp_path/data`."""
    for name in [n for n in os.environ if n.startswith(("DATAVERSE_", "AZURE_", "L2C_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("L2C_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.mark.parametrize("moment", MOMENTS)
def test_status_prints_what_it_printed_before(clean_env: Path, moment: str) -> None:
    shutil.copytree(FIXTURES / moment / "state", clean_env / "state")
    lines = status(Settings(_env_file=None), now=STATUS_AT)  # type: ignore[call-arg]
    assert "\n".join(lines) + "\n" == (FIXTURES / moment / "status.txt").read_text()


def test_l2c_status_reads_them(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(FIXTURES / "after-failed-run" / "state", clean_env / "state")
    shutil.copyfile(FIXTURES / "mid-watermark-read" / "state" / "opportunity.state.json",
                    clean_env / "state" / "opportunity.state.json")
    assert main(["status"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "last error: Dataverse kept failing: 503" in rows["quote"]
    assert rows["opportunity"].endswith("resumes at page 2") and rows["audit"].split()[1:3] == [
        "watermark", "2026-01-03T00:00:00+00:00"]


def test_l2c_status_refuses_a_corrupt_state_in_one_line(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(FIXTURES / "after-first-run" / "state", clean_env / "state")
    path = clean_env / "state" / "lead.state.json"
    document = json.loads(path.read_text())
    document["resume"] = {"stream": "s", "next_link": "n", "page_no": "2", "started_at": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps(document))
    assert main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert f"state file {path} is unusable: bad value in resume.page_no: Input should be a valid integer." in err
    assert "delete it to extract lead again from the start" in err and "ValidationError" not in err
