"""The transform's driver: the raw lake -> `event_log.parquet`, `cases.parquet` and the frames beside them.

Reads the newest landed version of every record (deleted ones included: their events stay facts), the audit rows
and details, runs the pure transforms, and writes each output to a temp file that is verified (it reads back with
the schema and rows written; the log's `event_id`s are unique) and left to the caller's `Staging`: the caller
(sql/load.py) adds the database and publishes them all at once with the state (`publish`), so a reader never
sees half a log, and a build that fails (a full disk: exit 6) or is killed leaves every previous output in
place. A full build goes through the cases in parts of CASES_PER_PART, appending each part to the outputs, so
the log is never held whole. Beside the log it writes, as
frames of its generation (transforms/build_state.py), who did each event, the data-quality report
(`quality_issues`) and the few object attributes the analysis views need (accounts, quotes, orders, invoices):
sql/load.py loads all of them into `l2c.duckdb`.

Incremental: the transform remembers which landed pages its outputs cover (transforms/build_state.py). The next
one reads only the records of the new pages, works out the cases they touch (transforms/incremental.py) and
recomputes just those, streaming every other case's rows over from the previous files; the result equals a full
rebuild, which happens when there is no usable state, the rules or the code changed, a covered page changed or
vanished, an output is missing, damaged or replaced (its size or CRC-32 differs from the one recorded when it
was published: transforms/build_state.py), or `--full` asks for it. With no new page and every output as it was
published it does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from config.activities import Rule, load_activities
from config.settings import Settings
from config.tables import TablesConfig, load_tables
from connector.lake import LINEAGE, LINEAGE_SCHEMA, READ_AGAIN, ROW, Lake
from connector.lock import RunLock
from connector.metadata import cached_attributes, primary_ids, user_local_dates
from connector.rows import column_specs, polars_schema
from connector.state import StateStore
from ground.errors import ConfigError
from ground.files import (
    OUTPUT_PARQUET,
    TEMP_SUFFIX,
    OutputParts,
    Staging,
    atomic_write,
    file_stamp,
    machine_errors,
    make_dirs,
    read_back,
    remove_temp_files,
    temp_beside,
    write_output,
)
from transforms import quality
from transforms.analysis import analysis_tables
from transforms.build_state import (
    TransformState,
    fingerprint,
    frame_path,
    lake_pages,
    next_generation,
    touched_objects,
)
from transforms.cases import attribute_context, case_map, context_cases
from transforms.eventlog import build, unique_ids
from transforms.events import OP_DELETE, events_from_audit
from transforms.incremental import OBJECT, replace_cases, replace_objects, touched_cases
from transforms.ocel import all_versions, object_types
from transforms.outputs import CASES, DATABASE, EVENT_LOG, OBJECTS, state_dir
from transforms.snapshot import Among, combine, events_from_record_dates, events_from_snapshots, only

Schema = dict[str, pl.DataType | type[pl.DataType]]
AUDIT_SCHEMA: Schema = {"auditid": pl.Utf8, "createdon": pl.Datetime("us", "UTC"), "operation": pl.Int32,
                        "action": pl.Int32, "action__label": pl.Utf8, "objecttypecode": pl.Utf8,
                        "_objectid_value": pl.Utf8, "_userid_value": pl.Utf8}
DETAILS_SCHEMA: Schema = {"auditid": pl.Utf8, "objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8,
                          "new_values": pl.Utf8}

# A full build computes the events, log and cases of this many cases at a time and streams each part to the
# outputs, so its memory is bounded by a part, not by the lake (the log is sorted by case_id first: parts of
# ascending case-id ranges append into the sorted log). The bench's 1M-lead org (999,695 cases) takes 4 parts.
CASES_PER_PART = 250_000


@dataclass
class BuildResult:
    events: int
    cases: int
    orphans: int
    event_log: Path
    database: Path  # where sql/load.py loads the outputs below
    cases_file: Path
    event_users: Path
    tables: dict[str, Path]  # tables of the database beside the log and cases: the quality report, the analysis ones
    quality: dict[str, int] = field(default_factory=dict)  # findings per data-quality check
    mode: str = "full"  # "full", "incremental", or "unchanged" (nothing new since the last build)
    recomputed: int = 0  # cases whose events were (re)computed
    reason: str = ""  # why a full build (when it was not asked for)
    state: TransformState | None = None  # the build's state, to publish with its outputs (`publish`)


def newest_versions(lake: Lake, table: str, pk: str, empty: pl.Schema | None = None) -> pl.LazyFrame:
    """Every record's newest landed version, whether or not it was deleted later; none, with the columns of
    `empty`, when no row of the table has landed yet."""
    if not lake.has_rows(table):
        return pl.LazyFrame(schema=empty or {pk: pl.Utf8})
    rows = lake.scan(table)
    return (rows.filter(pl.col("_op") == "upsert").sort("_version", "_extracted_at", nulls_last=False)
            .unique(pk, keep="last", maintain_order=True))


@dataclass
class LakeInputs:
    """What the transform reads from the lake (lazily: nothing is read until a frame is collected)."""

    records: dict[str, pl.LazyFrame]  # newest landed version per record, by table
    deleted_details: pl.LazyFrame
    landed: dict[str, pl.LazyFrame]  # every landed row version, lineage dropped (duplicate-version check)
    created_activities: set[str]  # activities that mark an object's creation
    rules: list[Rule]
    audit: pl.LazyFrame
    details: pl.LazyFrame
    history: dict[str, pl.LazyFrame]  # every landed version of each rule's table
    model: TablesConfig  # the object model (config/tables.toml)
    keys: dict[str, str]  # the primary key of each table of the model
    notes: dict[str, pl.LazyFrame] = field(default_factory=dict)  # per table, values landed converted (quality)

    def users(self) -> pl.LazyFrame:
        """(user_id, resource) of the users who act, by the model's user table and name column."""
        table = self.model.model.users
        return self.records[table].select(pl.col(self.keys[table]).alias("user_id"),
                                          pl.col(self.model.model.user_name).alias("resource"))

    def events(self, objects: pl.LazyFrame | None = None, how: Among = "semi") -> pl.LazyFrame:
        """The events of all three paths, each fact once; only those of `objects` (object_type, object_id)
        when given, or with how="anti" of every other record. Audit wins; snapshot_diff and record_dates fill
        in where the audit is missing."""
        newest = {name: only(frame, name, self.keys[name], objects, how) for name, frame in self.records.items()}
        return combine(
            events_from_audit(_of(self.audit, "_objectid_value", objects, how),
                              _of(self.details, "objectid", objects, how), self.rules),
            events_from_snapshots(self.history, self.rules, self.keys, objects, how),
            events_from_record_dates(newest, self.rules, self.keys))


