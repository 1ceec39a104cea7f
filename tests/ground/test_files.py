"""ground/files.py: durable all-or-nothing writes. A write is complete or absent: the previous file stays until
the new one is whole, fsynced and verified, and an interrupted write leaves no temp file behind (a killed
process's temp files are removed by `remove_temp_files`; tests/connector/test_lake.py kills real writers mid-way).
Staged files are published together or not at all; a foreign writer's error about the machine becomes the OSError
it stands for (tests/reliability/test_outputs.py fills a real disk)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import zlib
from pathlib import Path

import polars as pl
import pytest

from ground.files import (
    TEMP_SUFFIX,
    OutputParts,
    Staging,
    atomic_write,
    file_stamp,
    machine_error,
    make_dirs,
    publish_file,
    read_back,
    remove_temp_files,
    safe_name,
    temp_beside,
    write_out,
    write_output,
)


def test_atomic_write_replaces_the_file_whole_with_the_mode_asked(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    atomic_write(path, lambda handle: handle.write(b"one"), mode=0o600)
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write(path, lambda handle: handle.write(b"two"))
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_an_interrupted_atomic_write_keeps_the_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"before")

    def half(handle: object) -> None:
        handle.write(b"half")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_publish_file_renames_a_finished_file_over_the_target(tmp_path: Path) -> None:
    target = tmp_path / "l2c.duckdb"
    target.write_bytes(b"old")
    temp = temp_beside(target)
    assert temp.parent == tmp_path and temp.name.startswith(".l2c.duckdb.") and temp.name.endswith(TEMP_SUFFIX)
    temp.write_bytes(b"new")
    assert publish_file(temp, target) == target
    assert target.read_bytes() == b"new" and not temp.exists()


def test_remove_temp_files_and_make_dirs(tmp_path: Path) -> None:
    make_dirs(tmp_path / "x" / "y")
    left = [temp_beside(tmp_path / "x" / "y" / name) for name in ("a", "b")]
    for path in left:
        path.write_bytes(b"")
    assert sorted(remove_temp_files(iter(left))) == sorted(left)
    assert not any(p.exists() for p in left) and (tmp_path / "x" / "y").is_dir()


@pytest.mark.parametrize("bad", ["", "..", ".hidden", "a/b", "a\\b", "x" + os.sep + "y", "a b"])
def test_safe_name_refuses_what_is_not_one_path_component(bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe file name"):
        safe_name(bad, "table")
    assert safe_name("new_contract", "table") == "new_contract"


# --- OutputParts: a transform output written part by part, all or nothing -----------------------------------

def test_output_parts_append_in_order_and_replace_the_file_only_when_done(tmp_path: Path) -> None:
    path = tmp_path / "out" / "log.parquet"
    path.parent.mkdir()
    pl.DataFrame({"case_id": ["old"], "n": [0]}).write_parquet(path)
    with OutputParts(path) as parts:
        parts.write(pl.DataFrame({"case_id": ["a", "b"], "n": [1, 2]}))
        assert pl.read_parquet(path).get_column("case_id").to_list() == ["old"]  # not yet replaced
        parts.write(pl.DataFrame({"case_id": ["c"], "n": [3]}))
        parts.write(pl.DataFrame({"case_id": [None], "n": [4]}))  # an all-null column: the first part's type
    assert parts.rows == 4
    assert pl.read_parquet(path).to_dict(as_series=False) == {"case_id": ["a", "b", "c", None], "n": [1, 2, 3, 4]}
    assert [p.name for p in path.parent.iterdir()] == ["log.parquet"]


def test_output_parts_interrupted_leave_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame({"case_id": ["old"]}).write_parquet(path)
    with pytest.raises(KeyboardInterrupt), OutputParts(path) as parts:
        parts.write(pl.DataFrame({"case_id": ["a"]}))
        raise KeyboardInterrupt
    assert pl.read_parquet(path).get_column("case_id").to_list() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["log.parquet"]
    with pytest.raises(ValueError, match="no frame was written"), OutputParts(tmp_path / "never.parquet"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["log.parquet"]


# --- verified, staged, stamped --------------------------------------------------------------------------------

def test_a_write_that_does_not_verify_is_not_published(tmp_path: Path) -> None:
    path = tmp_path / "cases.parquet"
    pl.DataFrame({"case_id": ["old"]}).write_parquet(path)
    frame = pl.DataFrame({"case_id": ["a", "b"]})
    with pytest.raises(RuntimeError, match=r"was written but it holds 2 rows, 3 were written: not published"):
        atomic_write(path, lambda handle: frame.write_parquet(handle), verify=lambda temp: read_back(temp, rows=3))
    with pytest.raises(RuntimeError, match=r"it does not read back"):  # a writer that left no Parquet footer
        atomic_write(path, lambda handle: handle.write(b"PAR1 and then nothing"), verify=read_back)
    assert pl.read_parquet(path).get_column("case_id").to_list() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["cases.parquet"]
    assert read_back(write_output(frame, path), rows=2, schema=frame.schema) == 2


def test_staged_files_are_published_together_or_not_at_all(tmp_path: Path) -> None:
    log, cases = tmp_path / "log.parquet", tmp_path / "cases.parquet"
    for path in (log, cases):
        pl.DataFrame({"v": ["old"]}).write_parquet(path)
    with Staging() as staging:
        write_output(pl.DataFrame({"v": ["new"]}), log, staging=staging)
        with OutputParts(cases, staging=staging) as parts:
            parts.write(pl.DataFrame({"v": ["new"]}))
        assert log in staging and len(staging) == 2
        assert pl.read_parquet(log).item() == "old" and pl.read_parquet(staging.at(cases)).item() == "new"
    # Left without publishing (an error, a signal): the previous files, no temp file.
    assert [pl.read_parquet(p).item() for p in (log, cases)] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.parquet", "log.parquet"]
    with Staging() as staging:
        atomic_write(log, lambda handle: pl.DataFrame({"v": ["new"]}).write_parquet(handle), staging=staging)
        write_output(pl.DataFrame({"v": ["new"]}), cases, staging=staging)
        staging.publish()
        assert not staging and staging.at(log) == log
    assert [pl.read_parquet(p).item() for p in (log, cases)] == ["new", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.parquet", "log.parquet"]


def test_file_stamp_is_the_size_and_crc32_of_the_content(tmp_path: Path) -> None:
    path = tmp_path / "x"
    content = os.urandom(3 * (1 << 20) + 17)  # more than one read
    path.write_bytes(content)
    assert file_stamp(path) == [len(content), zlib.crc32(content)]


@pytest.mark.parametrize(("error", "code"), [
    (pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: No space left on device "
                                "(os error 28)"), errno.ENOSPC),
    (RuntimeError('IO Error: Could not write file "/x/.l2c.duckdb.1.a.tmp": Read-only file system'), errno.EROFS),
    (RuntimeError('FATAL Error: Failed to create checkpoint because of error: Could not write file "/x": '
                  "Disk quota exceeded"), errno.EDQUOT),
    (OSError(errno.EACCES, "Permission denied"), errno.EACCES),
    (pl.exceptions.ComputeError("unable to find column 'x'"), None),
    (OSError(errno.EBADF, "Bad file descriptor"), None),
    (KeyboardInterrupt(), None),
])
def test_a_foreign_writers_error_about_the_machine_is_the_os_error_it_stands_for(
        tmp_path: Path, error: BaseException, code: int | None) -> None:
    path = tmp_path / "l2c.duckdb"
    found = machine_error(error, path)
    if code is None:
        assert found is None
    else:
        assert found is not None and (found.errno, found.filename) == (code, str(path))
# --- errors name the file; write_out for a file the user named ----------------------------------------------

def test_a_write_the_machine_refuses_names_the_file_even_through_polars(tmp_path: Path) -> None:
    """A twin of /dev/full made in tmp (never the real one): every write is ENOSPC. polars reports it as its own
    error without the errno; write_out raises the OSError itself, naming the file, and leaves the device alone."""
    full = tmp_path / "full"
    if subprocess.run(["mknod", str(full), "c", "1", "7"], capture_output=True).returncode != 0:
        pytest.skip("mknod needs root")
    frame = pl.DataFrame({"a": list(range(100_000))})
    for write in (lambda handle: handle.write(b"x" * 10_000_000), lambda handle: frame.write_parquet(handle),
                  lambda handle: frame.write_csv(handle)):
        with pytest.raises(OSError) as caught:
            write_out(full, write)
        assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(full))
        assert stat.S_ISCHR(full.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_an_error_opening_the_temp_file_names_the_file_not_its_temp(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as caught:  # its temp file cannot be made beside it
        atomic_write(tmp_path / "file" / "state.json", lambda handle: handle.write(b"x"))
    assert caught.value.filename == str(tmp_path / "file" / "state.json")


def test_write_out_replaces_a_links_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_bytes(b"old")
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)  # relative, as `ln -s` makes them
    assert write_out(link, lambda handle: handle.write(b"new")) == link
    assert link.is_symlink() and target.read_bytes() == b"new"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "made.csv")
    write_out(dangling, lambda handle: handle.write(b"made"))
    assert dangling.is_symlink() and (tmp_path / "made.csv").read_bytes() == b"made"
