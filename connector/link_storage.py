"""Where a Link export lives, behind one small interface: list files, read byte ranges, locate a Delta table.

An `ExportStore` is a local folder (or `file://` URL) here as `LocalStore`, or an `abfss://`, `az://` or
`https://` URL (ADLS Gen2, OneLake: docs/LINK.md §9, D1) as connector/link_remote.py's `RemoteStore`;
connector/link.py's `open_store` picks one. Paths are relative to the export root with "/" separators; an
entry's `version` (etag remotely, mtime in nanoseconds here) tells a rewritten file from an appended one
together with its size. A missing root is SourceUnavailable (exit 4).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ground.errors import SourceUnavailable


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the export root, "/" separators
    size: int
    version: str  # etag (remote) or mtime_ns (local): changes when the file is rewritten


class ExportStore(Protocol):
    url: str

    def list(self, prefix: str = "") -> list[Entry]:
        """Files under `prefix` (recursive), in path order."""
        ...

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a file (to its end when `end` is None)."""
        ...

    def delta_location(self, path: str) -> tuple[str, dict[str, str]]:
        """(table URI, deltalake storage_options) of the Delta table at `path`."""
        ...

    def trusted(self) -> AbstractContextManager[None]:
        """The context in which deltalake opens and reads a table of this store (the CA it must trust)."""
        ...


class LocalStore:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def list(self, prefix: str = "") -> list[Entry]:
        base = self.root / prefix if prefix else self.root
        if base.is_file():
            return [self._entry(base)]
        if not base.is_dir():
            return []
        found = []
        for directory, _, files in os.walk(base):
            found += [self._entry(Path(directory) / name) for name in files]
        return sorted(found, key=lambda e: e.path)

    def _entry(self, path: Path) -> Entry:
        stat = path.stat()
        return Entry(path.relative_to(self.root).as_posix(), stat.st_size, str(stat.st_mtime_ns))

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with (self.root / path).open("rb") as handle:
                handle.seek(start)
                return handle.read() if end is None else handle.read(max(0, end - start))
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {path} of the Link export {self.url}: {exc.strerror}",
                                    hint="check that the export is complete and readable") from None

    def delta_location(self, path: str) -> tuple[str, dict[str, str]]:
        return str(self.root / path), {}

    def trusted(self) -> AbstractContextManager[None]:
        return nullcontext()  # local files: no TLS