def primary_keys(settings: Settings, tables: TablesConfig) -> dict[str, str]:
    """The primary key of every table of the object model, from the org's metadata (the extract's cache); a table
    the cache does not know (none landed yet) has Dataverse's usual one, its logical name + "id"."""
    known = primary_ids(StateStore(settings.data_dir).directory)
    return {t.name: known.get(t.name, f"{t.name}id") for t in tables.modelled}


def unlanded(settings: Settings, tables: TablesConfig) -> dict[str, pl.Schema]:
    """The columns a landed page of each modelled table has (its declared columns typed by the org's metadata,
    then the lineage), from the extract's metadata cache: the records of a table no row has landed in yet (a new
    org without a lead, an org without an opportunity) still have every column the transforms read."""
    attributes = cached_attributes(StateStore(settings.data_dir).directory)
    return {table.name: pl.Schema({**polars_schema(column_specs(attributes[table.name], table.columns)),
                                   **LINEAGE_SCHEMA})
            for table in tables.modelled if table.name in attributes}


def read_lake(settings: Settings) -> LakeInputs:
    tables = load_tables(settings.tables_file)
    tables.model  # noqa: B018 - the transform needs the object model: a ConfigError that says so when absent
    rules = load_activities(settings.activity_map, tables)
    lake = Lake(settings.data_dir)
    keys = primary_keys(settings, tables)
    empty = unlanded(settings, tables)
    records = {name: newest_versions(lake, name, pk, empty.get(name)) for name, pk in keys.items()}
    # The columns the transforms read, chosen before the dedupe (which would otherwise compare whole rows).
    audit, details = (distinct(lake.scan(table).select(list(schema)), "auditid") if lake.has_rows(table)
                      else pl.LazyFrame(schema=schema)
                      for table, schema in (("audit", AUDIT_SCHEMA), ("audit_details", DETAILS_SCHEMA)))
    history = {name: lake.scan(name) for name in sorted({rule.table for rule in rules}) if lake.has_rows(name)}
    deletes = audit.filter(pl.col("operation") == OP_DELETE).select("auditid")
    landed = {name: lake.scan(name).filter(pl.col("_op") == "upsert").drop(*LINEAGE, ROW, strict=False)
              for name in keys if lake.has_rows(name)}
    notes = {name: lake.scan_notes(name) for name in (*keys, "audit") if lake.pages(name, ("notes",))}
    return LakeInputs(records, details.join(deletes, on="auditid", how="semi"), landed,
                      {rule.name for rule in rules if rule.trigger == "created"}, rules, audit, details, history,
                      tables, keys, notes)


