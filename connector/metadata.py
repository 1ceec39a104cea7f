"""The org's metadata for the declared tables: entity set, primary key, change tracking, audit, columns.

Read from `EntityDefinitions` and `EntityDefinitions(LogicalName='x')/Attributes` once, then cached in the
state directory for a day so a no-change run costs no metadata requests (read again when the declarations
change, or when the cache is dated in the future: written while this machine's clock was ahead, its age is
unknown). The Attributes collection is typed AttributeMetadata, so only AttributeMetadata's own properties can
be selected there; a derived type's properties (DateTimeAttributeMetadata's Format and DateTimeBehavior) need a
cast segment, `.../Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=...` ([PD]
webapi/query-metadata-web-api.md). Selecting `Format` on the base collection is Dataverse's 400 "Could not find
a property named 'Format' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'." (realdata payload 28). Every
declared table and column is checked here, before any data is read: a name the org does not have is a
ConfigError that names the table, the column, and the file to fix.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.tables import TableConfig, TablesConfig
from connector.odata import Client, literal
from ground.errors import ConfigError
from ground.files import atomic_write

CACHE_FILE = "metadata.json"
CACHE_TTL = timedelta(hours=24)
# Part of the cache's fingerprint: a cache written by an l2c that read metadata differently is fetched again.
CACHE_FORMAT = 2
LOOKUP_TYPES = {"Lookup", "Owner", "Customer"}
# EntityMetadata's properties (Microsoft's metadata reference; sandbox/metadata_types.py cites each page).
ENTITY_FIELDS = "LogicalName,EntitySetName,PrimaryIdAttribute,ObjectTypeCode,ChangeTrackingEnabled,IsAuditEnabled"
# AttributeMetadata's own properties (same reference): all the base collection takes.
ATTRIBUTE_FIELDS = "LogicalName,ColumnNumber,AttributeType"
# Per derived type, the properties l2c reads through its cast ([PD] webapi/query-metadata-web-api.md).
CASTS = {"DateTimeAttributeMetadata": "LogicalName,Format,DateTimeBehavior"}


@dataclass
class TableMeta:
    logical_name: str
    entity_set: str
    primary_id: str
    change_tracking: bool
    audit_enabled: bool
    attributes: list[dict[str, Any]]

    def attribute(self, logical_name: str) -> dict[str, Any] | None:
        return next((a for a in self.attributes if a["LogicalName"] == logical_name), None)

    def api_name(self, logical_name: str) -> str:
        attribute = self.attribute(logical_name)
        is_lookup = attribute is not None and attribute.get("AttributeType") in LOOKUP_TYPES
        return f"_{logical_name}_value" if is_lookup else logical_name

    def column_numbers(self, logical_names: list[str]) -> dict[int, str]:
        """ColumnNumber -> logical name, to read audit attributemask values."""
        out = {}
        for name in logical_names:
            attribute = self.attribute(name)
            if attribute is not None and attribute.get("ColumnNumber") is not None:
                out[int(attribute["ColumnNumber"])] = name
        return out


def _fingerprint(tables: TablesConfig) -> str:
    return hashlib.sha256(f"{CACHE_FORMAT}:{tables.model_dump_json()}".encode()).hexdigest()[:16]


def load(client: Client, tables: TablesConfig, state_dir: Path, *, now: datetime | None = None,
         audit_table: bool = True) -> dict[str, TableMeta]:
    """Metadata of every declared table (and `audit`), validated against the declarations."""
    now = now or datetime.now(UTC)
    cached = _read_cache(state_dir, tables, now)
    fetched = cached is None
    if cached is None:
        cached = _fetch(client, tables, audit_table=audit_table)
    for table in tables.table:
        validate(table, cached[table.name])
    if fetched:  # after the checks: declarations the org refuses leave the data directory as it was
        _write_cache(state_dir, tables, cached, now)
    return cached


def _fetch(client: Client, tables: TablesConfig, *, audit_table: bool) -> dict[str, TableMeta]:
    names = [t.name for t in tables.table] + (["audit"] if audit_table else [])
    condition = " or ".join(f"LogicalName eq {literal(name)}" for name in names)
    reply = client.get(f"EntityDefinitions?$select={ENTITY_FIELDS}&$filter={condition}", kind="metadata")
    found = {row["LogicalName"]: row for row in reply.json.get("value", [])}
    missing = [name for name in names if name not in found and name != "audit"]
    if missing:
        raise ConfigError(f"table {', '.join(missing)} does not exist in this Dataverse environment",
                          hint="check the `name` in config/tables.toml (logical names, e.g. 'lead')")
    present = [name for name in names if name in found]

    def columns(request: tuple[str, str | None]) -> list[dict[str, Any]]:
        name, cast = request
        path = f"EntityDefinitions(LogicalName={literal(name)})/Attributes"
        path += f"/Microsoft.Dynamics.CRM.{cast}?$select={CASTS[cast]}" if cast else f"?$select={ATTRIBUTE_FIELDS}"
        return list(client.get(path, kind="metadata").json.get("value", []))

    # The base collection and each cast, per table, side by side (the client's limiter bounds them): a first
    # run waits for one round trip here instead of one per request.
    requests = [(name, cast) for name in present for cast in (None, *CASTS)]
    with ThreadPoolExecutor(max_workers=min(8, len(requests)), thread_name_prefix="l2c-meta") as pool:
        answers = dict(zip(requests, pool.map(columns, requests), strict=True))
    out = {}
    for name in present:
        row, attributes = found[name], _merged(answers[(name, None)],
                                               [answers[(name, cast)] for cast in CASTS])
        audit = row.get("IsAuditEnabled")
        out[name] = TableMeta(
            logical_name=name,
            entity_set=row["EntitySetName"],
            primary_id=row["PrimaryIdAttribute"],
            change_tracking=bool(row.get("ChangeTrackingEnabled")),
            audit_enabled=bool(audit.get("Value") if isinstance(audit, dict) else audit),
            attributes=[_slim(a) for a in attributes],
        )
    return out


def _merged(base: list[dict[str, Any]], casts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The base collection's attributes, each with the properties its derived type's cast gave for it."""
    extra: dict[str, dict[str, Any]] = {}
    for answer in casts:
        for attribute in answer:
            extra.setdefault(attribute["LogicalName"], {}).update(attribute)
    return [{**attribute, **extra.get(attribute["LogicalName"], {})} for attribute in base]


