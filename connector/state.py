"""Run state: one small JSON document per table, and one manifest per run, each written all or nothing.

`<data_dir>/state/<table>.state.json` holds what the next run starts from (delta link or watermark with the ids
that share its second, the signpost, the page to resume) and is saved only after the Parquet it covers is
durable (connector/lake.py), by temp file + fsync + rename, mode 0600 because a delta link lets anyone with
the token read changes. A missing file means "never extracted"; a file that is unreadable, of another format
or with a wrong field is a ConfigError naming the file, the first problem and what to do: resetting state
silently would re-extract or, worse, skip data without anyone noticing. `<data_dir>/runs/<run_id>.json` is the
run's manifest (per table counts, requests, 429s, retries, seconds, watermark/delta before and after, exit
status), written the same way at the start, as tables finish and at the end, so a killed run still leaves a
record. Each document is a pydantic model (`Document`: strict types, no unknown field, every field present in
a file), checked where a file is read and before one is written; pydantic's ValidationError becomes our error
here and goes no further.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ground.errors import ConfigError, local_error
from ground.files import TEMP_SUFFIX, atomic_write, make_dirs, remove_temp_files, safe_name

FORMAT = 1  # the "format" key of every state file and manifest
SUFFIX = ".state.json"  # other modules may keep their own files (a metadata cache) in state/
Mode = Literal["delta", "watermark"]
IN_FILE = "file"  # the validation context of a document read from a file or about to be written to one
INTERRUPTED = frozenset({130, 143})  # the exit codes of a run stopped by SIGINT or SIGTERM


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no zone; l2c keeps times in UTC")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _aware(value: object) -> datetime:
    """A time as a file spells it (ISO 8601 as datetime.fromisoformat reads it) or as code sets it, with a zone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("iso_time", "not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise PydanticCustomError("iso_time", "not an ISO 8601 time")
    if value.tzinfo is None:
        raise PydanticCustomError("iso_time", "a time without a zone (l2c keeps times in UTC)")
    return value


def _isoformat(moment: datetime) -> str:
    return moment.isoformat()


# Each time is written as its writer always spelled it, so a file read and saved again keeps its bytes: a
# state's times (and a manifest's watermarks, copied from states) as datetime.isoformat() of a UTC time
# (`+00:00`, connector/sync.py state_time), a manifest's start and end as iso() (`Z`).
StateTime = Annotated[datetime, BeforeValidator(_aware), PlainSerializer(_isoformat, return_type=str, when_used="json")]
RunTime = Annotated[datetime, BeforeValidator(_aware), PlainSerializer(iso, return_type=str, when_used="json")]


class Document(BaseModel):
    """A JSON document l2c writes and reads back. Strict: 4 is no "4", 1 no true, a list no string; no unknown
    field; and a file must hold every field but those of `optional_in_file` (code may leave out what has a
    default; a file lacking one was not written by l2c, and reading its default could silently reset it).
    Those optional fields came later: each is written only when it was given (read from a file or set), so a
    file written before them saves again to the same bytes."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)
    optional_in_file: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _optional_only_if_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        written: dict[str, Any] = handler(self)
        return {k: v for k, v in written.items() if k not in self.optional_in_file or k in self.model_fields_set}

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Self:
        if info.context == IN_FILE:
            missing = [name for name in type(self).model_fields
                       if name not in self.model_fields_set and name not in self.optional_in_file]
            if missing:
                raise PydanticCustomError("missing_field", "missing field", {"field": missing[0]})
        return self


D = TypeVar("D", bound=Document)


def first_problem(exc: ValidationError) -> str:
    """Pydantic's first error in one line: where in the document (a dotted path) and what is wrong there (never
    the value: it may be a delta link)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(part) for part in first["loc"]]
    if first["type"] == "missing_field":
        loc.append(str((first.get("ctx") or {}).get("field")))
    where = ".".join(loc) or "the document"
    if first["type"] in ("missing", "missing_field"):
        return f"missing field {where}"
    if first["type"] == "extra_forbidden":
        return f"unknown field {where}"
    return f"bad value in {where}: {' '.join(first['msg'].split())}"


