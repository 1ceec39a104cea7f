"""`l2c extract` with L2C_SOURCE=link: an Azure Synapse Link / Link to Fabric export into the same raw lake.

Order of a run, as the Web API path's (connector/extract.py): the data directory's lock, the declarations, the
export's layout and metadata (docs/LINK.md D2, D8, D9), the metadata cache the transform types the lake by,
then per declared table what is new since its checkpoint (connector/link_read.py), landed as pages of the Web
API path's columns (connector/link_rows.py) in a stream named `link-<run>`, and only then its checkpoint saved.
A table whose read fails (a damaged file, a value that does not parse) keeps its checkpoint, lands nothing and
fails alone; the others go on. Versions the lake already holds (same id and versionnumber: a retried commit,
docs/LINK.md §1.3 FAQ; a table read again whole) are dropped, deletions already landed too; after a whole read
(rewritten CSV, a Delta version), records the lake holds that the export no longer has are deletions without a
date, as change tracking's. An `audit` table in the export lands as raw/audit and raw/audit_details
(connector/link_audit.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import polars as pl

from config.settings import Settings
from config.tables import TableConfig, TablesConfig, load_tables
from connector import link_read, metadata
from connector.audit import AUDIT, DETAILS, AuditResult
from connector.extract import ExtractResult, fill_manifest
from connector.lake import Lake
from connector.link_audit import SPECS, audit_frames, new_only
from connector.link_meta import Layout, Metadata, discover, load_metadata
from connector.link_rows import PRIMARY_NAME, attributes, cdm_type, land_frames
from connector.link_storage import Entry, ExportStore, LocalStore
from connector.lock import RunLock
from connector.metadata import TableMeta
from connector.rows import ColumnSpec, column_specs
from connector.state import RunManifest, StateStore
from connector.sync import TableResult
from ground import stop
from ground.errors import ConfigError, L2CError, LocalEnvironmentError, SourceUnavailable, local_error
from ground.stop import Interrupted

log = logging.getLogger("l2c.link")
PAGE_ROWS = 100_000  # rows per landed page
AUDIT_BATCH_ROWS = 100_000  # audit rows read, decoded and landed at a time (Delta exports)
REMOTE_SCHEMES = ("abfss", "abfs", "az", "https")  # connector/link_url.py says which forms it takes


def open_store(url: str, settings: Settings) -> ExportStore:
    """The store of the export at `url`: a local folder or file:// URL, else a remote one (connector/link_remote.py,
    imported only then: adlfs and the Azure SDK load in about a second)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        from connector.link_remote import open_remote

        return open_remote(url, settings)
    root = Path(unquote(urlsplit(url).path)) if scheme == "file" else Path(url).expanduser()
    if not root.is_dir():
        raise SourceUnavailable(f"not a Synapse Link / Fabric Link export: {url} is not a folder",
                                hint="set L2C_LINK_URL to the export's root (the folder that holds model.json "
                                     "or deltalake/)")
    return LocalStore(root.resolve(), url)


def extract_link(settings: Settings, *, progress: Any = None,
                 expected: Callable[[], Collection[str]] = tuple) -> ExtractResult:
    tables = load_tables(settings.tables_file)
    assert settings.link_url is not None  # load_settings refuses source=link without it
    with stop.polled(), RunLock(settings.data_dir):
        started = time.perf_counter()
        manifest = RunManifest.start()
        result = ExtractResult(manifest.run_id)
        lake, states = Lake(settings.data_dir), StateStore(settings.data_dir)
        lake.cleanup()
        states.cleanup()
        manifest.save(settings.data_dir)
        interrupted: Interrupted | None = None
        try:
            _damaged(lake, states, tables, expected(), manifest.run_id, result)
            store = open_store(settings.link_url, settings)
            layout, entries = discover(store)
            meta = load_metadata(store, layout, {p: e.size for p, e in entries.items()})
            _Run(settings, tables, store, layout, entries, meta, lake, states, result, progress).go()
        except L2CError as exc:
            result.errors["run"] = exc
        except Interrupted as exc:  # between two tables: what landed is committed, the rest comes next run
            interrupted = exc
        except OSError as exc:
            local = local_error(exc, tree=settings.data_dir)
            if local is None:
                raise
            result.errors["run"] = local
        result.seconds = time.perf_counter() - started
        fill_manifest(manifest, result, interrupted)
        manifest.save(settings.data_dir)
    if interrupted is not None:
        raise interrupted
    return result


def _damaged(lake: Lake, states: StateStore, tables: TablesConfig, expected: Collection[str], run_id: str,
             result: ExtractResult) -> None:
    """Landed pages found missing or damaged: their tables are read again from the export, whole."""
    damaged = lake.damaged(expected, adopt=True)
    declared = {t.name for t in tables.table}
    for table in sorted({d.table for d in damaged} & declared):
        state = states.load(table)
        state.link = None
        states.save(state)
    lake.set_aside(damaged, run_id, read_again=declared)
    result.damaged = [(d, "its table is read again from the Link export in full") for d in damaged]


