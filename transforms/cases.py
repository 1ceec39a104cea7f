"""Which case each record belongs to, and the case's attributes, as the object model declares them.

The object model (config/tables.toml, `config.tables`) names the case table (its records are the cases) and, for
every member table, the ways a record finds its case (`case_via`), tried in order: its lookup to a case record,
its lookup to another member record whose case it takes, or the first record of another table (by a column,
then its key) whose lookup points at it. A member that reaches no case is a case of its own when the model says
so (`own_case`, e.g. a lead never qualified); otherwise it belongs to no case. Lookups come from the newest
version of each record ever landed and, for a record deleted before any run saw it, from the old values of its
audit Delete row. The case attributes are the model's SQL queries (polars SQL) over the newest records. Pure
polars; `keys` names each table's primary key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

import polars as pl

from config.tables import TableConfig, TablesConfig, Via
from ground.errors import ConfigError

OBJECT = ["object_type", "object_id"]
CASE_SCHEMA = {"object_type": pl.Utf8, "object_id": pl.Utf8, "case_id": pl.Utf8, "case_type": pl.Utf8}
# The case columns of the event log (CONTRACT.md) and their types, besides case_id and case_type.
ATTRIBUTES: dict[str, pl.DataType | type[pl.DataType]] = {
    "owner": pl.Utf8, "outcome": pl.Utf8, "amount": pl.Decimal(38, 4), "currency": pl.Utf8, "stage": pl.Utf8,
    "account": pl.Utf8, "lead_source": pl.Utf8, "region": pl.Utf8}


def lookup_column(names: list[str], logical: str) -> str:
    """A declared column's name in the lake: `_<name>_value` for a lookup, else as is."""
    return f"_{logical}_value" if f"_{logical}_value" in names else logical


def _lookups(model: TablesConfig) -> list[str]:
    """The lake names of every lookup a case_via step follows from the record itself."""
    return sorted({f"_{via.lookup}_value" for t in model.modelled for via in t.case_via if via.from_ is None})


def _case_records(records: Mapping[str, pl.LazyFrame], model: TablesConfig
                  ) -> Iterator[tuple[TableConfig, pl.LazyFrame, list[str]]]:
    """(table, its records, their columns) of every modelled table whose records belong to cases (not context)."""
    for table in model.modelled:
        frame = records.get(table.name)
        if frame is not None and table.role != "context":
            yield table, frame, frame.collect_schema().names()


def links(records: Mapping[str, pl.LazyFrame], deleted_details: pl.LazyFrame, model: TablesConfig,
          keys: Mapping[str, str]) -> pl.LazyFrame:
    """object -> the value of each lookup a case_via step follows, from the rows, completed by Delete details."""
    columns = _lookups(model)
    schema = {"object_type": pl.Utf8, "object_id": pl.Utf8, **dict.fromkeys(columns, pl.Utf8)}
    parts = []
    for table, frame, names in _case_records(records, model):
        parts.append(frame.select(
            pl.lit(table.name).alias("object_type"), pl.col(keys[table.name]).alias("object_id"),
            *((pl.col(c) if c in names else pl.lit(None, pl.Utf8)).alias(c) for c in columns)))
    from_rows = pl.concat(parts, how="vertical_relaxed") if parts else pl.LazyFrame(schema=schema)
    old = pl.col("old_values")
    members = [t.name for t in model.modelled if t.role != "context"]
    from_deletes = deleted_details.filter(pl.col("objecttypecode").is_in(members)).select(
        pl.col("objecttypecode").alias("object_type"), pl.col("objectid").alias("object_id"),
        *(old.str.json_path_match(f"$.{c}").alias(c) for c in columns))
    # Rows win over audit details where both know a record.
    return pl.concat([from_rows.cast(schema), from_deletes.cast(schema)],  # type: ignore[arg-type]
                     how="vertical").unique(OBJECT, keep="first", maintain_order=True)


def case_map(records: Mapping[str, pl.LazyFrame], deleted_details: pl.LazyFrame, model: TablesConfig,
             keys: Mapping[str, str]) -> pl.LazyFrame:
    """Every record of the case and member tables -> its (case_id, case_type); both null for a record that reaches
    no case."""
    case_table = model.model.table
    link = links(records, deleted_details, model, keys)
    resolved: dict[str, pl.LazyFrame] = {}  # table -> (object_id, case_id) found through its case_via

    def case_of(table: TableConfig) -> pl.LazyFrame:
        """(object_id, case_id) of the table's records, case_id null when no step reaches one."""
        if table.name in resolved:
            return resolved[table.name]
        rows = link.filter(pl.col("object_type") == table.name)
        if table.name == case_table:
            found = rows.select("object_id", pl.col("object_id").alias("case_id"))
        else:
            steps = [_step(rows, via, model, keys, records, case_of) for via in table.case_via]
            found = rows.select("object_id")
            for i, step in enumerate(steps):
                found = found.join(step.rename({"case_id": f"_c{i}"}), on="object_id", how="left")
            found = found.select("object_id", pl.coalesce([pl.col(f"_c{i}") for i in range(len(steps))] or
                                                          [pl.lit(None, pl.Utf8)]).alias("case_id"))
        resolved[table.name] = found
        return found

    parts = []
    for table in model.modelled:
        if table.role == "context":
            continue
        found = case_of(table)
        alone = pl.col("case_id").is_null() & pl.lit(table.own_case)
        parts.append(found.select(
            pl.lit(table.name).alias("object_type"), "object_id",
            pl.when(alone).then(pl.col("object_id")).otherwise(pl.col("case_id")).alias("case_id"),
            pl.when(alone).then(pl.lit(table.name)).when(pl.col("case_id").is_not_null()).then(pl.lit(case_table))
            .otherwise(pl.lit(None, pl.Utf8)).alias("case_type")))
    # In the order of `links` (rows before deleted-only records), as the maps are compared and joined by key.
    order = link.select(OBJECT).with_row_index("_order")
    return (pl.concat(parts, how="vertical_relaxed").cast(CASE_SCHEMA)  # type: ignore[arg-type]
            .join(order, on=OBJECT, how="left").sort("_order").drop("_order"))


