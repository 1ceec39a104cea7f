"""`l2c doctor` with L2C_SOURCE=link: the export instead of Dataverse, in connector/doctor.py's lines.

Checks, each one line (ok / warn / FAIL, what to do): the configuration; that L2C_LINK_URL opens (a folder, or
Azure storage with its credential) and holds an export, and which layout (docs/LINK.md D2); per declared table
that the export has it and whether its initial sync is complete (D7); the choice metadata tables (D8: without
them labels are the option numbers); and the audit table (§7: with it, events come from the audit history as on
the Web API path; without, from versions, and what that can date, §8). Nothing is read beyond listings and the
model.json / Delta logs.
"""

from __future__ import annotations

from collections.abc import Callable

from config.settings import Settings
from config.tables import load_tables
from connector.doctor import Check
from connector.link import open_store
from connector.link_meta import discover
from ground.errors import L2CError

METADATA = ("optionsetmetadata", "statemetadata", "statusmetadata")
HOW = {"csv": "CSV with model.json", "incremental": "CSV in incremental update folders", "delta": "Delta tables"}


def doctor_link(settings: Settings, emit: Callable[[Check], None] = lambda c: print(c.line(), flush=True)) -> int:
    try:
        tables = load_tables(settings.tables_file)
        emit(Check("ok", f"configuration: {len(tables.table)} tables declared, data in {settings.data_dir}, "
                         f"source {settings.link_url}"))
        assert settings.link_url is not None  # load_settings refuses source=link without it
        store = open_store(settings.link_url, settings)
        layout, entries = discover(store)
    except L2CError as exc:
        emit(Check("FAIL", str(exc)))
        return exc.exit_code
    names = set(layout.delta) | set(layout.entities)
    if layout.kind == "incremental":
        emit(Check("ok", f"export: {HOW[layout.kind]}, {len(layout.folders)} complete folders"))
    else:
        emit(Check("ok", f"export: {HOW[layout.kind]}, {len(names)} tables"))
    failure = 0
    for table in tables.table:
        if table.name in layout.syncing:
            emit(Check("warn", f"{table.name}: initial sync {layout.syncing[table.name]}: skipped until Completed"))
        elif table.name not in names:
            emit(Check("FAIL", f"{table.name}: not in the export",
                       "add the table to the Synapse Link / Fabric Link profile (it needs change tracking), or "
                       "remove it from L2C_TABLES"))
            failure = failure or 2
        else:
            emit(Check("ok", f"{table.name}: exported"))
    if layout.kind == "delta":
        labels = [name for name in METADATA if name in layout.delta]
    else:  # OptionsetMetadata/<Name>.csv at the root or in a folder (D2)
        found = {path.lower().rsplit("/", 2)[-2:][-1].removesuffix(".csv") for path in entries
                 if path.lower().rsplit("/", 2)[-2:][0] == "optionsetmetadata"}
        labels = [name for name in METADATA if name in found]
    if len(labels) < len(METADATA):
        emit(Check("warn", "choice labels: the OptionsetMetadata tables are missing: labels are the option numbers",
                   "they come with every Synapse Link profile (docs/LINK.md §4); check the export is complete"))
    else:
        emit(Check("ok", "choice labels: OptionsetMetadata, StateMetadata and StatusMetadata found"))
    if "audit" in names:
        emit(Check("ok", "audit: the audit table is exported: events come from the audit history, as on the Web "
                         "API path"))
    else:
        emit(Check("warn", "audit: no audit table in the export: events come from consecutive versions "
                           "(link_versions) and record dates, see README 'What each export can date'",
                   "export the Audit table with the Delta option of Synapse Link (docs/LINK.md §7)"))
    return failure