class _Run:
    def __init__(self, settings: Settings, tables: TablesConfig, store: ExportStore, layout: Layout,
                 entries: dict[str, Entry], meta: Metadata, lake: Lake, states: StateStore, result: ExtractResult,
                 progress: Any) -> None:
        self.settings, self.tables, self.store, self.layout, self.entries = settings, tables, store, layout, entries
        self.meta, self.lake, self.states, self.result, self.progress = meta, lake, states, result, progress
        self.run_id = result.run_id
        self.now = datetime.now(UTC)

    def columns(self, table: str) -> list[tuple[str, str]] | None:
        """(name, CDM dataType) of the export's columns of `table`; None when the export does not have it."""
        if self.layout.kind == "delta":
            path = self.layout.delta.get(table)
            if path is None:
                return None
            from connector.link_delta import schema

            return [(name, cdm_type(dtype)) for name, dtype in schema(self.store, path).items()]
        entity = self.layout.entities.get(table)
        return entity.columns if entity is not None else None

    def go(self) -> None:
        metas: dict[str, TableMeta] = {}
        specs: dict[str, list[ColumnSpec]] = {}
        for cfg in self.tables.table:
            if cfg.name in self.layout.syncing:  # D7: skipped with a warning, not an error
                note = f"not read: its initial sync in the Link export is {self.layout.syncing[cfg.name]}"
                self.result.tables[cfg.name] = TableResult(cfg.name, mode="link", notes=[note])
                continue
            try:
                found = self.columns(cfg.name)
                if found is None:
                    raise ConfigError(f"table {cfg.name} does not exist in the Link export {self.store.url}",
                                      hint="check the `name` in config/tables.toml (logical names, e.g. 'lead'), or "
                                           "add the table to the Link profile")
                metas[cfg.name] = TableMeta(cfg.name, cfg.name, f"{cfg.name}id", False, False,
                                            attributes(cfg.name, found, self.meta))
                specs[cfg.name] = _specs(cfg, metas[cfg.name])
            except L2CError as exc:
                self._fail(cfg.name, exc)
        metadata.save(self.states.directory, self.tables, metas)
        reads: dict[str, link_read.Read] = {}
        for name, table_specs in specs.items():
            stop.check()
            try:
                reads[name] = self.read(name, table_specs)
            except L2CError as exc:
                self._fail(name, exc)
        names = self.names(reads)
        for name, read in reads.items():
            try:
                self.land(name, specs[name], read, names)
            except L2CError as exc:
                self._fail(name, exc)
        if AUDIT in self.layout.entities or AUDIT in self.layout.delta:  # §7: the Link may export the audit table
            types = {(t, a["LogicalName"]): str(a["AttributeType"]) for t, m in metas.items() for a in m.attributes}
            try:
                self.audit(types, names.get("systemuser"))
            except L2CError as exc:
                self._fail(AUDIT, exc)

    def audit(self, types: dict[tuple[str, str], str], users: pl.DataFrame | None) -> None:
        """The export's audit table, landed a batch at a time (millions of rows at 1M leads, each with its
        changedata): each batch's new rows and details are pages of their own, and the checkpoint moves only
        after the last. A run killed between batches reads the version again; the lake keeps each auditid once."""
        old = self.states.load(AUDIT).link
        if self.layout.kind == "delta":
            batches, checkpoint = link_read.read_delta_batches(self.store, self.layout.delta[AUDIT], SPECS, old,
                                                               AUDIT_BATCH_ROWS)
        else:
            read = self.read(AUDIT, SPECS)
            batches, checkpoint = iter([read.records] if read.records.height else []), read.checkpoint
        outcome = AuditResult()
        stream = f"link-{self.run_id}"
        for page, records in enumerate(batches, start=1):
            stop.check()
            rows, details = new_only(self.lake, *audit_frames(records, types, users))
            for table, frame in ((AUDIT, rows), (DETAILS, details)):
                if frame.height:
                    self.lake.write_page(table, stream, page, frame, run_id=self.run_id, extracted_at=self.now)
                    outcome.pages += 1
            outcome.rows, outcome.details = outcome.rows + rows.height, outcome.details + details.height
        state = self.states.load(AUDIT)
        state.link, state.last_error, state.last_success = checkpoint or old, None, self.now
        state.rows_total += outcome.rows
        self.states.save(state)
        self.result.audit = outcome

    def read(self, table: str, specs: list[ColumnSpec]) -> link_read.Read:
        old = self.states.load(table).link
        if self.progress is not None:
            self.progress.start(table)
        if self.layout.kind == "delta":
            return link_read.read_delta(self.store, self.layout.delta[table], specs, old)
        if self.layout.kind == "incremental":
            return link_read.read_incremental(self.store, self.layout, self.entries, table, specs, old)
        return link_read.read_csv(self.store, self.layout, self.entries, table, specs, old)

    def names(self, reads: dict[str, link_read.Read]) -> dict[str, pl.DataFrame]:
        """(id, name) per table with a primary name: the lake's current rows, then this run's newer ones (none
        needed when nothing is new: a run without export changes reads no landed page)."""
        out: dict[str, pl.DataFrame] = {}
        has_audit = AUDIT in self.layout.entities or AUDIT in self.layout.delta  # its users are named too
        if not has_audit and not any(read.records.height for read in reads.values()):
            return out
        for cfg in self.tables.table:
            column = PRIMARY_NAME.get(cfg.name)
            if column is None or column not in cfg.columns:
                continue
            pk = f"{cfg.name}id"
            parts = []
            current = self.lake.current(cfg.name, pk)
            if column in current.columns:
                parts.append(current.select(pl.col(pk).alias("id"), pl.col(column).cast(pl.Utf8).alias("name")))
            records = reads[cfg.name].records if cfg.name in reads else pl.DataFrame()
            if records.height and column in records.columns:
                order = [c for c in ("sinkmodifiedon", "versionnumber") if c in records.columns]
                parts.append(records.sort(order, nulls_last=True).select(
                    pl.col("id").str.to_lowercase(), pl.col(column).cast(pl.Utf8).alias("name")))
            if parts:
                out[cfg.name] = pl.concat(parts).unique("id", keep="last", maintain_order=True)
        return out

    def land(self, table: str, specs: list[ColumnSpec], read: link_read.Read,
             names: dict[str, pl.DataFrame]) -> None:
        pk = f"{table}id"
        outcome = TableResult(table, mode="link", notes=list(read.notes))
        stream = f"link-{self.run_id}"
        page = 0
        if read.records.height:
            records = read.records
            if pk not in records.columns:
                records = records.with_columns(pl.col("id").alias(pk))
            rows, deletions = land_frames(records, specs, table, self.meta, self.settings.link_language, names)
            if rows.height:
                known = self.lake.versions(table, pk, rows.get_column(pk).unique())
                rows = rows.join(known, on=[pk, "_version"], how="anti")
            deletions = self._new_deletions(table, pk, deletions)
            for start in range(0, rows.height, PAGE_ROWS):
                page += 1
                self.lake.write_page(table, stream, page, rows.slice(start, PAGE_ROWS), run_id=self.run_id,
                                     extracted_at=self.now)
            if deletions.height:
                page += 1
                self.lake.write_page(table, stream, page, deletions, run_id=self.run_id, extracted_at=self.now,
                                     kind="deletions")
            outcome.rows, outcome.deletions = rows.height, deletions.height
            if read.full:
                gone = self._reconcile(table, pk, records, stream, page + 1)
                page += 1 if gone else 0
                outcome.deletions += gone
        outcome.pages = page
        state = self.states.load(table)
        state.link, state.last_error, state.last_success = read.checkpoint, None, self.now
        state.rows_total += outcome.rows
        self.states.save(state)  # only now: the pages it covers are durable
        self.result.tables[table] = outcome
        if self.progress is not None:
            self.progress.done(table, outcome)

    def _new_deletions(self, table: str, pk: str, deletions: pl.DataFrame) -> pl.DataFrame:
        if not deletions.height or not self.lake.has_rows(table):
            return deletions
        landed = (self.lake.scan(table).filter(pl.col("_op") == "delete").select(pk, "_deleted_at").unique()
                  .collect())
        return deletions.join(landed, on=[pk, "_deleted_at"], how="anti", nulls_equal=True)

    def _reconcile(self, table: str, pk: str, records: pl.DataFrame, stream: str, page: int) -> int:
        """After a whole read: ids the lake holds as current that the export no longer has were deleted, at a
        time nobody knows (in-place CSV drops deleted rows, docs/LINK.md D6; a Delta row may be hard-deleted)."""
        present = records.select(pl.col("id").str.to_lowercase().alias(pk)).unique()
        gone = self.lake.current(table, pk).select(pk).join(present, on=pk, how="anti")
        if gone.height:
            self.lake.write_page(table, stream, page, gone, run_id=self.run_id, extracted_at=self.now,
                                 kind="deletions")
        return gone.height

    def _fail(self, table: str, error: L2CError) -> None:
        self.result.errors[table] = error
        log.warning("%s: %s", table, error)
        try:
            state = self.states.load(table)
            state.last_error = str(error)
            self.states.save(state)
        except (OSError, LocalEnvironmentError, L2CError):
            log.debug("%s: last error not saved in its state", table)
        if self.progress is not None:
            self.progress.fail(table, error)


def _specs(cfg: TableConfig, meta: TableMeta) -> list[ColumnSpec]:
    known = {a["LogicalName"] for a in meta.attributes}
    missing = [c for c in cfg.columns if c not in known]
    if missing:
        raise ConfigError(f"table {cfg.name}: column {', '.join(missing)} does not exist in the Link export",
                          hint=f"fix `columns` of table {cfg.name} in config/tables.toml, or add the column to the "
                               "Link profile")
    return column_specs(meta.attributes, [meta.api_name(c) for c in cfg.columns], table=cfg.name)
