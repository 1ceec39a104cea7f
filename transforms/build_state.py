"""The transform's own state: which landed pages the event log covers, and the frames an incremental build needs.

`state/transform/state.json` names every raw page the outputs were built from (path -> size, mtime), a
fingerprint of everything else they depend on (the activity rules and table declarations as loaded, and the code
of the transforms package), the generation of the frames beside it (`case_map`, `event_users`, `orphans`, and the
tables it names for the database: `<name>-<generation>.parquet`), the counts of that build, and the size and
CRC-32 of every output it published (`outputs`: the event log, the cases, each frame, l2c.duckdb). It is
published last, in the same burst of renames as the outputs (ground/files.py `Staging`), once they are written
and verified. A transform killed before that leaves the previous state, so the next one reads the same new pages
again and recomputes the same cases: a case recomputed twice gives the same rows, so nothing is lost or
duplicated. Every transform first checks the outputs against their recorded stamps (`damaged`): one that is
missing, damaged or replaced by something else is the reason of a full build, which names it. The state is a
pydantic model checked as strictly as the extract's (connector/state.py `Document`); one that is missing, of
another format or unusable is no error but the reason the next build is a full one, which rewrites it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import polars as pl
from pydantic import Field, NonNegativeInt, ValidationError

from connector.lake import Lake
from connector.state import IN_FILE, Document, first_problem
from ground.files import Staging, atomic_write, file_stamp, write_output
from transforms.outputs import state_dir

# The code the outputs depend on: every module of this package (the driver, the pure transforms, this one).
SOURCES = Path(__file__).parent
FRAMES = ("case_map", "event_users", "orphans")
STATE_FILE = "state.json"
# 4: `outputs` (the published outputs' sizes and checksums). A state of format 3 cannot vouch for its outputs:
# the next build is a full one (as any new l2c's is: the code is in the fingerprint).
FORMAT = 4
PageStamp = Annotated[list[int], Field(min_length=2, max_length=2)]  # [size, mtime_ns]
FileStamp = Annotated[list[NonNegativeInt], Field(min_length=2, max_length=2)]  # [size, CRC-32]: ground.files


def frame_path(data_dir: Path, name: str, generation: int) -> Path:
    """Where a build of `generation` keeps its frame `name` (one of FRAMES)."""
    return state_dir(data_dir) / f"{name}-{generation:06d}.parquet"


def next_generation(data_dir: Path) -> int:
    """The generation of the next build: above the last finished one's (even when a full build ignores it), so
    its frames never overwrite the ones the last state file names before the new state file replaces it."""
    last = TransformState.load(data_dir)
    return last.generation + 1 if last else 1


class TransformState(Document):
    fingerprint: str
    pages: dict[str, PageStamp]  # raw page path, relative to the data directory -> [size, mtime_ns]
    generation: NonNegativeInt = 0
    events: NonNegativeInt = 0
    cases: NonNegativeInt = 0
    orphans: NonNegativeInt = 0
    quality: dict[str, NonNegativeInt] = Field(default_factory=dict)
    tables: list[str] = Field(default_factory=list)  # frames of this generation that become database tables
    outputs: dict[str, FileStamp]  # every output published by this build (path relative to the data dir)
    format: int = FORMAT

    @classmethod
    def load(cls, data_dir: Path) -> TransformState | None:
        """The state of the last finished build, or None (none yet, another format, unusable)."""
        found = cls.read(data_dir)
        return found if isinstance(found, TransformState) else None

    @classmethod
    def read(cls, data_dir: Path) -> TransformState | str:
        """The state of the last finished build, or why there is none to build on (a full build's reason)."""
        path = state_dir(data_dir) / STATE_FILE
        if not path.exists():
            return "no previous build"
        unusable = f"the previous build's state {path} is unusable"
        try:
            document = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            return f"{unusable}: not readable JSON ({exc})"
        if not isinstance(document, dict):
            return f"{unusable}: not a JSON object"
        if document.get("format") != FORMAT:
            return f"the previous build was made by another l2c version (state format {document.get('format')!r})"
        try:
            state = cls.model_validate(document, context=IN_FILE)
        except ValidationError as exc:
            return f"{unusable}: {first_problem(exc)}"
        return state  # whether its outputs are still as it published them: `damaged`

    def frame_path(self, data_dir: Path, name: str) -> Path:
        return frame_path(data_dir, name, self.generation)

    def frame(self, data_dir: Path, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.frame_path(data_dir, name), glob=False)

    def write_frames(self, data_dir: Path, frames: dict[str, pl.DataFrame], staging: Staging) -> None:
        """Write `frames` as this state's generation, staged (a frame of FRAMES not given must be staged there
        already, e.g. streamed by the build), and record every frame of the generation in `outputs`."""
        for name, frame in frames.items():
            write_output(frame, self.frame_path(data_dir, name), staging=staging)
        for name in (*FRAMES, *self.tables):
            path = self.frame_path(data_dir, name)
            assert path in staging, f"the build wrote no {name} of generation {self.generation}"
            self.record(data_dir, path, file_stamp(staging.at(path)))

    def record(self, data_dir: Path, path: Path, stamp: list[int] | None = None) -> None:
        """Record the output `path` as published by this build, with `stamp` (default: the file's own)."""
        self.outputs[path.relative_to(data_dir).as_posix()] = stamp or file_stamp(path)

    def damaged(self, data_dir: Path) -> str | None:
        """What differs between the outputs on disk and the ones this build published (missing, another size,
        another checksum: damaged, or replaced by something l2c did not write), or None when nothing does."""
        found = []
        for name, (size, crc) in sorted(self.outputs.items()):
            path = data_dir / name
            if not path.is_file():
                found.append(f"{name} is missing")
                continue
            now = path.stat().st_size
            if now != size:
                found.append(f"{name} was damaged or replaced ({now} bytes, {size} when l2c published it)")
            elif file_stamp(path)[1] != crc:
                found.append(f"{name} was damaged or replaced (its checksum changed since l2c published it)")
        return "; ".join(found) or None

    def save(self, data_dir: Path, staging: Staging | None = None) -> None:
        """Write the state file (with `staging`: published with the outputs); without one, drop older
        generations too (else the caller does, after publishing)."""
        directory = state_dir(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True).encode()
        atomic_write(directory / STATE_FILE, lambda handle: handle.write(text), staging=staging)
        if staging is None:
            self.drop_older_generations(data_dir)

    def drop_older_generations(self, data_dir: Path) -> None:
        kept = {self.frame_path(data_dir, name).name for name in (*FRAMES, *self.tables)}
        for path in state_dir(data_dir).glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"):  # older generations'
            if path.name not in kept:
                path.unlink(missing_ok=True)


def lake_pages(data_dir: Path) -> dict[str, list[int]]:
    """Every landed rows/deletions page of every table: relative path -> [size, mtime_ns]."""
    lake = Lake(data_dir)
    tables = sorted(p.name for p in lake.root.iterdir() if p.is_dir()) if lake.root.is_dir() else []
    found = {}
    for table in tables:
        for page in lake.pages(table):
            stat = page.stat()
            found[page.relative_to(data_dir).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return found


def fingerprint(*declarations: object) -> str:
    """sha256 of the loaded declarations' repr and of the code that turns the lake into the outputs."""
    digest = hashlib.sha256(repr(declarations).encode())
    for path in sorted(SOURCES.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def table_of(page: str) -> str:
    """`raw/<table>/<stream>/<kind>-NNNNNN.parquet` -> table."""
    return page.split("/")[1]


def touched_objects(data_dir: Path, pages: list[str], keys: Mapping[str, str]) -> pl.DataFrame:
    """(object_type, object_id) of every record the given raw pages carry rows of (audit rows by their object)."""
    parts = [pl.DataFrame(schema={"object_type": pl.Utf8, "object_id": pl.Utf8})]
    for page in pages:
        table, path = table_of(page), data_dir / page
        names = pl.scan_parquet(path, glob=False).collect_schema().names()
        if table == "audit":
            kind, key = "objecttypecode", "_objectid_value"
        elif table == "audit_details":
            kind, key = "objecttypecode", "objectid"
        else:
            kind, key = "", keys.get(table, f"{table}id")  # a table outside the object model: Dataverse's usual key
        if key not in names or (kind and kind not in names):
            continue
        frame = pl.read_parquet(path, columns=[key, kind] if kind else [key], glob=False)
        parts.append(frame.select((pl.col(kind) if kind else pl.lit(table)).cast(pl.Utf8).alias("object_type"),
                                  pl.col(key).cast(pl.Utf8).alias("object_id")))
    return pl.concat(parts).drop_nulls().unique().sort("object_type", "object_id")
