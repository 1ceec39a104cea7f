"""Malformed data on demand: the Web API serves a few named records wrong, on their way out.

`SandboxOptions.corrupt` (and `l2c sandbox serve --corrupt KIND`) names kinds of KINDS. Each kind picks its
records deterministically from the org (`targets`: the first COUNT records that fit the kind, audit rows in
version order, others in primary-key order, disjoint from the other kinds' records of the same table), and only
the JSON the Web API sends for them is rewritten: the simulator's frames, the ground truth, stay as they are, and
so do paging, filters and delta tokens, which the store computes from them. A test therefore knows exactly which
records it spoiled and how many.

What a real org would send is partly inferred: it never serves a null or unparseable `createdon` (the platform
sets it), but an export, a proxy or a plug-in can; a choice value without a label is what a record keeps when an
option is deleted from the org ([PD] multi-select-picklist.md: "users can manually delete an option in their
environment"), and then the FormattedValue annotation has nothing to show (inferred: no response found);
an audit `action` outside the documented list ([PD] reference/entities/audit.md) is what a newer platform
release or a custom message writes. `renamed-users` is not malformed: a lookup's FormattedValue is the target's
name when the row is read ([PD] webapi/query/select-columns.md), so a rename relabels rows without new versions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import polars as pl

from sandbox.schema import Table
from sandbox.store import Store

COUNT = 3  # records spoiled per kind and table
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
UNKNOWN_STATE, UNKNOWN_STATUS, UNKNOWN_ACTION = 9, 99, 9999
BAD_TIMESTAMP, BAD_DATE = "not a date", "2025-02-30T25:61:00Z"
UNPARSEABLE_STAGE, UNKNOWN_COLUMN = "Develop?", "new_nosuchcolumn"
RENAMED = " (renamed)"
# Names that break a $filter (or SQL, or CSV) built by string concatenation.
QUOTED_NAMES = ("O'Brien \"&\" Sons", "'; DROP TABLE account; --", "50% off_[sale] \\ 'x'' #1 + ?=&")

KINDS: dict[str, str] = {
    "null-timestamps": f"createdon null on {COUNT} leads and on {COUNT} lead Create audit rows; modifiedon null on "
                       f"{COUNT} opportunities",
    "unparseable": f"createdon {BAD_TIMESTAMP!r} on {COUNT} lead Create audit rows; modifiedon {BAD_DATE!r} on "
                   f"{COUNT} leads",
    "unknown-choice": f"statecode {UNKNOWN_STATE} / statuscode {UNKNOWN_STATUS} without label annotations on {COUNT} "
                      "opportunities",
    "unknown-action": f"action {UNKNOWN_ACTION} without a label on {COUNT} lead Qualify (24) audit rows",
    "duplicate-audit": f"{COUNT} opportunity Create audit rows served twice on their page",
    "shuffled-audit": "every page of audit rows served in reverse order",
    "bad-detail": f"RetrieveAuditDetails of {COUNT} salesstage changes: NewValue salesstage {UNPARSEABLE_STAGE!r}, "
                  f"and a column {UNKNOWN_COLUMN} the org does not have in OldValue and NewValue",
    "broken-detail": f"RetrieveAuditDetails of {COUNT} other salesstage changes: OldValue and NewValue are not "
                     "objects",
    "quoted-names": f"{COUNT} accounts named {', '.join(QUOTED_NAMES)} (in every lookup label too)",
    "other-date-shapes": f"estimatedclosedate (DateOnly) served as a UTC midnight timestamp on {COUNT} opportunities, "
                         f"submitdate (UserLocal) as a bare date on {COUNT} sales orders",
    "renamed-users": f"{COUNT} users renamed: every lookup label that points at them ends in {RENAMED!r}, with no "
                     "new row version (a FormattedValue is computed when the row is read)",
}

# kind -> [(table, which rows of that table qualify, how many qualifying rows to skip)]; audit rows in version
# order, other tables in primary-key order as served.
_Pick = tuple[str, pl.Expr | None, int]
_LEAD_CREATE = (pl.col("objecttypecode") == "lead") & (pl.col("operation") == 1)
_OPPORTUNITY_UPDATE = (pl.col("objecttypecode") == "opportunity") & (pl.col("operation") == 2)
_PICKS: dict[str, list[_Pick]] = {
    "null-timestamps": [("lead", None, 0), ("opportunity", None, 0), ("audit", _LEAD_CREATE, 0)],
    "unparseable": [("lead", None, COUNT), ("audit", _LEAD_CREATE, COUNT)],
    "unknown-choice": [("opportunity", None, COUNT)],
    "unknown-action": [("audit", (pl.col("objecttypecode") == "lead") & (pl.col("action") == 24), 0)],
    "duplicate-audit": [("audit", (pl.col("objecttypecode") == "opportunity") & (pl.col("operation") == 1), 0)],
    "shuffled-audit": [],
    "bad-detail": [("audit", _OPPORTUNITY_UPDATE & pl.col("_new").str.contains('"salesstage"'), 0)],
    # Details the rules read (a salesstage change), so the extract asks for them; not the bad-detail ones.
    "broken-detail": [("audit", _OPPORTUNITY_UPDATE & pl.col("_new").str.contains('"salesstage"'), COUNT)],
    "quoted-names": [("account", None, 0)],
    "other-date-shapes": [("opportunity", pl.col("estimatedclosedate").is_not_null(), 0),
                          ("salesorder", pl.col("submitdate").is_not_null(), 0)],
    # Sales reps who own records (users with a title), not the system or integration users.
    "renamed-users": [("systemuser", pl.col("title").is_not_null(), 0)],
}
assert set(_PICKS) == set(KINDS)
_lock = threading.Lock()


def check(kinds: frozenset[str]) -> None:
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise ValueError(f"unknown corruption kind {', '.join(unknown)}; known: {', '.join(KINDS)}")


def targets(store: Store, kind: str) -> dict[str, list[str]]:
    """The ids (auditids for audit) `kind` spoils in this store's org, per logical table name."""
    cache: dict[str, dict[str, list[str]]] = store.__dict__.setdefault("_corrupt_targets", {})
    with _lock:
        if kind not in cache:
            cache[kind] = _targets(store, kind)
        return cache[kind]


