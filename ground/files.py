"""The ground floor's file primitives, written once and used by every layer: durable, all-or-nothing writes.

A file is written to a hidden temp file beside its final name (`temp_beside`, suffix TEMP_SUFFIX), flushed and
fsynced, renamed over the final name, and the directory fsynced (`atomic_write`), so a crash leaves the old file
or the new one, never a torn one; `OutputParts` does the same for a Parquet output written frame by frame;
`remove_temp_files` clears what a killed writer left (under the caller's lock). A writer may verify its temp file
before it is published (`read_back` for Parquet), and may leave the rename to a `Staging` that publishes several
files together once all of them are written and verified; `file_stamp` is what a published file is checked
against later. A foreign writer's error (polars, pyarrow, DuckDB) about the machine (no space, read-only, no
permission) comes out as the OSError it stands for, naming the final path (`machine_errors`; `atomic_write`
also records the errno a write raised under polars' or pyarrow's own error). `write_out` writes a file a user
named (`--out`): a symlink is followed and its target replaced like any file, but a device, FIFO or socket is
written in place, never replaced by a rename. `make_dirs` creates directories durably, `safe_name` checks a name
used as one path component. Imports nothing of the project.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

TEMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def safe_name(name: str, what: str) -> str:
    """A table, stream or run id used as a path component: no separators, no leading dot."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what} {name!r} is not a safe file name (letters, digits, _ . - only)")
    return name


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """mkdir -p that also fsyncs each parent whose entry it created, so the new directory survives a crash."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


# How the transform writes what it rewrites on every build (event log, cases, its state frames): zstd at its
# fastest level, about 40 % less CPU than polars' default level 3 for files about 20 % larger (8.8M events:
# 5.3 s against 8.9 s of CPU, 290 against 243 MB). The raw lake, written once and read by every build, keeps
# the default level.
OUTPUT_PARQUET: dict[str, Any] = {"compression": "zstd", "compression_level": 1}


def write_output(frame: pl.DataFrame, path: Path, *, staging: Staging | None = None) -> Path:
    """`frame` as Parquet at `path` (OUTPUT_PARQUET), all or nothing, published only once it reads back with
    the frame's schema and rows."""
    return atomic_write(path, lambda handle: frame.write_parquet(handle, **OUTPUT_PARQUET), staging=staging,
                        verify=lambda temp: read_back(temp, rows=frame.height, schema=frame.schema))


def temp_beside(path: Path) -> Path:
    """A hidden temp file name beside `path`, unique to this process and call (TEMP_SUFFIX: cleaned up later)."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"


def _open_temp(path: Path, mode: int) -> tuple[Path, IO[bytes]]:
    """A new temp file beside `path` (its directories made), open for writing with `mode`."""
    make_dirs(path.parent)
    temp = temp_beside(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # the umask may only narrow, but be explicit
    return temp, os.fdopen(fd, "wb")


def _finish(handle: IO[bytes], temp: Path, verify: Callable[[Path], object] | None) -> None:
    """Flush + fsync the temp file, close it, and check it (`verify`) before anything publishes it."""
    with handle:
        handle.flush()
        os.fsync(handle.fileno())
    if verify is not None:
        verify(temp)


def _publish(temp: Path, path: Path, staging: Staging | None) -> None:
    """Rename the finished `temp` over `path` and fsync the directory, or leave that to `staging`."""
    if staging is not None:
        staging.add(temp, path)
        return
    os.replace(temp, path)
    fsync_dir(path.parent)


def publish_file(temp: Path, path: Path) -> Path:
    """Make a finished file written at `temp` (beside `path`, by a writer that needs a path) durable, then rename
    it over `path` and fsync the directory."""
    with machine_errors(path, temp):
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    return path


class _Recorded(io.RawIOBase):
    """A binary file handle that remembers the OSError its write raised (ENOSPC, EIO...): polars and pyarrow report
    a failed write as their own exception, without the errno that says what the machine refused. No fileno, so
    writers go through `write`."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle, self.error = handle, cast(OSError | None, None)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        if self._handle.closed:  # io.IOBase.close (also when collected) flushes
            return
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = exc
            raise


