"""What a Link export holds: its layout (CSV, incremental folders, Delta), its tables' columns, and its metadata.

Discovery follows docs/LINK.md D2: Delta tables are folders with `_delta_log/` under `deltalake/` (Synapse Link,
`<table>_partitioned` with the suffix stripped) or `Tables/` (Fabric); an incremental-folder export has
`Changelog/changelog.info` (D7: a folder is complete iff it is not the current one, older than it, and has a
non-empty `model.json`; names parsed as instants, `.` or `:` in the time, §3); otherwise the root `model.json`
(CDM, §1.2) names the tables, and entities whose `Athena:InitialSyncState` is not `Completed` are skipped (D7).
The choice labels come from the five OptionsetMetadata tables (§4, D8; headerless CSV in the column orders of
§4, or Delta tables) and `<table>-EntityMetadata.json`; the lookup targets from TargetMetadata (§5, D9).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl

from connector import link_csv
from connector.link_storage import Entry, ExportStore
from ground.errors import SourceUnavailable

log = logging.getLogger("l2c.link")

Kind = Literal["csv", "incremental", "delta"]
NOT_TABLES = {"changelog", "microsoft.athena.tricklefeedservice", "optionsetmetadata", "entitysyncfailure",
              "snapshot", "archive"}  # D2: root folders that are no data tables
META_TABLES = ("OptionsetMetadata", "GlobalOptionsetMetadata", "StateMetadata", "StatusMetadata", "TargetMetadata")
# §4: column orders of the headerless metadata CSVs (GlobalOptionsetMetadata may carry an 8th, ExternalValue).
META_COLUMNS = {
    "OptionsetMetadata": ["EntityName", "OptionSetName", "Option", "IsUserLocalizedLabel",
                          "LocalizedLabelLanguageCode", "LocalizedLabel"],
    "GlobalOptionsetMetadata": ["OptionSetName", "Option", "IsUserLocalizedLabel", "LocalizedLabelLanguageCode",
                                "LocalizedLabel", "GlobalOptionSetName", "EntityName", "ExternalValue"],
    "StateMetadata": ["EntityName", "State", "IsUserLocalizedLabel", "LocalizedLabelLanguageCode", "LocalizedLabel"],
    "StatusMetadata": ["EntityName", "State", "Status", "IsUserLocalizedLabel", "LocalizedLabelLanguageCode",
                       "LocalizedLabel"],
    "TargetMetadata": ["EntityName", "AttributeName", "ReferencedEntity", "ReferencedAttribute"],
}
_FOLDER_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})[.:](\d{2})[.:](\d{2})(\.\d+)?Z$")


@dataclass
class Entity:
    name: str  # logical name
    columns: list[tuple[str, str]]  # (name as exported, CDM dataType), file order
    partitions: list[str] = field(default_factory=list)  # paths relative to the root


@dataclass
class Layout:
    kind: Kind
    entities: dict[str, Entity] = field(default_factory=dict)  # CSV: from the (newest) model.json
    delta: dict[str, str] = field(default_factory=dict)  # logical name -> Delta table path
    folders: list[str] = field(default_factory=list)  # incremental: complete folders, oldest first
    meta_prefix: str = ""  # where OptionsetMetadata/ is: the newest complete folder's or the root
    syncing: dict[str, str] = field(default_factory=dict)  # tables whose initial sync is not Completed (D7)
    folder_files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # folder -> table -> its CSVs
    models: dict[str, dict[str, Entity]] = field(default_factory=dict)  # folder -> its model.json (read once)


def folder_time(name: str) -> datetime | None:
    found = _FOLDER_RE.match(name)
    if not found:
        return None
    day, hour, minute, second, fraction = found.groups()
    return datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}{fraction or ''}").replace(tzinfo=UTC)


def discover(store: ExportStore) -> tuple[Layout, dict[str, Entry]]:
    """The export's layout and every file in it (one listing)."""
    entries = {e.path: e for e in store.list()}
    sizes = {path: e.size for path, e in entries.items()}
    delta: dict[str, str] = {}
    for path in sizes:
        parts = path.split("/")
        if len(parts) >= 4 and parts[0].lower() in ("deltalake", "tables") and parts[2] == "_delta_log":
            delta.setdefault(parts[1].removesuffix("_partitioned").lower(), f"{parts[0]}/{parts[1]}")
    if delta:
        return Layout("delta", delta=delta), entries
    if "Changelog/changelog.info" in sizes:
        current = store.read("Changelog/changelog.info").decode("utf-8-sig").strip().splitlines()
        now = folder_time(current[0].strip()) if current else None
        complete = []
        for name in {p.split("/")[0] for p in sizes}:
            when = folder_time(name)
            if when is not None and now is not None and when < now and sizes.get(f"{name}/model.json", 0) > 0:
                complete.append((when, name))
        folders = [name for _, name in sorted(complete)]
        newest = folders[-1] if folders else ""
        model_path = f"{newest}/model.json" if newest else "model.json"
        entities = entities_of(store, model_path, sizes) if model_path in sizes else {}
        index: dict[str, dict[str, list[str]]] = {}
        complete_set = set(folders)
        for path in sorted(sizes):  # one pass: a folder's tables' CSV files (D2 `<TS>/<table>/<yyyy>.csv`)
            parts = path.split("/")
            if len(parts) == 3 and parts[0] in complete_set and parts[2].lower().endswith(".csv"):
                index.setdefault(parts[0], {}).setdefault(parts[1].lower(), []).append(path)
        return Layout("incremental", entities=entities, folders=folders, meta_prefix=f"{newest}/" if newest else "",
                      syncing=syncing(store, model_path, sizes), folder_files=index), entries
    if "model.json" in sizes:
        return Layout("csv", entities=entities_of(store, "model.json", sizes),
                      syncing=syncing(store, "model.json", sizes)), entries
    raise SourceUnavailable(f"not a Synapse Link / Fabric Link export: {store.url} has no model.json and no "
                            "deltalake/ (or Tables/) folder",
                            hint="set L2C_LINK_URL to the export's root (docs/LINK.md §1.1, §6)")


