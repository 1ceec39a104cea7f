"""Incremental transform: which cases new raw rows touch, and how their recomputed events replace the old ones.

An event depends on its own record's raw rows (its audit rows and details, its landed versions), on the case
the record belongs to (the case map, i.e. the links between records), on the case's attributes (its case
record's row, and the context records its attribute query reads, e.g. the account that gives its region) and
on the names of the users who acted. So a case is touched when (1) one of its records gained raw rows, (2) a
record moved into or out of it (old versus new case map: this catches links another record changed, e.g. a lead
whose opportunity just appeared, or an invoice whose order moved), (3) a context record one of its records
points at gained rows (`transforms.cases.context_cases`), or (4) a user who acted in it gained rows.
Every event of a touched case is recomputed and replaces the old ones; every other case is kept as it was,
which is what a full rebuild would give because nothing it depends on changed. Pure polars.
"""

from __future__ import annotations

import polars as pl

OBJECT = ["object_type", "object_id"]
OBJECT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {"object_type": pl.Utf8, "object_id": pl.Utf8}


def moved(old_map: pl.LazyFrame, new_map: pl.LazyFrame) -> pl.LazyFrame:
    """Records whose case (or case type) differs between two case maps, appearing or vanishing included."""
    joined = old_map.join(new_map, on=OBJECT, how="full", coalesce=True, suffix="_new")
    differs = (pl.col("case_id").ne_missing(pl.col("case_id_new"))
               | pl.col("case_type").ne_missing(pl.col("case_type_new")))
    return joined.filter(differs).select(OBJECT)


def touched_cases(touched: pl.LazyFrame, old_map: pl.LazyFrame, new_map: pl.LazyFrame, users: pl.LazyFrame,
                  context: pl.LazyFrame, user_table: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(cases to recompute, records to recompute) for `touched` records (object_type, object_id with new raw
    rows). `users` is the previous build's `EventLog.users`; `context` (case_id) the cases whose records point at
    a touched context record (`transforms.cases.context_cases`); `user_table` the table of the users who act.

    The records to recompute are every record of a touched case under the new map, plus the changed records
    that belong to no case (their events are orphans, recomputed too)."""
    changed = pl.concat([touched.select(OBJECT).cast(OBJECT_SCHEMA),  # type: ignore[arg-type]
                         moved(old_map, new_map).cast(OBJECT_SCHEMA)]).unique()  # type: ignore[arg-type]
    acted = touched.filter(pl.col("object_type") == user_table).select(pl.col("object_id"))
    cases = pl.concat([
        changed.join(old_map, on=OBJECT, how="inner").select("case_id"),
        changed.join(new_map, on=OBJECT, how="inner").select("case_id"),
        context.select(pl.col("case_id").cast(pl.Utf8)),
        users.join(acted, left_on="user_id", right_on="object_id", how="semi").select("case_id"),
    ]).drop_nulls().unique().sort("case_id").collect()
    in_cases = new_map.join(cases.lazy(), on="case_id", how="semi").select(OBJECT)
    without_case = changed.join(new_map.filter(pl.col("case_id").is_not_null()), on=OBJECT, how="anti")
    objects = pl.concat([in_cases, without_case]).unique().sort(OBJECT).collect()
    return cases, objects


def replace_cases(old: pl.LazyFrame, new: pl.DataFrame, cases: pl.DataFrame) -> pl.LazyFrame:
    """`old` without the rows of `cases`, plus `new` (the recomputed rows of those cases), as a lazy plan.

    Both are sorted with case_id first (`transforms.eventlog.LOG_ORDER`, or ["case_id", ...]) and a case's
    rows come from one side only, so merging the two on case_id gives the order a full sort would, without
    holding or sorting `old`: the plan can be streamed from one file to another."""
    schema = old.collect_schema()
    kept = old.join(cases.lazy().select("case_id"), on="case_id", how="anti", maintain_order="left")
    return kept.merge_sorted(new.lazy().select(schema.names()).cast(schema), key="case_id",
                             maintain_order=True)


def replace_objects(old: pl.DataFrame, new: pl.DataFrame, objects: pl.DataFrame) -> pl.DataFrame:
    """`old` without the rows of `objects`, plus `new`, in a stable order (for orphan events)."""
    kept = old.join(objects, on=OBJECT, how="anti")
    return pl.concat([kept, new.select(old.columns)], how="vertical_relaxed").sort(
        [*OBJECT, "activity", "source_id"], nulls_last=True)
