"""Run state: one small JSON document per table, and one manifest per run, each written all or nothing.

`<data_dir>/state/<table>.state.json` holds what the next run starts from (delta link or watermark with the ids
that share its second, the signpost, the page to resume) and is saved only after the Parquet it covers is
durable (connector/lake.py), by temp file + fsync + rename, mode 0600 because a delta link lets anyone with
the token read changes. A missing file means "never extracted"; a file that is unreadable, of another format
or with a wrong field is a ConfigError naming the file and what to do: resetting state silently would
re-extract or, worse, skip data without anyone noticing. `<data_dir>/runs/<run_id>.json` is the run's
manifest (per table counts, requests, 429s, retries, seconds, watermark/delta before and after, exit status),
written the same way at the start, as tables finish and at the end, so a killed run still leaves a record.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from ground.errors import ConfigError
from ground.files import TEMP_SUFFIX, atomic_write, make_dirs, remove_temp_files, safe_name

FORMAT = 1  # the "format" key of every state file and manifest
SUFFIX = ".state.json"  # other modules may keep their own files (a metadata cache) in state/
Mode = Literal["delta", "watermark"]


class Resume(TypedDict):
    """Where an interrupted stream continues: fetch `next_link` and land it as page `page_no` of `stream`."""

    stream: str
    next_link: str
    page_no: int
    started_at: str  # ISO 8601 UTC: when the stream began (the signpost of a watermark read)
    full: NotRequired[bool]  # the stream is a full read (initial sync or resync after an expired token)
    reconcile: NotRequired[bool]  # at its end, ids the full read did not return are recorded as deleted


@dataclass
class TableState:
    table: str
    mode: Mode | None = None
    delta_link: str | None = None
    watermark: str | None = None  # ISO 8601 UTC, closed lower bound of the next watermark query
    boundary_ids: list[str] = field(default_factory=list)  # ids already landed at exactly `watermark`
    signpost: str | None = None  # ISO 8601 UTC: the run start that caps the watermark (meltano's signpost)
    resume: Resume | None = None
    last_success: str | None = None
    last_error: str | None = None
    rows_total: int = 0
    token_issued_at: str | None = None  # when the delta token was issued (tokens expire, default 7 days)


@dataclass
class TableRun:
    rows: int = 0
    pages: int = 0
    deletions: int = 0
    quarantined: int = 0
    requests: int = 0
    throttled: int = 0  # HTTP 429 answers
    retries: int = 0
    seconds: float = 0.0
    audit_details: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    delta_before: str | None = None
    delta_after: str | None = None
    error: str | None = None


@dataclass
class RunManifest:
    run_id: str
    started_at: str
    finished_at: str | None = None
    status: Literal["running", "ok", "failed"] = "running"
    exit_code: int | None = None
    tables: dict[str, TableRun] = field(default_factory=dict)

    @classmethod
    def start(cls, run_id: str | None = None, *, now: datetime | None = None) -> RunManifest:
        moment = now or datetime.now(UTC)
        return cls(run_id=run_id or new_run_id(moment), started_at=iso(moment))

    def table(self, name: str) -> TableRun:
        return self.tables.setdefault(name, TableRun())

    def finish(self, exit_code: int, *, now: datetime | None = None) -> None:
        self.exit_code = exit_code
        self.status = "ok" if exit_code == 0 else "failed"
        self.finished_at = iso(now or datetime.now(UTC))

    def save(self, data_dir: Path | str) -> Path:
        document = {"format": FORMAT, **asdict(self)}
        _check_manifest(document)
        return _write_json(manifest_path(data_dir, self.run_id), document)

    @classmethod
    def load(cls, data_dir: Path | str, run_id: str) -> RunManifest:
        path = manifest_path(data_dir, run_id)
        document = _read_json(path, "run manifest", _MANIFEST_HINT)
        try:
            _check_manifest(document)
        except ValueError as exc:
            raise _corrupt(path, "run manifest", str(exc), _MANIFEST_HINT) from None
        tables = {name: TableRun(**run) for name, run in document["tables"].items()}
        return cls(**{k: v for k, v in document.items() if k not in ("format", "tables")}, tables=tables)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: `20240107T215901Z-3f9a1c`."""
    return f"{(now or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def manifest_path(data_dir: Path | str, run_id: str) -> Path:
    return Path(data_dir) / "runs" / f"{safe_name(run_id, 'run id')}.json"


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no zone; l2c keeps times in UTC")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
        document = _read_json(path, "state file", hint)
        try:
            _check_state(document)
            if document["table"] != table:
                raise ValueError(f"it is the state of table {document['table']!r}")
        except ValueError as exc:
            raise _corrupt(path, "state file", str(exc), hint) from None
        return TableState(**{k: v for k, v in document.items() if k != "format"})

    def save(self, state: TableState) -> Path:
        """Commit `state`; call it only once the Parquet pages it covers are durable."""
        document = {"format": FORMAT, **asdict(state)}
        try:
            _check_state(document)  # never write a file `load` would refuse
        except ValueError as exc:
            raise ValueError(f"state of {state.table} not saved: {exc}") from None
        return _write_json(self.path(state.table), document)

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