def _validated(cls: type[D], document: Mapping[str, Any]) -> D:
    """`document`, a file's JSON object with its "format", as `cls`; ValueError saying what is wrong in one line."""
    if "format" not in document:
        raise ValueError("missing field format")
    version = document["format"]
    if version != FORMAT or isinstance(version, bool):
        raise ValueError(f"format {version!r}, this l2c reads format {FORMAT} (written by another version?)")
    try:
        return cls.model_validate({k: v for k, v in document.items() if k != "format"}, context=IN_FILE)
    except ValidationError as exc:
        raise ValueError(first_problem(exc)) from None


class Resume(Document):
    """Where an interrupted stream continues: fetch `next_link` and land it as page `page_no` of `stream`."""

    optional_in_file = frozenset({"full", "reconcile"})  # a watermark read's resume point has neither
    stream: str
    next_link: str
    page_no: NonNegativeInt
    started_at: StateTime  # when the stream began (the signpost of a watermark read)
    full: bool = False  # the stream is a full read (initial sync or resync after an expired token)
    reconcile: bool = False  # at its end, ids the full read did not return are recorded as deleted


class LinkFile(Document):
    """How much of one append-only CSV file of a Link export has landed (docs/LINK.md D6/D7)."""

    consumed: NonNegativeInt  # bytes of complete records read (a half-written last record is not)
    rows: NonNegativeInt  # records in those bytes (to number a bad row in the file)
    size: NonNegativeInt  # the file's size and version when read: unchanged = nothing to read
    version: str
    crc: NonNegativeInt  # CRC-32 of the consumed bytes: a changed prefix means the file was rewritten


class LinkState(Document):
    """Where the next read of a table from a Link export starts: per CSV file its consumed bytes; for
    incremental folders the last complete folder read; for Delta the table version read."""

    optional_in_file = frozenset({"files", "folder", "delta_version"})
    layout: Literal["csv", "incremental", "delta"]
    files: dict[str, LinkFile] = Field(default_factory=dict)
    folder: str | None = None
    delta_version: NonNegativeInt | None = None


class TableState(Document):
    optional_in_file = frozenset({"link"})  # states written before the Link reader have none
    table: str
    mode: Mode | None = None
    delta_link: str | None = None
    watermark: StateTime | None = None  # closed lower bound of the next watermark query
    boundary_ids: list[str] = Field(default_factory=list)  # ids already landed at exactly `watermark`
    signpost: StateTime | None = None  # the run start that caps the watermark (meltano's signpost)
    resume: Resume | None = None
    last_success: StateTime | None = None
    last_error: str | None = None
    rows_total: NonNegativeInt = 0
    token_issued_at: StateTime | None = None  # when the delta token was issued (tokens expire, default 7 days)
    link: LinkState | None = None  # L2C_SOURCE=link: the table's checkpoint in the export (connector/link.py)


class TableRun(Document):
    optional_in_file = frozenset({"damaged"})
    rows: NonNegativeInt = 0
    pages: NonNegativeInt = 0
    deletions: NonNegativeInt = 0
    quarantined: NonNegativeInt = 0
    requests: NonNegativeInt = 0
    throttled: NonNegativeInt = 0  # HTTP 429 answers
    retries: NonNegativeInt = 0
    seconds: NonNegativeFloat = 0.0
    audit_details: NonNegativeInt = 0
    watermark_before: StateTime | None = None
    watermark_after: StateTime | None = None
    delta_before: str | None = None
    delta_after: str | None = None
    error: str | None = None
    damaged: list[str] = Field(default_factory=list)  # landed pages found missing or damaged: "<path>: <why>"


