"""The register of landed raw pages: what each page was when it landed, so a run can tell a page that went missing
or was damaged (a clean-up script, a partial restore, a truncated copy) from a whole one before it trusts it.

`<data_dir>/state/pages/<table>.jsonl` holds one JSON line per page landed in `raw/<table>/`, appended and
fsynced by connector/lake.py once the page itself is durable: `{"page": "<stream>/<kind>-NNNNNN.parquet",
"size": bytes, "mtime_ns": ..., "crc32": ...}`. A page set aside as damaged gets `{"page": ..., "gone": why,
"run": run_id}`, and once its table has been read again in full the same with `"read_again": run_id`: until then
the lake lacks what the page held, and the transform refuses to build from it. The last line of a page wins (a
resumed page lands again under its name). Append-only, so landing a page costs one short write whatever the size
of the lake (a document rewritten per page would cost the square of it); a line a crash tore is the file's last:
it is skipped, and cut off before the next append.

`Stamp.damage` is cheap: one stat per page; only a page whose mtime moved with its size unchanged is read whole
to compare its crc32 (a copy restored with the same bytes is whole). A page altered in place that keeps its size
and mtime (storage bit rot) is not seen here; it fails when it is read, naming the file (connector/lake.py).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ground.errors import ConfigError
from ground.files import file_stamp, fsync_dir, machine_errors, make_dirs

SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Gone:
    """A page set aside by run `run` because it was `why`; `read_again` by the run that read its table again."""

    why: str
    run: str
    read_again: str | None = None


@dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int
    crc32: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        info = path.stat()
        return cls(info.st_size, info.st_mtime_ns, checksum(path))

    def damage(self, path: Path) -> str | None:
        """Why the file at `path` is not the page that landed with this stamp; None when it is."""
        try:
            info = path.stat()
        except FileNotFoundError:
            return "missing"
        if info.st_size != self.size:
            return f"{info.st_size} bytes where {self.size} landed (truncated or overwritten)"
        if info.st_mtime_ns != self.mtime_ns and checksum(path) != self.crc32:
            return "changed since it landed (its checksum differs)"
        return None


def checksum(path: Path) -> int:
    return file_stamp(path)[1]  # the CRC-32 the transform's outputs are stamped with too


class Register:
    def __init__(self, data_dir: Path | str) -> None:
        self.directory = Path(data_dir) / "state" / "pages"
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._opened: set[str] = set()  # tables whose file this process already ended on a new line

    def path(self, table: str) -> Path:
        return self.directory / f"{table}{SUFFIX}"

    def tables(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name.removesuffix(SUFFIX) for p in self.directory.glob(f"*{SUFFIX}")
                      if not p.name.startswith("."))

    def load(self, table: str) -> dict[str, Stamp | Gone]:
        """Page name (within the table's folder) -> its stamp, or what became of it once set aside."""
        path = self.path(table)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        pages: dict[str, Stamp | Gone] = {}
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], 1):  # the last is empty, or a line a crash tore
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name = entry["page"]
                if "gone" in entry:
                    pages[name] = Gone(str(entry["gone"]), str(entry["run"]), entry.get("read_again"))
                else:
                    pages[name] = Stamp(int(entry["size"]), int(entry["mtime_ns"]), int(entry["crc32"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"the register of landed pages {path} is unusable: line {number} is not one l2c "
                                  "wrote", hint="l2c writes it and nobody else should: restore it from a backup, or "
                                  "delete it and the next extract registers the pages it finds (a page lost "
                                  "before then cannot be noticed)") from None
        return pages

    def record(self, table: str, name: str, stamp: Stamp) -> None:
        self._append(table, {"page": name, "size": stamp.size, "mtime_ns": stamp.mtime_ns, "crc32": stamp.crc32})

    def set_aside(self, table: str, name: str, gone: Gone) -> None:
        entry: dict[str, object] = {"page": name, "gone": gone.why, "run": gone.run}
        if gone.read_again is not None:
            entry["read_again"] = gone.read_again
        self._append(table, entry)

    def _append(self, table: str, entry: dict[str, object]) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        with self._lock(table):
            path = self.path(table)
            created = not path.exists()
            if created and not self.directory.is_dir():
                new = [d for d in (self.directory.parent, self.directory) if not d.exists()]
                make_dirs(self.directory)
                for directory in new:  # state/ as connector/state.py makes it: user-only
                    os.chmod(directory, 0o700)
            if table not in self._opened and not created:
                _cut_torn_line(path)
            self._opened.add(table)
            # A full disk fails the write, flush or fsync with an OSError that names no file: name the register.
            with machine_errors(path), \
                    os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                fsync_dir(path.parent)

    def _lock(self, table: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(table, threading.Lock())


def _cut_torn_line(path: Path) -> None:
    """Drop what a crash left of a last line, so the next line starts the file's next line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with machine_errors(path), open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            os.fsync(handle.fileno())
