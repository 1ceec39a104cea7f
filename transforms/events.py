"""Activity events from the audit history, by the declarative rules of config/activities.toml.

Pure polars: audit rows (+ the old/new values fetched for some of them) in, one event per (audit row, rule
it satisfies) out, with the audit row's time and acting user (source = "audit"). Rules:
- created / deleted: the audit operation (1 Create, 3 Delete) on the rule's table;
- action: the audit action code (24 Qualify, 44 Win, ...) on the rule's table;
- changed: an Update whose new value of the column equals `to` (and the old one did not), or exceeds
  `above` (and differs from the old one: a second, larger discount is a second event).
Two rules may share an activity name (e.g. a stage entered by either of two columns): an audit row both satisfy
is one event, as its id (source/audit id/activity) says (`once`).
"""

from __future__ import annotations

import polars as pl

from config.activities import Rule

OP_CREATE, OP_UPDATE, OP_DELETE = 1, 2, 3
SIDES = ("new", "old")

EVENT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "object_type": pl.Utf8,
    "object_id": pl.Utf8,
    "activity": pl.Utf8,
    "timestamp": pl.Datetime("us", "UTC"),
    "user_id": pl.Utf8,
    "source": pl.Utf8,
    "source_id": pl.Utf8,
}


def _value(json_column: str, column: str) -> pl.Expr:
    """A column's value in an OldValue/NewValue JSON object, as text (lookups are stored as _x_value)."""
    plain = pl.col(json_column).str.json_path_match(f"$.{column}")
    lookup = pl.col(json_column).str.json_path_match(f"$._{column}_value")
    return pl.coalesce(plain, lookup)


def _with_values(rows: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`rows` plus `new:<column>` and `old:<column>` (text) for each column, read from new_values/old_values.

    Each JSON text is parsed once for all columns (a struct of the wanted keys, values as text: 1 -> "1",
    true -> "true"), which is several times faster than one JSON-path match per column and side. Details land
    as `json.dumps` of plain values (l2c writes numbers as ints or Decimal text), on which both readings agree;
    when a text is not JSON, or holds an array or object under a wanted key, the whole frame is read path by
    path instead, which gives null for what it cannot read.
    """
    keys = pl.Struct({key: pl.String for column in columns for key in (column, f"_{column}_value")})
    try:
        decoded = rows.with_columns(pl.col(f"{side}_values").str.json_decode(keys).alias(f"_{side}") for side in SIDES)
        return decoded.with_columns(
            pl.coalesce(pl.col(f"_{side}").struct.field(column), pl.col(f"_{side}").struct.field(f"_{column}_value"))
            .alias(f"{side}:{column}") for column in columns for side in SIDES).drop("_new", "_old")
    except pl.exceptions.ComputeError:
        return rows.with_columns(_value(f"{side}_values", column).alias(f"{side}:{column}")
                                 for column in columns for side in SIDES)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _changed(rule: Rule) -> pl.Expr:
    assert rule.column is not None
    new, old = pl.col(f"new:{rule.column}"), pl.col(f"old:{rule.column}")
    if rule.to is not None:
        target = _literal(rule.to)
        return (new == target) & (old.is_null() | (old != target))
    assert rule.above is not None
    new_number, old_number = new.cast(pl.Float64, strict=False), old.cast(pl.Float64, strict=False)
    return (new_number > rule.above) & (old_number.is_null() | (old_number != new_number))


def _events(rows: pl.LazyFrame, activity: pl.Expr) -> pl.LazyFrame:
    return rows.select(
        pl.col("objecttypecode").alias("object_type"),
        pl.col("_objectid_value").alias("object_id"),
        activity.alias("activity"),
        pl.col("createdon").alias("timestamp"),
        pl.col("_userid_value").alias("user_id"),
        pl.lit("audit").alias("source"),
        pl.col("auditid").alias("source_id"),
    )


def once(events: pl.LazyFrame, rules: list[Rule], identity: list[str]) -> pl.LazyFrame:
    """`events`, made by `rules`, with each fact (`identity`: what its event id is made of) once. Only two rules
    of one table sharing an activity name can give one fact twice (an audit row, a version both satisfy), so only
    then is the frame deduplicated; the events of one fact are the same but for the rule that found it."""
    if len({(rule.table, rule.name) for rule in rules}) == len(rules):
        return events
    return events.unique(identity, keep="first", maintain_order=True)


def events_from_audit(audit: pl.LazyFrame, details: pl.LazyFrame, rules: list[Rule]) -> pl.LazyFrame:
    """One row per (audit row, matching rule); `details` has auditid, old_values, new_values.

    Created, deleted and action rules are one hash join each of the audit rows with a small table of
    (table, operation or action code, activity), whatever the number of rules: one pass over the audit rows,
    not one filter per rule. Only the Update rows of the tables that `changed` rules watch meet their details.
    """
    parts = []
    # Each (table, code, activity) once: two rules that differ elsewhere (an action's `snapshot`) are one entry.
    keyed = (("operation", list(dict.fromkeys((r.table, OP_CREATE if r.trigger == "created" else OP_DELETE, r.name)
                                              for r in rules if r.trigger in ("created", "deleted")))),
             ("action", list(dict.fromkeys((r.table, r.action, r.name) for r in rules if r.trigger == "action"))))
    for key, entries in keyed:
        if entries:
            codes = pl.LazyFrame(entries, schema={"objecttypecode": pl.Utf8, key: pl.Int64, "activity": pl.Utf8},
                                 orient="row")
            matched = audit.with_columns(pl.col(key).cast(pl.Int64)).join(codes, on=["objecttypecode", key])
            parts.append(_events(matched, pl.col("activity")))
    changed = [rule for rule in rules if rule.trigger == "changed" and rule.column is not None]
    if changed:
        tables = sorted({rule.table for rule in changed})
        updates = audit.filter((pl.col("operation") == OP_UPDATE) & pl.col("objecttypecode").is_in(tables))
        # Materialised once: every changed rule filters it (an Update without details changes nothing we know).
        texts = updates.join(details.select("auditid", "old_values", "new_values"), on="auditid").collect()
        for table in tables:
            watched = [rule for rule in changed if rule.table == table]
            rows = _with_values(texts.filter(pl.col("objecttypecode") == table),
                                sorted({rule.column for rule in watched if rule.column is not None})).lazy()
            parts.extend(_events(rows.filter(_changed(rule).fill_null(False)), pl.lit(rule.name)) for rule in watched)
    if not parts:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    events = pl.concat(parts, how="vertical_relaxed").cast(EVENT_SCHEMA)  # type: ignore[arg-type]
    return once(events, rules, ["source_id", "activity"])