@contextmanager
def records_on_disk(inputs: LakeInputs, directory: Path) -> Iterator[LakeInputs]:
    """`inputs` whose records (each record's newest landed version: a sort of all its versions) are computed
    once into temp Parquet files in `directory` and read from there, removed on the way out. A build reads them
    in every step (case map, events, case attributes, each part, quality, analysis tables); without this, each
    read sorted every version again: at 1M leads, 3 s for the lead table each time."""
    written = []
    try:
        for name, frame in inputs.records.items():
            written.append(temp_beside(directory / f"records-{name}.parquet"))
            with machine_errors(directory, written[-1]):
                frame.sink_parquet(written[-1], **OUTPUT_PARQUET)
            inputs.records[name] = pl.scan_parquet(written[-1], glob=False)
        yield inputs
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def distinct(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """`rows` with each `key` once. The extract lands each audit row once (re-read overlaps are dropped, a
    resumed page replaces its own file), so this first counts the distinct keys, one pass over that column
    alone; only a lake that does hold a duplicate pays for dropping it. (A plain `unique(key)` hashes whole
    rows: 12 s and 7 GB for 10M audit rows, against 2 s and 2 GB for the count.)
    The count is of the keys' 64-bit hashes, not of the texts: equal keys have equal hashes, so as many distinct
    hashes as rows proves the keys distinct; a collision can only send a lake without duplicates down the
    slower, still correct, path."""
    counts = rows.select(pl.col(key).hash().n_unique().alias("keys"), pl.len().alias("rows")).collect()
    if counts.item(0, "keys") == counts.item(0, "rows"):
        return rows
    return rows.filter(pl.col(key).is_first_distinct())


def _of(audit: pl.LazyFrame, key: str, objects: pl.LazyFrame | None, how: Among = "semi") -> pl.LazyFrame:
    """Audit rows (or details) of `objects` (with how="anti": of every other record); all when None."""
    if objects is None:
        return audit
    wanted = objects.select(pl.col("object_type").alias("objecttypecode"), pl.col("object_id").alias(key))
    return audit.join(wanted, on=["objecttypecode", key], how=how)


def transform(settings: Settings, *, full: bool = False, cases_per_part: int = CASES_PER_PART) -> BuildResult:
    """`build_outputs`, published, under the data directory's run lock (sql/load.py adds the database)."""
    with RunLock(settings.data_dir), Staging() as staging:
        result = build_outputs(settings, staging, full=full, cases_per_part=cases_per_part)
        publish(result, staging)
    return result


def build_outputs(settings: Settings, staging: Staging, *, full: bool = False,
                  cases_per_part: int = CASES_PER_PART) -> BuildResult:
    """Build (or bring up to date) the outputs, staged in `staging` (`publish` publishes them); the caller holds
    the run lock. `full` ignores the previous build. A full build works through `cases_per_part` cases at a time
    (see CASES_PER_PART)."""
    _remove_temp_files(settings.data_dir)
    return _transform(settings, staging, full, cases_per_part)


def publish(result: BuildResult, staging: Staging) -> None:
    """Publish what the build staged (and the database sql/load.py staged beside it) with the build's state, in
    one burst of renames, the state last; then drop the frames of older generations. Nothing to do when nothing
    changed."""
    state = result.state
    assert state is not None
    if result.mode == "unchanged" and not staging:
        return
    state.save(result.event_log.parent, staging)
    staging.publish()
    state.drop_older_generations(result.event_log.parent)


def _result(data_dir: Path, state: TransformState, out: dict[str, Path], **how: str | int) -> BuildResult:
    return BuildResult(state.events, state.cases, state.orphans, out["event_log"], data_dir / DATABASE, out["cases"],
                       state.frame_path(data_dir, "event_users"),
                       {name: state.frame_path(data_dir, name) for name in state.tables}, dict(state.quality),
                       state=state, **how)  # type: ignore[arg-type]


def trusted_lake(data_dir: Path) -> None:
    """Refuse (ConfigError) a lake that lacks a landed page: one missing or damaged (and the pages the last build
    read with it), or one set aside whose table has not been read again yet. Built from, it gives a smaller log."""
    last = TransformState.load(data_dir)
    lake = Lake(data_dir)
    damaged = lake.damaged(last.pages if last else ()) or lake.waiting()
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise ConfigError(f"{damaged[0]}{more}; an event log built without it would miss its rows, so the "
                          "previous outputs are kept", hint=READ_AGAIN)


def _transform(settings: Settings, staging: Staging, full: bool,
               cases_per_part: int = CASES_PER_PART) -> BuildResult:
    data_dir = settings.data_dir
    out = {"event_log": data_dir / EVENT_LOG, "cases": data_dir / CASES}
    trusted_lake(data_dir)
    tables = load_tables(settings.tables_file)
    stamp = fingerprint(load_activities(settings.activity_map, tables), tables)
    pages = lake_pages(data_dir)
    found = "asked for (--full)" if full else TransformState.read(data_dir)
    previous = found if isinstance(found, TransformState) else None
    reason = found if isinstance(found, str) else _why_full(found, stamp, pages, data_dir)
    generation = next_generation(data_dir)
    users_path = frame_path(data_dir, "event_users", generation)
    new = sorted(set(pages) - set(previous.pages)) if previous is not None and reason is None else None
    if previous is not None and new == []:
        return _result(data_dir, previous, out, mode="unchanged")
    make_dirs(state_dir(data_dir))
    with records_on_disk(read_lake(settings), state_dir(data_dir)) as inputs:
        cases_of = case_map(inputs.records, inputs.deleted_details, inputs.model, inputs.keys).collect()
        if previous is not None and new is not None:
            event_count, case_count, orphans, recomputed = _build_incremental(
                inputs, cases_of, previous, touched_objects(data_dir, new, inputs.keys), out, users_path, staging)
            mode = "incremental"
        else:
            event_count, case_count, orphans = _build_full(inputs, cases_of, out, users_path, cases_per_part,
                                                           staging)
            mode, recomputed = "full", case_count
        log = pl.scan_parquet(staging.at(out["event_log"]), glob=False)
        unique_ids(log)
        issues = quality.quality_issues(log, inputs.records, orphans,
                                        keys=inputs.keys, landed=inputs.landed, audit=inputs.audit,
                                        details=inputs.details, created_activities=inputs.created_activities,
                                        user_local_dates=user_local_dates(StateStore(data_dir).directory),
                                        notes=inputs.notes)
        beside = {**analysis_tables(inputs.records, inputs.model), "quality_issues": issues}
    counts = quality.counts(issues)
    state = TransformState(fingerprint=stamp, pages=pages, generation=generation, events=event_count,
                           cases=case_count, orphans=orphans.height, quality=counts, tables=sorted(beside),
                           outputs={})
    state.write_frames(data_dir, {"case_map": cases_of, "orphans": orphans, **beside}, staging)
    for path in out.values():
        state.record(data_dir, path, file_stamp(staging.at(path)))
    if previous is not None and reason is None and DATABASE in previous.outputs:  # checked above: sql/load.py
        state.outputs[DATABASE] = previous.outputs[DATABASE]  # keeps it if these outputs are what it holds
    return _result(data_dir, state, out, mode=mode, recomputed=recomputed, reason=reason or "")


def _build_full(inputs: LakeInputs, cases_of: pl.DataFrame, out: dict[str, Path], users_path: Path,
                cases_per_part: int, staging: Staging) -> tuple[int, int, pl.DataFrame]:
    """Every case, part by part (`_parts`), streamed to the event log, the cases and the event users (staged):
    (events, cases, orphan events)."""
    orphan_parts = []
    with (OutputParts(out["event_log"], staging=staging) as log_out,
          OutputParts(out["cases"], staging=staging) as cases_out,
          OutputParts(users_path, staging=staging) as users_out):
        for part, how in _parts(cases_of, cases_per_part):
            built = build(inputs.events(part, how), inputs.records, inputs.users(), cases_of.lazy(), inputs.model)
            log_out.write(built.log)
            cases_out.write(built.cases)
            users_out.write(built.users)
            orphan_parts.append(built.orphans)
            del built  # before the next part is computed, not after
    return log_out.rows, cases_out.rows, pl.concat(orphan_parts)


def _build_incremental(inputs: LakeInputs, cases_of: pl.DataFrame, previous: TransformState,
                       touched: pl.DataFrame, out: dict[str, Path], users_path: Path,
                       staging: Staging) -> tuple[int, int, pl.DataFrame, int]:
    """The cases that `touched` records (with new raw rows) touch, recomputed, and every other case's rows
    streamed over from the previous files (staged): (events, cases, orphan events, cases recomputed)."""
    data_dir = out["event_log"].parent
    context = touched.lazy().filter(pl.col("object_type").is_in(attribute_context(inputs.model)))
    cases, objects = touched_cases(touched.lazy(), previous.frame(data_dir, "case_map").lazy(), cases_of.lazy(),
                                   previous.frame(data_dir, "event_users").lazy(),
                                   context_cases(inputs.records, cases_of.lazy(), context, inputs.model, inputs.keys),
                                   inputs.model.model.users)
    built = build(inputs.events(objects.lazy()), inputs.records, inputs.users(), cases_of.lazy(), inputs.model)
    strays = built.log.join(cases, on="case_id", how="anti")
    assert strays.is_empty(), f"recomputed events outside the touched cases: {strays.head(3)}"
    event_count = _sink(replace_cases(pl.scan_parquet(out["event_log"], glob=False), built.log, cases),
                        out["event_log"], staging)
    case_count = _sink(replace_cases(pl.scan_parquet(out["cases"], glob=False), built.cases, cases), out["cases"],
                       staging)
    _sink(replace_cases(pl.scan_parquet(previous.frame_path(data_dir, "event_users"), glob=False), built.users,
                        cases), users_path, staging)
    orphans = replace_objects(previous.frame(data_dir, "orphans"), built.orphans, objects)
    return event_count, case_count, orphans, cases.height


def _parts(cases_of: pl.DataFrame, cases_per_part: int) -> Iterator[tuple[pl.LazyFrame | None, Among]]:
    """The records of each part of a full build, as `LakeInputs.events` takes them: ranges of `cases_per_part`
    case ids in ascending order (so the parts' sorted logs append into one sorted log). The last part is every
    record not in an earlier range: the last range's and those of no case (whose events are orphans). One
    part of everything when there are no more cases than that."""
    ids = cases_of.get_column("case_id").drop_nulls().unique().sort()
    if ids.len() <= cases_per_part:
        yield None, "semi"
        return
    cased = cases_of.lazy().filter(pl.col("case_id").is_not_null())
    starts = range(0, ids.len(), cases_per_part)
    for start in starts[:-1]:
        first, last = ids[start], ids[start + cases_per_part - 1]
        in_range = cased.filter(pl.col("case_id").is_between(pl.lit(first), pl.lit(last)))
        yield in_range.select(OBJECT).collect().lazy(), "semi"
    yield cased.filter(pl.col("case_id") < pl.lit(ids[starts[-1]])).select(OBJECT).collect().lazy(), "anti"


def _sink(plan: pl.LazyFrame, path: Path, staging: Staging) -> int:
    """`plan` streamed to `path` as Parquet (OUTPUT_PARQUET), all or nothing, staged once it reads back with the
    plan's schema; the rows written."""
    schema, rows = plan.collect_schema(), []
    atomic_write(path, lambda handle: plan.sink_parquet(handle, **OUTPUT_PARQUET), staging=staging,
                 verify=lambda temp: rows.append(read_back(temp, schema=schema)))
    return rows[0]


def _why_full(previous: TransformState, stamp: str, pages: dict[str, list[int]], data_dir: Path) -> str | None:
    """Why the previous build cannot be brought up to date incrementally; None when it can."""
    if previous.fingerprint != stamp:
        return "the activity rules, table declarations or transform code changed"
    if any(pages.get(page) != seen for page, seen in previous.pages.items()):
        return "a landed page the previous build read has changed or vanished"
    return previous.damaged(data_dir)


def object_versions(settings: Settings) -> dict[str, Path]:
    """Every version of each OCEL object type's records (transforms/ocel.py `all_versions`), read from the lake
    and written to `state/transform/objects-<type>.parquet` for the OCEL exports, which read outputs, never the
    lake. Under the run lock; the files of types the lake no longer holds are removed."""
    with RunLock(settings.data_dir):
        inputs = read_lake(settings)
        directory = state_dir(settings.data_dir)
        make_dirs(directory)
        names = {table: frame.collect_schema().names() for table, frame in inputs.landed.items()}
        types = object_types(inputs.model, inputs.keys, names)
        written = {table: write_output(frame, directory / f"{OBJECTS}{table}.parquet")
                   for table, frame in all_versions(inputs.landed, inputs.deleted_details, types).items()}
        for stale in set(directory.glob(f"{OBJECTS}*.parquet")) - set(written.values()):
            stale.unlink()
    return written


def _remove_temp_files(data_dir: Path) -> None:
    """What a transform killed mid-write left: output temp files."""
    remove_temp_files(iter([*data_dir.glob(f".*{TEMP_SUFFIX}"), *state_dir(data_dir).glob(f".*{TEMP_SUFFIX}")]))
