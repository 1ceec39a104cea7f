"""Issue #24: a landed raw page deleted (a clean-up script, a partial restore), cut short or garbled never ends in a
smaller event log with exit 0. `l2c transform` alone refuses in one line naming the page and keeps the previous
outputs; the next `l2c run` sets the page aside, reads its table again from Dataverse (the audit history from its
start, keeping the rows still landed; audit details "needed minus landed") and ends with the event log of a clean
run of the same org (seed 42, 300 leads, pages of 100 rows so every table of size has several).

Everything runs through `l2c.cli.main` in this process against one sandbox over HTTPS; the faults are made on the
files themselves. `test_every_landed_page_deleted_or_garbled_ends_in_the_clean_log` does every page of the org
one by one (about 70 runs): a benchmark-length sweep, `pytest -m bench tests/reliability/test_raw_pages.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from connector.lake import Lake
from l2c.cli import main
from sandbox.runtime import OrgState, Sandbox

OUTPUTS = ("event_log.parquet", "cases.parquet", "l2c.duckdb")
KINDS = ("rows", "deletions", "quarantine", "notes")  # every kind of landed page


def _environment(sandbox: Sandbox, data: Path) -> dict[str, str]:
    return {**sandbox.env(), "L2C_DATA_DIR": str(data), "L2C_PAGE_SIZE": "100"}


def l2c(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, data: Path, *args: str) -> int:
    for name in [n for n in os.environ if n.startswith(("DATAVERSE_", "AZURE_", "L2C_"))]:
        monkeypatch.delenv(name)
    for name, value in _environment(sandbox, data).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(data.parent)  # no developer's .env
    return main(list(args))


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    """The sandbox and a data directory after one clean `l2c run` of it."""
    root = tmp_path_factory.mktemp("raw-pages")
    with Sandbox(root / "sandbox", OrgState(seed=42, leads=300)) as sandbox, pytest.MonkeyPatch.context() as mp:
        assert l2c(mp, sandbox, root / "clean", "run") == 0
        yield sandbox, root / "clean"


def digests(data: Path) -> dict[str, str]:
    return {name: hashlib.sha256((data / name).read_bytes()).hexdigest() for name in OUTPUTS}


def log_of(data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(data / "event_log.parquet"), pl.read_parquet(data / "cases.parquet")


def spoil(page: Path, fault: str) -> None:
    if fault == "deleted":
        page.unlink()
    elif fault == "truncated":
        os.truncate(page, page.stat().st_size // 2)
    else:  # garbled in place: same size, bytes in the middle flipped
        data = bytearray(page.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
        page.write_bytes(bytes(data))


def landed(data: Path, table: str, index: int) -> Path:
    return Lake(data).pages(table, KINDS)[index]


CASES = [("lead", 1, "deleted"), ("audit", 3, "deleted"), ("audit_details", 0, "deleted"), ("quote", 1, "truncated"),
         ("audit", 10, "garbled"), ("opportunity", 0, "garbled")]


@pytest.mark.parametrize(("table", "index", "fault"), CASES, ids=[f"{t}-{i}-{f}" for t, i, f in CASES])
def test_a_lost_or_damaged_page_is_refused_by_the_transform_and_read_again_by_the_next_run(
        org: tuple[Sandbox, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        table: str, index: int, fault: str) -> None:
    sandbox, clean = org
    data = tmp_path / "data"
    shutil.copytree(clean, data)
    page = landed(data, table, index)
    spoil(page, fault)
    before = digests(data)
    capsys.readouterr()

    assert l2c(monkeypatch, sandbox, data, "status") == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.split()[0] == ("audit" if table == "audit_details" else table))
    assert row.endswith("1 raw page(s) missing or damaged: the next extract reads the table again"), row

    assert l2c(monkeypatch, sandbox, data, "transform") == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"l2c: error: raw page {page}"), err
    assert "Run `l2c extract` (or `l2c run`)" in err
    assert digests(data) == before  # the previous outputs are kept: no smaller log published

    assert l2c(monkeypatch, sandbox, data, "run") == 0
    out = capsys.readouterr().out
    assert f"note: raw page {page}" in out, out
    manifest = max((data / "runs").glob("*.json"))
    damaged = json.loads(manifest.read_text())["tables"][table]["damaged"]
    assert len(damaged) == 1 and damaged[0].startswith(f"{page}: "), damaged
    assert len(list((data / "damaged").rglob(page.name))) == (0 if fault == "deleted" else 1)  # kept for a look
    mine, theirs = log_of(data), log_of(clean)
    assert mine[0].equals(theirs[0]) and mine[1].equals(theirs[1])
    assert l2c(monkeypatch, sandbox, data, "transform") == 0  # settled: nothing is refused any more


@pytest.mark.bench
@pytest.mark.parametrize("fault", ["deleted", "garbled"])
def test_every_landed_page_deleted_or_garbled_ends_in_the_clean_log(
        org: tuple[Sandbox, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    sandbox, clean = org
    pages = [p.relative_to(clean) for t in sorted(p.name for p in (clean / "raw").iterdir())
             for p in Lake(clean).pages(t, KINDS)]
    assert len(pages) > 30
    for number, relative in enumerate(pages):
        data = tmp_path / f"data-{number}"
        shutil.copytree(clean, data)
        spoil(data / relative, fault)
        assert l2c(monkeypatch, sandbox, data, "run") == 0, relative
        mine, theirs = log_of(data), log_of(clean)
        assert mine[0].equals(theirs[0]) and mine[1].equals(theirs[1]), relative
        shutil.rmtree(data)
