"""Issue 24, the outputs: published whole, verified, rebuilt when damaged; and the edges of input that broke
every run (a data directory whose path holds `[` `]` `?` `*`, an org with no lead or no opportunity).

Each fault is made for real (a small tmpfs that fills up, a file damaged or replaced on disk, a real odd path, a
sandbox org with no lead) and each run is the real `l2c` (`l2c.cli.main`, in this process to keep the suite
fast) against the sandbox over HTTPS; every result is compared with a clean run of the same org (seed 42, 300
leads): the event log, the cases, and every table of l2c.duckdb."""

from __future__ import annotations

import ast
import errno
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from unittest.mock import patch

import duckdb
import polars as pl
import pytest

from ground.files import atomic_write
from l2c.cli import main
from sandbox.runtime import OrgState, Sandbox
from tests.conftest import in_catalogue
from tests.e2e.conftest import SCRUBBED_PREFIXES
from tests.reliability.conftest import Machine
from tests.transforms.test_truth import as_multiset
from transforms.build_state import TransformState

SEED, LEADS = 42, 300
PARQUET = ("event_log.parquet", "cases.parquet")


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def l2c(sandbox: Sandbox, data: Path, *args: str) -> Done:
    """`l2c <args>` with the data directory `data`, pointed at `sandbox`, as a shell would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update(sandbox.env(), L2C_DATA_DIR=str(data))
    out, err = io.StringIO(), io.StringIO()
    with patch.dict(os.environ, env, clear=True), redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return Done(code, out.getvalue(), err.getvalue())


def outputs(data: Path) -> dict[str, pl.DataFrame]:
    """The event log and cases files, and every table and view of l2c.duckdb (views: their row counts)."""
    found = {name: pl.read_parquet(data / name, glob=False) for name in PARQUET}
    with duckdb.connect(str(data / "l2c.duckdb"), read_only=True) as con:
        names = [row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
                 if row[0] != "l2c_build"]
        views = [row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        for name in names:
            frame = con.sql(f'SELECT * FROM "{name}"').pl()
            found[f"duckdb.{name}"] = frame.sort(frame.columns, nulls_last=True)
        for name in views:
            found[f"view.{name}"] = con.sql(f'SELECT count(*) AS n FROM "{name}"').pl()
    return found


def assert_same(found: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    assert sorted(found) == sorted(expected)
    for name, frame in expected.items():
        assert found[name].equals(frame), name


def temp_files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob(".*") if ".tmp" in p.name)


@dataclass
class Org:
    sandbox: Sandbox
    before: Path  # the data directory after a clean run at day 0 (the sandbox is now at day 1)
    previous: dict[str, pl.DataFrame]  # its outputs
    clean: Path  # the data directory after a clean run at day 0, then one at day 1
    expected: dict[str, pl.DataFrame]  # its outputs: what every run at day 1 must end in


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    root = tmp_path_factory.mktemp("outputs")
    with Sandbox(root / "sb", OrgState(seed=SEED, leads=LEADS)) as sandbox:
        before = root / "before" / "data"
        assert l2c(sandbox, before, "run").code == 0
        sandbox.advance(1)
        clean = root / "clean" / "data"
        shutil.copytree(before, clean)
        done = l2c(sandbox, clean, "run")
        assert done.code == 0, done.err
        yield Org(sandbox, before, outputs(before), clean, outputs(clean))


def _published(data: Path) -> dict[str, bytes]:
    """The transform's published files (outputs, database, its state and frames), by relative path."""
    names = [data / name for name in (*PARQUET, "l2c.duckdb")] + sorted((data / "state" / "transform").iterdir())
    return {p.relative_to(data).as_posix(): p.read_bytes() for p in names if not p.name.startswith(".")}


# --- a full disk while the transform writes its outputs and DuckDB loads and checkpoints ----------------------

# Room left on the data directory's file system for a day's `l2c run` over the day-0 directory (KiB): from too
# little for the transform's first temp files, past the event log, the cases and a frame, the database's
# write-ahead log and its checkpoint (where the run used to exit 0 with an empty database), to enough. A denser
# sweep by hand: L2C_FULL_DISK_ROOM_KIB=first:last:step (e.g. 100:6000:20).
ROOM_KIB = tuple(range(*map(int, os.environ["L2C_FULL_DISK_ROOM_KIB"].split(":")))
                 if os.environ.get("L2C_FULL_DISK_ROOM_KIB") else (260, 400, 450, 490, 700, 2400, 3600, 8000))