def _targets(store: Store, kind: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for table, where, skip in _PICKS[kind]:
        if table == "audit":
            frame, key = store.org.audits.sort("_version"), "auditid"
        else:
            served = store.tables[table]
            frame, key = served.frame, served.table.primary_id
        if where is not None:
            frame = frame.filter(where)
        out[table] = frame.get_column(key).slice(skip, COUNT).to_list()
    return out


def rows(kinds: frozenset[str], store: Store, table: Table, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page's `value` as the corrupt sandbox serves it (the entities are fresh dicts: edited in place)."""
    if not kinds:
        return value
    name, pk = table.logical_name, table.primary_id
    edits = [(targets(store, kind).get(name, []), _ROW_EDITS[kind]) for kind in sorted(kinds) if kind in _ROW_EDITS]
    doubled = targets(store, "duplicate-audit").get(name, []) if "duplicate-audit" in kinds else []
    out: list[dict[str, Any]] = []
    for entity in value:
        record = entity.get(pk)
        for ids, edit in edits:
            if record in ids:
                edit(name, entity, ids.index(record))
        out.append(entity)
        if record in doubled:
            out.append(dict(entity))
    if "quoted-names" in kinds:  # the renamed accounts' names in every lookup label that points at them
        names = dict(zip(targets(store, "quoted-names")["account"], QUOTED_NAMES, strict=False))
        for entity in out:
            for key in [k for k in entity if k.endswith(FORMATTED) and entity.get(k[:-len(FORMATTED)]) in names]:
                entity[key] = names[entity[key[:-len(FORMATTED)]]]
    if "renamed-users" in kinds:  # labels only: the users' own rows are not served renamed
        renamed = set(targets(store, "renamed-users")["systemuser"])
        for entity in out:
            for key in [k for k in entity if k.endswith(FORMATTED) and entity.get(k[:-len(FORMATTED)]) in renamed]:
                entity[key] = str(entity[key]) + RENAMED
    if "shuffled-audit" in kinds and name == "audit":
        out.reverse()
    return out


def detail(kinds: frozenset[str], store: Store, auditid: str, audit_detail: dict[str, Any]) -> dict[str, Any]:
    """An AuditDetail of RetrieveAuditDetails as the corrupt sandbox serves it."""
    if "bad-detail" in kinds and auditid in targets(store, "bad-detail").get("audit", []):
        audit_detail["NewValue"] = {**audit_detail["NewValue"], "salesstage": UNPARSEABLE_STAGE, UNKNOWN_COLUMN: 42}
        audit_detail["OldValue"] = {**audit_detail["OldValue"], UNKNOWN_COLUMN: None}
    if "broken-detail" in kinds and auditid in targets(store, "broken-detail").get("audit", []):
        audit_detail["OldValue"], audit_detail["NewValue"] = "<not an entity>", 17
    return audit_detail


def _set(entity: dict[str, Any], column: str, value: Any) -> None:
    """Replace a selected column's value; its label, if any, goes (a label for the old value would be a lie)."""
    if column in entity:
        entity[column] = value
        entity.pop(column + FORMATTED, None)


def _null_timestamps(table: str, entity: dict[str, Any], index: int) -> None:
    _set(entity, "modifiedon" if table == "opportunity" else "createdon", None)


def _unparseable(table: str, entity: dict[str, Any], index: int) -> None:
    if table == "audit":
        _set(entity, "createdon", BAD_TIMESTAMP)
    else:
        _set(entity, "modifiedon", BAD_DATE)


def _unknown_choice(table: str, entity: dict[str, Any], index: int) -> None:
    _set(entity, "statecode", UNKNOWN_STATE)
    _set(entity, "statuscode", UNKNOWN_STATUS)


def _unknown_action(table: str, entity: dict[str, Any], index: int) -> None:
    _set(entity, "action", UNKNOWN_ACTION)


def _quoted_name(table: str, entity: dict[str, Any], index: int) -> None:
    _set(entity, "name", QUOTED_NAMES[index % len(QUOTED_NAMES)])


def _other_date_shape(table: str, entity: dict[str, Any], index: int) -> None:
    """A DateOnly value as a timestamp, a UserLocal one as a bare date: what a client whose metadata is stale (a
    behaviour changed since, [PD] behavior-format-date-time-attribute.md) or wrong receives."""
    column = "estimatedclosedate" if table == "opportunity" else "submitdate"
    value = entity.get(column)
    if isinstance(value, str):
        entity[column] = value + "T00:00:00Z" if table == "opportunity" else value[:10]


# Kinds that edit a record's values; duplicate-audit, shuffled-audit (whole entities or pages) and the detail
# kinds are handled by `rows` and `detail` themselves.
_ROW_EDITS: dict[str, Callable[[str, dict[str, Any], int], None]] = {
    "null-timestamps": _null_timestamps, "unparseable": _unparseable, "unknown-choice": _unknown_choice,
    "unknown-action": _unknown_action, "quoted-names": _quoted_name, "other-date-shapes": _other_date_shape,
}