def _slim(attribute: dict[str, Any]) -> dict[str, Any]:
    behavior = attribute.get("DateTimeBehavior")
    return {
        "LogicalName": attribute["LogicalName"],
        "ColumnNumber": attribute.get("ColumnNumber"),
        "AttributeType": attribute.get("AttributeType"),
        "Format": attribute.get("Format"),
        "DateTimeBehavior": behavior.get("Value") if isinstance(behavior, dict) else behavior,
    }


def validate(table: TableConfig, meta: TableMeta) -> None:
    known = {a["LogicalName"] for a in meta.attributes}
    for field_name in ("columns", "audit_columns"):
        unknown = [c for c in getattr(table, field_name) if c not in known]
        if unknown:
            raise ConfigError(
                f"table {table.name}: column {', '.join(unknown)} does not exist in this Dataverse environment",
                hint=f"fix `{field_name}` of table {table.name} in config/tables.toml (logical names, e.g. 'ownerid')",
            )
    if meta.primary_id not in table.columns:
        raise ConfigError(f"table {table.name}: `columns` must include the primary key {meta.primary_id}",
                          hint="add it in config/tables.toml")


def _read_cache(state_dir: Path, tables: TablesConfig, now: datetime) -> dict[str, TableMeta] | None:
    path = state_dir / CACHE_FILE
    try:
        doc = json.loads(path.read_text())
        fetched = datetime.fromisoformat(doc["fetched_at"])
        # A cache from the future was written while this machine's clock was ahead: its age is unknown, so stale.
        if doc["fingerprint"] != _fingerprint(tables) or not timedelta(0) <= now - fetched <= CACHE_TTL:
            return None
        return {name: TableMeta(**meta) for name, meta in doc["tables"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a missing or unreadable cache is only a cache: fetch again


def _write_cache(state_dir: Path, tables: TablesConfig, metas: dict[str, TableMeta], now: datetime) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # beside the state files (0600)
    doc = {"fingerprint": _fingerprint(tables), "fetched_at": now.isoformat(),
           "tables": {name: asdict(meta) for name, meta in metas.items()}}
    text = json.dumps(doc).encode()
    atomic_write(state_dir / CACHE_FILE, lambda handle: handle.write(text), mode=0o600)


def save(state_dir: Path, tables: TablesConfig, metas: dict[str, TableMeta], *, now: datetime | None = None) -> None:
    """Write the cache from metadata read elsewhere (a Link export's model.json: connector/link.py), so the
    transform types the lake as it would after a Web API run."""
    _write_cache(state_dir, tables, metas, now or datetime.now(UTC))


def primary_ids(state_dir: Path) -> dict[str, str]:
    """Primary key per table from the metadata cache, without a request (empty before the first run)."""
    try:
        tables = json.loads((state_dir / CACHE_FILE).read_text())["tables"]
        return {name: meta["primary_id"] for name, meta in tables.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def cached_attributes(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Per table, its attributes from the metadata cache, however old (empty before the first run): what the
    transform types a table with no landed row by."""
    try:
        tables = json.loads((state_dir / CACHE_FILE).read_text())["tables"]
        return {name: list(meta["attributes"]) for name, meta in tables.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def user_local_dates(state_dir: Path) -> dict[str, tuple[str, ...]]:
    """Per table, from the metadata cache: its DateOnly-format columns whose behaviour is UserLocal (a value is
    the user's local midnight in UTC, so its UTC day can differ from the one entered)."""
    try:
        tables = json.loads((state_dir / CACHE_FILE).read_text())["tables"]
        found = {name: tuple(a["LogicalName"] for a in meta["attributes"]
                             if a.get("Format") == "DateOnly" and a.get("DateTimeBehavior") == "UserLocal")
                 for name, meta in tables.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {name: columns for name, columns in found.items() if columns}


def invalidate(state_dir: Path) -> None:
    (state_dir / CACHE_FILE).unlink(missing_ok=True)