def test_a_full_disk_at_any_moment_of_the_transform_publishes_nothing_and_the_next_run_completes(
        org: Org, machine: Machine) -> None:
    base = sum(p.stat().st_size for p in org.before.rglob("*") if p.is_file())
    before = _published(org.before)
    failed_at, succeeded = set(), 0
    for room in ROOM_KIB:
        data = machine.tmpfs(str(base + room * 1024), name=f"tmpfs-{room}") / "data"
        shutil.copytree(org.before, data)
        done = l2c(org.sandbox, data, "run")
        if done.code == 0:
            succeeded += 1
            assert_same(outputs(data), org.expected)  # never fewer tables or events than a clean run
        else:
            # Exit 6, one line naming the file and the fix; nothing of the transform published, nothing left.
            assert done.code == 6, done.err
            assert len(done.errors) == 1 and "Traceback" not in done.err, done.err
            line = done.errors[0]
            assert line.startswith(f"l2c: error: cannot write {data}/") and "no space left" in line, line
            failed_at.add(line.split()[4].removeprefix(f"{data}/").rstrip(":"))
            assert _published(data) == before, room
            assert temp_files(data) == [], room
        machine.remount(data.parent, f"size={base + 16 * 1024 * 1024}")  # space again
        again = l2c(org.sandbox, data, "run")
        assert again.code == 0, again.err
        assert_same(outputs(data), org.expected)
        assert temp_files(data) == []
    print(f"full disk: {len(ROOM_KIB) - succeeded} runs failed (exit 6) at {sorted(failed_at)}, {succeeded} "
          "completed; every next run equals the clean run")
    assert succeeded >= 1 and "l2c.duckdb" in failed_at
    assert len(failed_at) >= 3 and failed_at & {*PARQUET, "state/transform"}, failed_at


def test_a_write_that_fills_the_disk_fails_naming_its_file_and_leaves_the_previous_one(machine: Machine) -> None:
    """The primitive under every output: the error names the file even when closing the temp file fails too (a
    buffered tail that cannot be flushed on a full disk used to replace it with an OSError naming nothing)."""
    point = machine.tmpfs("256k")
    path = point / "event_log.parquet"
    path.write_bytes(b"previous")

    def fill(handle: IO[bytes]) -> None:  # a writer that fills the disk, buffers a tail, then gives up
        with suppress(OSError):
            handle.write(os.urandom(1 << 20))  # more than the disk holds
        handle.write(b"x" * 100)  # buffered: the close that discards the temp file cannot flush it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for write in (fill, lambda handle: pl.DataFrame({"x": [os.urandom(64).hex() for _ in range(20_000)]})
                  .write_parquet(handle)):
        with pytest.raises(OSError) as caught:
            atomic_write(path, write)
        assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
        assert path.read_bytes() == b"previous" and sorted(p.name for p in point.iterdir()) == [path.name]


# --- a damaged, missing or foreign output -----------------------------------------------------------------------