def _written(path: Path, handle: IO[bytes], write: Callable[[IO[bytes]], object]) -> None:
    """`write(handle)`; the OSError behind a writer's own failure is raised instead, naming `path` (not its temp)."""
    recorded = _Recorded(handle)
    try:
        write(cast(IO[bytes], recorded))
    except Exception as exc:
        # polars re-raises a failed write as an OSError with the message only: the errno is the recorded one's.
        cause = exc if isinstance(exc, OSError) and exc.errno is not None else recorded.error
        if cause is None:
            raise
        raise _naming(cause, path) from (None if cause is exc else exc)


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` naming the file it concerns: `path` when it named nothing or the temp file written for `path` (a
    directory it could not make stays named)."""
    name = exc.filename
    if exc.errno is None or name is not None and not (
            isinstance(name, str) and Path(name).parent == path.parent and Path(name).name.startswith(f".{path.name}.")
            and name.endswith(TEMP_SUFFIX)):
        return exc
    named = OSError(exc.errno, exc.strerror, str(path))  # OSError(errno, ...) picks the subclass (PermissionError...)
    named.__traceback__ = exc.__traceback__
    return named


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], *, mode: int = 0o644,
                 verify: Callable[[Path], object] | None = None, staging: Staging | None = None) -> Path:
    """Write `path` all or nothing: temp file beside it, flush + fsync, `verify(temp)`, rename over it, fsync the
    directory (with `staging`: the rename waits for `staging.publish()`). Returns where the file reads now. An
    OSError names `path`."""
    try:
        temp, handle = _open_temp(path, mode)
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with machine_errors(path, temp):
            _written(path, handle, write)
            _finish(handle, temp, verify)
            _publish(temp, path, staging)
    except BaseException as exc:
        _discard(handle, temp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    return temp if staging is not None else path


def _discard(handle: IO[bytes], temp: Path) -> None:
    """Close and remove a temp file that will not be published. Closing flushes what is buffered: on a full disk
    that fails too, and must not replace the error that stopped the write."""
    with suppress(OSError):
        handle.close()
    temp.unlink(missing_ok=True)


def is_stream(path: Path) -> bool:
    """`path` exists (after its links) and is a device, FIFO or socket: written in place, never renamed over."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def out_target(out: Path) -> Path:
    """Where a file the user named is written: `out` with every symlink followed (a dangling link's target is
    created), so the link stays and its target is replaced, as `cp` and a shell's `>` do."""
    return Path(os.path.realpath(out))


def write_out(out: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file the user named (`--out`): a regular file (or a link to one) all or nothing as `atomic_write`
    does, at the link's target; a device, FIFO or socket (or a link to one) in place, streamed: renaming a temp
    file over `/dev/stdout` would replace it for the whole machine. Returns `out`."""
    target = out_target(out)
    if not is_stream(target):
        atomic_write(target, write)
        return out
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT, no O_TRUNC: it exists and is not a file
    except OSError as exc:
        raise _naming(exc, out) from None
    handle = os.fdopen(fd, "wb")
    try:
        _written(out, handle, write)
        handle.flush()
    except OSError as exc:
        raise _naming(exc, out) from None
    finally:
        with suppress(OSError):
            handle.close()
    return out


class OutputParts:
    """A Parquet output written frame by frame (OUTPUT_PARQUET), all or nothing, for outputs too big to hold
    whole: in a `with` block, `write` appends each frame to a temp file beside `path`; a clean exit makes it
    durable, checks that it reads back with the rows written (`read_back`) and renames it over `path` (with
    `staging`: leaves that to `staging.publish()`; `temp` is where it reads until then), an exception removes it
    and leaves `path` as it was. Each frame becomes its own row groups, in the order written; every frame must
    have the first one's columns (a column that is all null in one frame is cast to the first frame's type). At
    least one frame must be written, even empty: it gives the file its schema."""

    def __init__(self, path: Path, *, staging: Staging | None = None) -> None:
        self.path, self.rows, self._staging = path, 0, staging
        self._writer: pq.ParquetWriter | None = None
        self._schema: pl.Schema | None = None

    def __enter__(self) -> OutputParts:
        self._temp, self._handle = _open_temp(self.path, 0o644)
        return self

    @property
    def temp(self) -> Path:
        return self._temp

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        with machine_errors(self.path, self._temp):
            if self._writer is None:
                self._schema = frame.schema
                self._writer = pq.ParquetWriter(self._handle, table.schema,
                                                compression=OUTPUT_PARQUET["compression"],
                                                compression_level=OUTPUT_PARQUET["compression_level"])
            elif table.schema != self._writer.schema:
                table = table.cast(self._writer.schema)
            self._writer.write_table(table)
        self.rows += frame.height

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        if error is None and self._writer is not None:
            try:
                with machine_errors(self.path, self._temp):
                    self._writer.close()  # the Parquet footer; the handle stays open
                    _finish(self._handle, self._temp,
                            lambda temp: read_back(temp, rows=self.rows, schema=self._schema))
                    _publish(self._temp, self.path, self._staging)
                return
            except BaseException:
                _discard(self._handle, self._temp)
                raise
        if self._writer is not None:
            with suppress(Exception):  # the file is thrown away: the error that stopped it is the one to raise
                self._writer.close()
        _discard(self._handle, self._temp)
        if error is None:
            raise ValueError(f"{self.path.name}: no frame was written (write at least an empty one)")


class Staging:
    """Files published together, once every one of them is written and verified: a writer given a staging
    (`atomic_write`, `OutputParts`, `write_output`) leaves its finished temp file to it instead of renaming it,
    and `publish()` renames them all over their final names, in the order they came, then fsyncs their
    directories (renames need no space: a full disk fails a build before anything is published). Until then
    every final name keeps its previous file and `at(path)` is where the new one reads; leaving the `with` block
    without publishing (an error, a signal) removes the temp files."""

    def __init__(self) -> None:
        self._files: dict[Path, Path] = {}  # final name -> finished temp file

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *_: object) -> None:
        for temp in self._files.values():
            temp.unlink(missing_ok=True)
        self._files.clear()

    def add(self, temp: Path, path: Path) -> None:
        replaced = self._files.pop(path, None)
        if replaced is not None and replaced != temp:
            replaced.unlink(missing_ok=True)
        self._files[path] = temp

    def at(self, path: Path) -> Path:
        """Where `path` reads now: its staged temp file, else `path` itself."""
        return self._files.get(path, path)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def publish(self) -> None:
        directories = {path.parent for path in self._files}
        while self._files:
            path, temp = next(iter(self._files.items()))
            with machine_errors(path, temp):
                os.replace(temp, path)
            del self._files[path]
        for directory in sorted(directories):
            fsync_dir(directory)


def read_back(path: Path, *, rows: int | None = None, schema: Mapping[str, Any] | None = None) -> int:
    """Check that the Parquet file at `path` reads back (its footer, its schema and row count: not its pages)
    as written: `rows` rows, `schema` (polars) when given. Returns the rows. A file that does not is no output
    to publish: an OSError when its device is full (a writer that swallowed the error), else an error that is
    a bug."""
    try:
        found = pq.read_metadata(path).num_rows
        columns = pl.scan_parquet(path, glob=False).collect_schema()
    except (OSError, ValueError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise not_whole(path, f"it does not read back ({exc})") from exc
    if rows is not None and found != rows:
        raise not_whole(path, f"it holds {found} rows, {rows} were written")
    if schema is not None and dict(columns) != dict(schema):
        raise not_whole(path, f"its columns are {dict(columns)}, {dict(schema)} were written")
    return found


def not_whole(path: Path, why: str) -> Exception:
    """The error for a written file that is not what was written: the device's refusal when it is full (a
    writer that swallowed it), else a bug."""
    if _full(path):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return RuntimeError(f"{path} was written but {why}: not published")


def file_stamp(path: Path) -> list[int]:
    """[size, CRC-32 of the content] of a file: what a published output is checked against later (a CRC-32
    reads at several GB/s: the whole file, not a sample, is cheap next to any build that reads it)."""
    size, crc = 0, 0
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            crc = zlib.crc32(memoryview(buffer)[:read], crc)
            size += read
    return [size, crc]


# What a foreign writer says instead of raising OSError: Rust's io::Error (polars) ends in "(os error N)",
# DuckDB quotes strerror. Only the machine's refusals are translated; anything else stays what it was.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_MACHINE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_NEARLY_FULL = 1 << 20


def _full(path: Path) -> bool:
    """The device that holds `path` has (nearly) no space left for this user."""
    for candidate in (path, *path.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        free = info.f_bfree if os.geteuid() == 0 else info.f_bavail
        return free * info.f_frsize < _NEARLY_FULL
    return False


def machine_error(exc: BaseException, path: Path, temp: Path | None = None) -> OSError | None:
    """The OSError about the machine (no space, quota, read-only, no permission) that `exc`, raised while
    writing `path` (at `temp`), stands for, naming `path`; None when it is about something else. polars loses
    the errno of some writes ("Invalid thrift: transport error"): then a device left full says it."""
    code: int | None
    if isinstance(exc, OSError):
        code = exc.errno
    elif isinstance(exc, Exception):
        text = str(exc)
        found = _RUST_OS_ERROR.search(text)
        code = int(found.group(1)) if found else next((c for c in _MACHINE if os.strerror(c) in text), None)
        if code is None and _full(temp or path):
            code = errno.ENOSPC
    else:
        return None  # KeyboardInterrupt, SystemExit
    if code not in _MACHINE:
        return None
    return OSError(code, os.strerror(code), str(path))


@contextmanager
def machine_errors(path: Path, temp: Path | None = None) -> Iterator[None]:
    """Errors of writing `path` (at `temp`) that are about the machine, as the OSError naming `path` that they
    stand for (`machine_error`); every other error as it was."""
    try:
        yield
    except BaseException as exc:
        found = machine_error(exc, path, temp)
        if found is None or (isinstance(exc, OSError) and exc.filename == str(path)):
            raise
        raise found from exc


def remove_temp_files(paths: Iterator[Path]) -> list[Path]:
    removed = []
    for path in paths:
        path.unlink(missing_ok=True)
        removed.append(path)
    for directory in {p.parent for p in removed}:
        fsync_dir(directory)
    return removed
