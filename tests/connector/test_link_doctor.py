"""`l2c doctor` with L2C_SOURCE=link checks the export, never Dataverse: over the sandbox's own Link exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config.settings import Settings
from connector.doctor import Check
from connector.link_doctor import doctor_link
from sandbox.link_export import LinkOptions, export_link
from sandbox.orgdata import BASE_CLOCK
from sandbox.simulator import simulate


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    org = simulate(5, 120, BASE_CLOCK)
    root = tmp_path_factory.mktemp("link-doctor")
    return {fmt: export_link(org, root / fmt, LinkOptions(format=fmt)).out for fmt in ("csv", "delta")}


def doctor(url: Path | str, tmp_path: Path) -> tuple[int, list[str]]:
    lines: list[Check] = []
    settings = Settings(L2C_SOURCE="link", L2C_LINK_URL=str(url), L2C_DATA_DIR=str(tmp_path / "data"),
                        _env_file=None)  # type: ignore[call-arg]
    code = doctor_link(settings, lines.append)
    return code, [check.line() for check in lines]


def test_a_csv_export_is_fine_and_says_its_events_come_from_versions(exports: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    code, lines = doctor(exports["csv"], tmp_path)
    assert code == 0, lines
    assert "ok   export: CSV with model.json" in lines[1]
    assert "ok   lead: exported" in lines and "ok   invoice: exported" in lines
    assert any(line.startswith("ok   choice labels") for line in lines)
    assert lines[-1].startswith("warn audit: no audit table") and "Delta option" in lines[-1]


def test_a_delta_export_with_its_audit_table(exports: dict[str, Path], tmp_path: Path) -> None:
    code, lines = doctor(exports["delta"], tmp_path)
    assert code == 0 and "ok   export: Delta tables" in lines[1], lines
    assert lines[-1].startswith("ok   audit: the audit table is exported")


def test_a_table_the_export_lacks_fails_with_exit_2_and_a_missing_root_with_4(exports: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(exports["csv"], partial)
    model = json.loads((partial / "model.json").read_text())
    model["entities"] = [e for e in model["entities"] if e["name"] != "invoice"]
    (partial / "model.json").write_text(json.dumps(model))
    shutil.rmtree(partial / "OptionsetMetadata")
    code, lines = doctor(partial, tmp_path)
    assert code == 2 and "FAIL invoice: not in the export -> add the table" in "\n".join(lines), lines
    assert any(line.startswith("warn choice labels") for line in lines)
    code, lines = doctor(tmp_path / "nowhere", tmp_path)
    assert code == 4 and lines[-1].startswith("FAIL not a Synapse Link / Fabric Link export")