def _outputs_of(data: Path) -> list[str]:
    """The outputs a transform publishes: the log, the cases, the database and the frames of its generation."""
    frames = sorted((data / "state" / "transform").glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"))
    return sorted([*PARQUET, "l2c.duckdb", *(p.relative_to(data).as_posix() for p in frames)])


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_every_damaged_missing_or_replaced_output_is_rebuilt_by_the_next_run(org: Org, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(org.clean, data)
    recorded = _outputs_of(data)
    assert {*PARQUET, "l2c.duckdb", "state/transform/case_map-000002.parquet"} <= set(recorded)
    assert len(recorded) >= 10  # every frame too: case map, event users, orphans, quality, analysis tables
    repaired = []
    for pair in range(0, len(recorded), 2):  # two outputs at a time, each spoiled its own way
        # Each rebuild is a new generation of frames: the same outputs, in the same order, under new names.
        names = _outputs_of(data)[pair:pair + 2]
        for number, name in enumerate(names, start=pair):
            path = data / name
            how = ("truncated", "damaged", "damaged", "deleted")[number % 4]
            if how == "deleted":
                path.unlink()
            elif how == "damaged":
                _flip_a_byte(path)  # same size: only the checksum tells
            else:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            repaired.append(f"{name} {how}")
        done = l2c(org.sandbox, data, "run")
        assert done.code == 0, done.err
        reason = done.out.split("(full build: ", 1)[1]  # the reason names each file
        assert all(name in reason for name in names), done.out
        assert_same(outputs(data), org.expected)
    # An export pointed into the data directory replaces the event log with a CSV.
    export = l2c(org.sandbox, data, "export", "--format", "csv", "--out", str(data / "event_log.parquet"))
    assert export.code == 0, export.err
    done = l2c(org.sandbox, data, "run")
    assert done.code == 0 and "full build: event_log.parquet was damaged or replaced" in done.out, done.out
    assert_same(outputs(data), org.expected)
    again = l2c(org.sandbox, data, "run")
    assert "nothing new since the last build" in again.out
    assert _outputs_of(data) == sorted(TransformState.read(data).outputs)  # type: ignore[union-attr]
    print(f"damaged outputs: {len(repaired) + 1} faults ({', '.join(repaired)}, event log overwritten by an "
          "export), each repaired by the next `l2c run`")


# --- paths that are not globs or URLs -------------------------------------------------------------------------

def test_a_data_directory_whose_path_holds_glob_and_url_characters_works_like_any(org: Org, tmp_path: Path) -> None:
    data = tmp_path / "odd [1]?x=*" / "data"
    decoy = tmp_path / "odd 1Ax=Z" / "data"  # what `[1]`, `?` and `*` would match as a glob
    decoy.mkdir(parents=True)
    first = l2c(org.sandbox, data, "run")
    assert first.code == 0, first.err
    assert_same(outputs(data), org.expected)
    assert not any(decoy.iterdir())
    again = l2c(org.sandbox, data, "run")
    assert again.code == 0 and "nothing new since the last build" in again.out, again.err
    for fmt in ("csv", "ocel2-sqlite"):
        out = data.parent / f"log [x]?.{fmt}"
        done = l2c(org.sandbox, data, "export", "--format", fmt, "--out", str(out))
        assert done.code == 0 and out.is_file(), done.err
    report = l2c(org.sandbox, data, "report", "--out", str(data.parent / "report?.html"))
    assert report.code == 0, report.err
    assert temp_files(data.parent) == []


# --- an org with no lead yet, and one with leads but no opportunity -------------------------------------------

@pytest.mark.parametrize(("leads", "none"), [(0, "lead"), (2, "opportunity"), (3, "invoice")],
                         ids=["no lead", "no opportunity", "no invoice"])
def test_an_org_without_leads_or_opportunities_builds_its_log(org: Org, tmp_path: Path, leads: int,
                                                               none: str) -> None:
    with Sandbox(tmp_path / "sb", OrgState(seed=SEED, leads=leads)) as sandbox:
        assert sandbox.org.rows[none].is_empty()
        truth = in_catalogue(sandbox.org.truth)
        data = tmp_path / "data"
        done = l2c(sandbox, data, "run")
        assert done.code == 0, done.err
        found = outputs(data)
        assert l2c(sandbox, data, "run").code == 0
    log = found["event_log.parquet"]
    assert log.schema == org.expected["event_log.parquet"].schema  # every column, typed as in any log
    assert as_multiset(log).equals(as_multiset(truth))
    assert (log.height == 0) == (leads == 0) and found["duckdb.cases"].height == leads
    for name, frame in org.expected.items():  # every table and view, with the same columns
        assert name in found and found[name].schema == frame.schema, name


READERS = {"scan_parquet", "read_parquet", "scan_csv", "read_csv", "scan_ipc", "read_ipc", "scan_ndjson",
           "read_ndjson", "read_parquet_schema"}
PRODUCT = ("ground", "config", "connector", "transforms", "sql", "exports", "l2c")


def test_no_product_code_lets_polars_read_a_path_as_a_glob() -> None:
    """polars expands `[`, `?` and `*` in a path unless told not to (`glob=False`); `read_parquet_schema` cannot
    be told. DuckDB's reads are covered by the odd data directory above (sql/load.py escapes them)."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "pl"
                        and node.func.attr in READERS):
                    told = any(k.arg == "glob" and isinstance(k.value, ast.Constant) and k.value.value is False
                               for k in node.keywords)
                    if not told:
                        found.append(f"{path.relative_to(root)}:{node.lineno} pl.{node.func.attr}")
    assert found == []
