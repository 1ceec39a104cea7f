"""Activity events from the audit history, by the declarative rules of config/activities.toml.

Pure polars: audit rows (+ the old/new values fetched for some of them) in, one event per (audit row, rule
it satisfies) out, with the audit row's time and acting user (source = "audit"). Rules:
- created / deleted: the audit operation (1 Create, 3 Delete) on the rule's table;
- action: the audit action code (24 Qualify, 44 Win, ...) on the rule's table;
- changed: an Update whose new value of the column equals `to` (and the old one did not), or exceeds
  `above` (and differs from the old one: a second, larger discount is a second event).
"""

from __future__ import annotations

import polars as pl

from config.activities import Rule

OP_CREATE, OP_UPDATE, OP_DELETE = 1, 2, 3

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


def events_from_audit(audit: pl.LazyFrame, details: pl.LazyFrame, rules: list[Rule]) -> pl.LazyFrame:
    """One row per (audit row, matching rule); `details` has auditid, old_values, new_values."""
    # Each watched column's old and new value is read out of the JSON once, not once per rule.
    watched = sorted({rule.column for rule in rules if rule.trigger == "changed" and rule.column is not None})
    values = details.select("auditid", *(_value(side + "_values", column).alias(f"{side}:{column}")
                                         for column in watched for side in ("new", "old")))
    # Materialised once: every rule filters it, and a lazy plan would repeat scan, dedupe and join per rule.
    with_values = audit.join(values, on="auditid", how="left").collect().lazy()
    parts = []
    for rule in rules:
        on_table = pl.col("objecttypecode") == rule.table
        if rule.trigger == "created":
            condition = pl.col("operation") == OP_CREATE
        elif rule.trigger == "deleted":
            condition = pl.col("operation") == OP_DELETE
        elif rule.trigger == "action":
            condition = pl.col("action") == rule.action
        else:
            condition = (pl.col("operation") == OP_UPDATE) & _changed(rule).fill_null(False)
        parts.append(
            with_values.filter(on_table & condition).select(
                pl.lit(rule.table).alias("object_type"),
                pl.col("_objectid_value").alias("object_id"),
                pl.lit(rule.name).alias("activity"),
                pl.col("createdon").alias("timestamp"),
                pl.col("_userid_value").alias("user_id"),
                pl.lit("audit").alias("source"),
                pl.col("auditid").alias("source_id"),
            )
        )
    if not parts:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return pl.concat(parts, how="vertical_relaxed").cast(EVENT_SCHEMA)  # type: ignore[arg-type]