def syncing(store: ExportStore, path: str, sizes: dict[str, int]) -> dict[str, str]:
    """Tables model.json lists whose `Athena:InitialSyncState` is not `Completed` (D7), with that state."""
    return {name: state for name, state in _documents(store, path, sizes)}


def _documents(store: ExportStore, path: str, sizes: dict[str, int]) -> list[tuple[str, str]]:
    if path not in sizes:
        return []
    try:
        raw = json.loads(store.read(path).decode("utf-8-sig"))["entities"]
    except (ValueError, KeyError, TypeError):
        return []
    out = []
    for item in raw:
        annotations = {a.get("name"): a.get("value") for a in item.get("annotations") or []}
        state = annotations.get("Athena:InitialSyncState")
        if state is not None and state != "Completed":
            out.append((str(item.get("name", "")).lower(), str(state)))
    return out


def entities_of(store: ExportStore, path: str, sizes: dict[str, int]) -> dict[str, Entity]:
    try:
        document = json.loads(store.read(path).decode("utf-8-sig"))
        raw = document["entities"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceUnavailable(f"{path} of the Link export {store.url} is not a CDM model.json ({exc})",
                                hint="check that the export is complete (docs/LINK.md §1.2)") from None
    out: dict[str, Entity] = {}
    for item in raw:
        name = str(item.get("name", "")).lower()
        annotations = {a.get("name"): a.get("value") for a in item.get("annotations") or []}
        state = annotations.get("Athena:InitialSyncState")
        if state is not None and state != "Completed":
            log.warning("Link export: table %s skipped, its initial sync is %s (docs/LINK.md D7)", name, state)
            continue
        columns = [(str(a["name"]), str(a.get("dataType", "string"))) for a in item.get("attributes") or []]
        partitions = [_relative(str(p.get("location", "")), store.url) for p in item.get("partitions") or []]
        out[name] = Entity(name, columns, [p for p in partitions if p])
    return out


def _relative(location: str, url: str) -> str:
    """A partition location relative to the root: everything up to and including the container segment is
    stripped (the form is SILENT in the docs, docs/LINK.md §1.2 OUR CHOICE); a bare relative path is kept."""
    if "://" not in location:
        return location.lstrip("/")
    path = location.split("://", 1)[1].split("/", 1)[1] if "/" in location.split("://", 1)[1] else ""
    return path.split("/", 1)[1] if "/" in path else ""


def table_files(layout: Layout, sizes: dict[str, int], table: str, prefix: str = "") -> list[str]:
    """The CSV files of `table` (under an incremental folder `prefix`): model.json's partitions when given, else
    every `*.csv` directly under the table's folder (D2; never a Snapshot/ sub-folder)."""
    entity = layout.entities.get(table)
    if not prefix and entity is not None and entity.partitions:
        return [p for p in entity.partitions if p in sizes]
    base = f"{prefix}{table}/".lower()
    return sorted(p for p in sizes if p.lower().startswith(base) and p.lower().endswith(".csv")
                  and "/" not in p[len(base):])


@dataclass
class Metadata:
    """The labels and lookup targets of the export (empty frames when it has none)."""

    options: pl.DataFrame  # EntityName, OptionSetName, Option, Language, Label (local and global choices)
    states: pl.DataFrame  # EntityName, State, Language, Label
    statuses: pl.DataFrame  # EntityName, Status, Language, Label
    targets: pl.DataFrame  # EntityName, AttributeName, ReferencedEntity
    attribute_types: dict[tuple[str, str], dict[str, Any]]  # (table, column) -> AttributeMetadata entry


def load_metadata(store: ExportStore, layout: Layout, sizes: dict[str, int]) -> Metadata:
    frames: dict[str, pl.DataFrame] = {}
    for name in META_TABLES:
        if layout.kind == "delta" and name.lower() in layout.delta:
            from connector.link_delta import read_table

            frames[name] = read_table(store, layout.delta[name.lower()]).cast(pl.Utf8)
            continue
        for prefix in dict.fromkeys((layout.meta_prefix, "")):
            path = f"{prefix}OptionsetMetadata/{name}.csv"
            if path in sizes:
                frames[name] = link_csv.read_metadata(store.read(path), META_COLUMNS[name], path)
                break
    attribute_types: dict[tuple[str, str], dict[str, Any]] = {}
    extra: dict[str, list[dict[str, Any]]] = {k: [] for k in ("OptionSetMetadata", "GlobalOptionSetMetadata",
                                                               "StateMetadata", "StatusMetadata")}
    for path in sizes:
        if path.startswith("Microsoft.Athena.TrickleFeedService/") and path.endswith("-EntityMetadata.json"):
            try:
                document = json.loads(store.read(path).decode("utf-8-sig"))
            except ValueError:
                log.warning("Link export: %s is not JSON, ignored", path)
                continue
            for attribute in document.get("AttributeMetadata") or []:
                column = (str(attribute.get("EntityName", "")).lower(), str(attribute.get("AttributeName", "")).lower())
                attribute_types[column] = attribute
            for array, rows in extra.items():
                rows += document.get(array) or []
    fallback = {"OptionsetMetadata": "OptionSetMetadata", "GlobalOptionsetMetadata": "GlobalOptionSetMetadata",
                "StateMetadata": "StateMetadata", "StatusMetadata": "StatusMetadata"}
    for name, array in fallback.items():  # D8: the EntityMetadata.json labels after the OptionsetMetadata tables
        if name not in frames and extra[array]:
            frames[name] = pl.DataFrame(extra[array]).cast(pl.Utf8)

    def get(name: str, columns: list[str]) -> pl.DataFrame:
        frame = frames.get(name, pl.DataFrame())
        return frame.select(pl.col(c).cast(pl.Utf8) if c in frame.columns else pl.lit(None, pl.Utf8).alias(c)
                            for c in columns)

    language = pl.col("LocalizedLabelLanguageCode").cast(pl.Int64, strict=False).alias("Language")
    lower = pl.col("EntityName").str.to_lowercase()
    options = pl.concat([get("OptionsetMetadata", META_COLUMNS["OptionsetMetadata"]),
                         get("GlobalOptionsetMetadata", META_COLUMNS["OptionsetMetadata"])])
    return Metadata(
        options=options.select(lower, pl.col("OptionSetName").str.to_lowercase(),
                               pl.col("Option").cast(pl.Int64, strict=False), language,
                               pl.col("LocalizedLabel").alias("Label")),
        states=get("StateMetadata", META_COLUMNS["StateMetadata"]).select(
            lower, pl.col("State").cast(pl.Int64, strict=False), language, pl.col("LocalizedLabel").alias("Label")),
        statuses=get("StatusMetadata", META_COLUMNS["StatusMetadata"]).select(
            lower, pl.col("Status").cast(pl.Int64, strict=False), language, pl.col("LocalizedLabel").alias("Label")),
        targets=get("TargetMetadata", META_COLUMNS["TargetMetadata"]).select(
            lower, pl.col("AttributeName").str.to_lowercase(), pl.col("ReferencedEntity").str.to_lowercase()),
        attribute_types=attribute_types,
    )