def _read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, what, f"not readable JSON ({exc})", hint) from None
    if not isinstance(document, dict):
        raise _corrupt(path, what, "not a JSON object", hint)
    return document


def _write_json(path: Path, document: Mapping[str, Any]) -> Path:
    if not path.parent.exists():
        make_dirs(path.parent)
        os.chmod(path.parent, 0o700)
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data), mode=0o600)


# --- validation: every field's type, so a hand-edited or truncated file is refused, not half-read ----------

Check = Callable[[Any], bool]


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_resume(value: Any) -> bool:
    return isinstance(value, dict) and _fields_ok(value, _RESUME, optional=_RESUME_OPTIONAL) is None


def _is_runs(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str) and isinstance(run, dict) and _fields_ok(run, _TABLE_RUN) is None
        for name, run in value.items())


_RESUME: dict[str, Check] = {"stream": _is_str, "next_link": _is_str, "page_no": _is_count, "started_at": _is_time}
_RESUME_OPTIONAL: dict[str, Check] = {"full": lambda v: isinstance(v, bool), "reconcile": lambda v: isinstance(v, bool)}
_STATE: dict[str, Check] = {
    "format": lambda v: v == FORMAT, "table": _is_str, "mode": lambda v: v in (None, "delta", "watermark"),
    "delta_link": _optional(_is_str), "watermark": _optional(_is_time),
    "boundary_ids": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "signpost": _optional(_is_time), "resume": _optional(_is_resume), "last_success": _optional(_is_time),
    "last_error": _optional(_is_str), "rows_total": _is_count, "token_issued_at": _optional(_is_time),
}
_TABLE_RUN: dict[str, Check] = {
    f.name: (_is_seconds if f.name == "seconds" else _is_count if f.type == "int" else _optional(_is_str))
    for f in fields(TableRun)
}
_MANIFEST: dict[str, Check] = {
    "format": lambda v: v == FORMAT, "run_id": _is_str, "started_at": _is_time, "finished_at": _optional(_is_time),
    "status": lambda v: v in ("running", "ok", "failed"),
    "exit_code": _optional(lambda v: isinstance(v, int) and not isinstance(v, bool)), "tables": _is_runs,
}
assert set(_STATE) == {"format", *(f.name for f in fields(TableState))}
assert set(_RESUME) | set(_RESUME_OPTIONAL) == set(Resume.__annotations__)
assert set(_MANIFEST) == {"format", *(f.name for f in fields(RunManifest))}


def _fields_ok(document: Mapping[str, Any], checks: Mapping[str, Check],
               optional: Mapping[str, Check] | None = None) -> str | None:
    """None if `document` has these fields (and perhaps the optional ones), each valid; else what is wrong."""
    if document.get("format", FORMAT) != FORMAT and "format" in checks:
        return f"format {document.get('format')!r}, this l2c reads format {FORMAT} (written by another version?)"
    every = {**checks, **(optional or {})}
    missing, unknown = set(checks) - set(document), set(document) - set(every)
    if missing or unknown:
        return ", ".join([*([f"missing fields {sorted(missing)}"] if missing else []),
                          *([f"unknown fields {sorted(unknown)}"] if unknown else [])])
    wrong = [name for name, check in every.items() if name in document and not check(document[name])]
    if not wrong:
        return None
    nested = document.get("resume") if "resume" in wrong else None
    detail = _fields_ok(nested, _RESUME, _RESUME_OPTIONAL) if isinstance(nested, dict) else None
    return f"bad value in {', '.join(wrong)}" + (f" (resume: {detail})" if detail else "")


def _check_state(document: Mapping[str, Any]) -> None:
    problem = _fields_ok(document, _STATE)
    if problem:
        raise ValueError(problem)


def _check_manifest(document: Mapping[str, Any]) -> None:
    problem = _fields_ok(document, _MANIFEST)
    if problem:
        raise ValueError(problem)
