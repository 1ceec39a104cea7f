"""The incremental-folder layout of the sandbox's Link export (docs/LINK.md §3, D2, D7)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox.link_export import LinkOptions, export_link
from sandbox.link_versions import LINK_TABLES
from sandbox.orgdata import BASE_CLOCK, OrgData
from sandbox.simulator import simulate

FOLDER = re.compile(r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\dZ")
OPTIONS = LinkOptions(incremental=True)


@pytest.fixture(scope="module")
def exported(org: OrgData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("incremental") / "link"
    export_link(org, out, OPTIONS)
    return out


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and FOLDER.fullmatch(p.name))


def _current(root: Path) -> str:
    text = (root / "Changelog" / "changelog.info").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    return text.strip()


def _complete(root: Path) -> list[str]:
    """D7: not the changelog.info folder, older than it, with a non-empty model.json."""
    current = _current(root)
    return [f for f in _folders(root) if f < current and (root / f / "model.json").is_file()
            and (root / f / "model.json").stat().st_size > 0]


def _lines(root: Path, folders: list[str]) -> Counter[str]:
    lines: Counter[str] = Counter()
    for folder in folders:
        for path in (root / folder).glob("*/*.csv"):
            if path.parent.name in LINK_TABLES:
                lines.update(path.read_text(encoding="utf-8").splitlines(keepends=True))
    return lines


def test_layout_and_completion_markers(exported: Path) -> None:
    folders = _folders(exported)
    current = _current(exported)
    assert current == folders[-1] or current < folders[-1]  # a retry's empty folder may come after it
    assert not (exported / current / "model.json").exists()  # in progress: a reader must skip it
    complete = _complete(exported)
    assert len(complete) > 10
    log = (exported / "Changelog" / "Synapse.log").read_text(encoding="utf-8").splitlines()
    assert log == complete == sorted(log)
    empty = [f for f in folders if not any((exported / f).iterdir())]
    assert empty, "a retry's empty folder"
    root_model = json.loads((exported / "model.json").read_text(encoding="utf-8"))
    assert all(e["partitions"] == [] for e in root_model["entities"])
    for folder in complete[:50]:
        model = json.loads((exported / folder / "model.json").read_text(encoding="utf-8"))
        assert [e["name"] for e in model["entities"]] == list(LINK_TABLES)
        files = {p.relative_to(exported / folder).as_posix() for p in (exported / folder).glob("*/*.csv")
                 if p.parent.name in LINK_TABLES}
        listed = {p["location"].split(f"/{folder}/", 1)[1] for e in model["entities"] for p in e["partitions"]}
        assert listed == files and files
        assert (exported / folder / "OptionsetMetadata" / "GlobalOptionsetMetadata.csv").exists()
    assert (exported / "Microsoft.Athena.TrickleFeedService" / "lead-model.json").exists()


def _unsunk(lines: Counter[str]) -> set[str]:
    """The lines without their SinkModifiedOn (D4: the third field; Id and SinkCreatedOn hold no comma)."""
    return {",".join(text.split(",", 3)[:2] + text.split(",", 3)[3:]) for text in lines}


def test_folders_hold_the_same_rows_as_the_append_only_export(exported: Path, org: OrgData,
                                                              tmp_path: Path) -> None:
    """The folders a reader reads (not an abandoned one, tests/sandbox/test_link_late.py) hold the rows of the
    append-only export; a late batch's rows with the later folder's SinkModifiedOn, once per version."""
    flat = tmp_path / "flat"
    export_link(org, flat, LinkOptions())
    expected: Counter[str] = Counter()
    for table in LINK_TABLES:
        for path in (flat / table).glob("*.csv"):
            expected.update(path.read_text(encoding="utf-8").splitlines(keepends=True))
    current = _current(exported)
    read = [f for f in _folders(exported) if f >= current or (exported / f / "model.json").exists()]
    assert _unsunk(_lines(exported, read)) == _unsunk(expected)
    assert len(read) < len(_folders(exported))


def test_advance_completes_the_folder_in_progress_and_adds_new_ones(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "link"
    shutil.copytree(exported, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()
              and FOLDER.fullmatch(p.relative_to(out).parts[0])}
    was_current, was_complete = _current(out), _complete(out)
    later = simulate(7, 120, BASE_CLOCK + timedelta(days=20))
    export_link(later, out, OPTIONS)
    for relative, data in before.items():
        assert (out / relative).read_bytes() == data, relative  # older folders untouched
    now_complete = _complete(out)
    assert now_complete[: len(was_complete)] == was_complete
    assert was_current in now_complete and (out / was_current / "model.json").stat().st_size > 0
    assert _current(out) > was_current
    log = (out / "Changelog" / "Synapse.log").read_text(encoding="utf-8").splitlines()
    assert log == now_complete
    fresh = tmp_path / "fresh"
    export_link(later, fresh, OPTIONS)
    assert _lines(out, _folders(out)) == _lines(fresh, _folders(fresh))
    assert _current(out) == _current(fresh)
    assert export_link(later, out, OPTIONS).noop