class RunManifest(Document):
    optional_in_file = frozenset({"error"})  # manifests written before it have none; written only when set
    run_id: str
    started_at: RunTime
    finished_at: RunTime | None = None
    status: Literal["running", "ok", "failed", "interrupted"] = "running"
    exit_code: int | None = None
    error: str | None = None  # the line a failed run ended with (what `l2c status` shows)
    tables: dict[str, TableRun] = Field(default_factory=dict)

    @classmethod
    def start(cls, run_id: str | None = None, *, now: datetime | None = None) -> RunManifest:
        moment = now or datetime.now(UTC)
        return cls(run_id=run_id or new_run_id(moment), started_at=moment)

    def table(self, name: str) -> TableRun:
        return self.tables.setdefault(name, TableRun())

    def finish(self, exit_code: int, *, error: str | None = None, now: datetime | None = None) -> None:
        self.exit_code = exit_code
        self.status = "ok" if exit_code == 0 else "interrupted" if exit_code in INTERRUPTED else "failed"
        if error is not None:
            self.error = error
        self.finished_at = now or datetime.now(UTC)

    def save(self, data_dir: Path | str) -> Path:
        path = manifest_path(data_dir, self.run_id)
        try:
            return _save(self, path)
        except ValueError as exc:
            raise ValueError(f"run manifest {path} not saved: {exc}") from None

    @classmethod
    def load(cls, data_dir: Path | str, run_id: str) -> RunManifest:
        return _load(cls, manifest_path(data_dir, run_id), "run manifest", _MANIFEST_HINT)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: `20240107T215901Z-3f9a1c`."""
    return f"{(now or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def manifest_path(data_dir: Path | str, run_id: str) -> Path:
    return Path(data_dir) / "runs" / f"{safe_name(run_id, 'run id')}.json"


class StateStore:
    def __init__(self, data_dir: Path | str) -> None:
        self.directory = Path(data_dir) / "state"

    def path(self, table: str) -> Path:
        return self.directory / f"{safe_name(table, 'table')}{SUFFIX}"

    def load(self, table: str) -> TableState:
        """The saved state, or a fresh one if `table` was never extracted."""
        path = self.path(table)
        if not path.exists():
            return TableState(table=table)
        hint = _STATE_HINT.format(table=table)
        state = _load(TableState, path, "state file", hint)
        if state.table != table:
            raise _corrupt(path, "state file", f"it is the state of table {state.table!r}", hint)
        return state

    def save(self, state: TableState) -> Path:
        """Commit `state`; call it only once the Parquet pages it covers are durable."""
        try:
            return _save(state, self.path(state.table))
        except ValueError as exc:
            raise ValueError(f"state of {state.table} not saved: {exc}") from None

    def all(self) -> list[TableState]:
        if not self.directory.is_dir():
            return []
        names = sorted(p.name.removesuffix(SUFFIX) for p in self.directory.glob(f"*{SUFFIX}")
                       if not p.name.startswith("."))
        return [self.load(name) for name in names]

    def cleanup(self) -> list[Path]:
        """Remove temp files of a crashed save (state and manifests). Call it only while holding the run lock."""
        runs = self.directory.parent / "runs"
        return remove_temp_files(iter([p for d in (self.directory, runs) if d.is_dir()
                                       for p in d.glob(f".*{TEMP_SUFFIX}")]))


_STATE_HINT = ("l2c writes it and nobody else should: restore it from a backup, or delete it to extract {table} "
               "again from the start (the pages already in raw/ stay and later versions supersede them)")


_MANIFEST_HINT = "it only records a past run: move it aside"


def _corrupt(path: Path, what: str, why: str, hint: str) -> ConfigError:
    return ConfigError(f"{what} {path} is unusable: {why}", hint=hint)


def _load(cls: type[D], path: Path, what: str, hint: str) -> D:
    try:
        text = path.read_bytes()
    except OSError as exc:
        # Not the file's content: a state of another user (root ran l2c here by hand) is not corrupt, and deleting
        # it would be the wrong advice. Its owner and the chown of the whole data directory are the fix.
        local = local_error(exc, path, doing="read", tree=path.parent.parent)
        if local is None:
            raise _corrupt(path, what, f"not readable ({exc.strerror})", hint) from None
        raise local from None
    try:
        document = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, what, f"not readable JSON ({exc})", hint) from None
    if not isinstance(document, dict):
        raise _corrupt(path, what, "not a JSON object", hint)
    try:
        return _validated(cls, document)
    except ValueError as exc:
        raise _corrupt(path, what, str(exc), hint) from None


def _save(model: Document, path: Path) -> Path:
    """`model` as its file, the same shape the dataclasses wrote: "format" first, then every field in order."""
    document = {"format": FORMAT, **model.model_dump(mode="json")}
    _validated(type(model), document)  # never write a file `load` would refuse
    if not path.parent.exists():
        make_dirs(path.parent)
        os.chmod(path.parent, 0o700)
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data), mode=0o600)
