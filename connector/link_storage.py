"""Where a Link export lives, behind one small interface: list files, read byte ranges, locate a Delta table.

`open_store(url, settings)` gives an `ExportStore`: a local folder (or `file://` URL) here as `LocalStore`; an
`abfss://`, `az://` or `https://` URL (ADLS Gen2, OneLake: docs/LINK.md §9, D1) through
`connector.link_remote.open_remote`, imported only when such a URL is used. Paths are relative to the export
root with "/" separators; an entry's `version` (etag remotely, mtime in nanoseconds here) tells a rewritten
file from an appended one together with its size. A missing root is SourceUnavailable (exit 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from ground.errors import SourceUnavailable

REMOTE_SCHEMES = ("abfss", "abfs", "az", "https")


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


def open_store(url: str, settings: Any) -> ExportStore:
    """The store of the export at `url`: a local folder or file:// URL, else a remote one (connector.link_remote)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        from connector.link_remote import open_remote  # written beside this reader; needs adlfs

        store: ExportStore = open_remote(url, settings)
        return store
    root = Path(unquote(urlsplit(url).path)) if scheme == "file" else Path(url).expanduser()
    if not root.is_dir():
        raise SourceUnavailable(f"not a Synapse Link / Fabric Link export: {url} is not a folder",
                                hint="set L2C_LINK_URL to the export's root (the folder that holds model.json "
                                     "or deltalake/)")
    return LocalStore(root.resolve(), url)