Resolver = Callable[[TableConfig], pl.LazyFrame]  # a table -> (object_id, case_id) of its records


def _step(rows: pl.LazyFrame, via: Via, model: TablesConfig, keys: Mapping[str, str],
          records: Mapping[str, pl.LazyFrame], resolve: Resolver) -> pl.LazyFrame:
    """(object_id, case_id) that one case_via step gives the records `rows` (of one table); `resolve` gives
    another table's cases (recursively, through member tables)."""
    case_table = model.model.table
    if via.from_ is None:
        value = pl.col(f"_{via.lookup}_value")
        target = via.table or case_table
        if target == case_table:  # the lookup names the case itself
            return rows.select("object_id", value.alias("case_id"))
        other = resolve(_table(model, target))
        return rows.select("object_id", value.alias("_target")).join(
            other.rename({"object_id": "_target"}), on="_target", how="left").select("object_id", "case_id")
    source = records.get(via.from_)
    if source is None:
        return rows.select("object_id", pl.lit(None, pl.Utf8).alias("case_id"))
    pk, names = keys[via.from_], source.collect_schema().names()
    column = lookup_column(names, via.lookup)
    order = [via.first, pk] if via.first else [pk]
    first = (source.filter(pl.col(column).is_not_null()).sort(order)
             .unique(column, keep="first", maintain_order=True)
             .select(pl.col(column).alias("object_id"), pl.col(pk).alias("_source")))
    other = resolve(_table(model, via.from_))
    return first.join(other.rename({"object_id": "_source"}), on="_source", how="left").select("object_id", "case_id")


def _table(model: TablesConfig, name: str) -> TableConfig:
    found = model.by_name(name)
    assert found is not None, f"the model was validated: {name} is declared"
    return found


def attributes(cases: pl.LazyFrame, records: Mapping[str, pl.LazyFrame], model: TablesConfig) -> pl.LazyFrame:
    """One row per case of `cases` (case_id, case_type): the event log's case columns, by the model's queries."""
    context = pl.SQLContext(frames=dict(records), eager=False)
    parts = []
    for case_type, query in model.model.attributes.items():
        try:
            found = context.execute(query, eager=False)
            names = found.collect_schema().names()
        except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError, pl.exceptions.ColumnNotFoundError,
                pl.exceptions.InvalidOperationError) as exc:
            raise ConfigError(f"case.attributes.{case_type}: {str(exc).splitlines()[0]}",
                              hint="fix the query in the table declarations (L2C_TABLES names the file)") from None
        parts.append(found.select(
            pl.col("case_id").cast(pl.Utf8), pl.lit(case_type).alias("case_type"),
            *((pl.col(c) if c in names else pl.lit(None)).cast(dtype).alias(c) for c, dtype in ATTRIBUTES.items())))
    wanted = cases.select("case_id", "case_type").unique()
    return wanted.join(pl.concat(parts, how="vertical_relaxed"), on=["case_id", "case_type"], how="left")


def attribute_context(model: TablesConfig) -> list[str]:
    """The context tables the case attribute queries read (named in them): a change to one of their records can
    change the attributes of the cases that point at it."""
    text = " ".join(model.model.attributes.values())
    return [t.name for t in model.modelled if t.role == "context" and re.search(rf"\b{t.name}\b", text)]


def context_cases(records: Mapping[str, pl.LazyFrame], cases_of: pl.LazyFrame, ids: pl.LazyFrame,
                  model: TablesConfig, keys: Mapping[str, str]) -> pl.LazyFrame:
    """(case_id) of every case one of whose records has a lookup to one of `ids` (object_id of changed records
    of the `attribute_context` tables, e.g. an account that gives a case its region): such a case may read it."""
    wanted = ids.select(pl.col("object_id").alias("_id")).unique()
    parts = []
    for table, frame, names in _case_records(records, model):
        lookups = [c for c in names if c.startswith("_") and c.endswith("_value")]
        if not lookups:
            continue
        hits = (frame.select(pl.col(keys[table.name]).alias("object_id"), pl.concat_list(lookups).alias("_id"))
                .explode("_id").join(wanted, on="_id", how="semi").select("object_id").unique())
        parts.append(hits.with_columns(pl.lit(table.name).alias("object_type")))
    if not parts:
        return pl.LazyFrame(schema={"case_id": pl.Utf8})
    return pl.concat(parts, how="diagonal").join(cases_of, on=OBJECT, how="inner").select("case_id")
