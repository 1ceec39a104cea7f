"""Object-centric lead-to-cash (OCEL 2.0, https://www.ocel-standard.org/specification/, arXiv:2403.01975): the
event log and the lake's records -> events, objects, their attribute values over time and the qualified
event-to-object (E2O) and object-to-object (O2O) relations, in the spec's relational shape. The object types are
the tables of the object model (config/tables.toml: each table's `ocel` attributes, read from its columns, and
relations, from its lookups), plus any other table a custom rule puts in the log. An object is every landed
record, every record whose deletion the audit kept although no run landed it (its Delete old values stand in for a
row), and every object the log names: an event's own record, a case's own record, the user who acted (the log is
evidence they existed, so those without a row become objects without attributes). Attribute values change over
time (the metamodel's object attribute values carry a time): each record's first landed value holds from time 0
(the spec's examples use the UNIX epoch for a value known from the start), and every later landed version whose
value differs from the one before adds a change at that version's modifiedon; a value repeated across versions adds
nothing, a cleared value is kept as the last one seen. E2O qualifiers: "subject" (the record the event happened
to), "case" (the case's record, for events on its other records), "performed by" (the user behind the event's
resource). O2O qualifiers are the model's relations. Every relation points at an existing object: an O2O lookup to
a record that is neither landed nor in the log, or is not of the relation's type (a customer that is a contact, an
owner that is a team), is dropped. Pure polars: frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from config.tables import Relation, TablesConfig
from transforms.cases import lookup_column

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME = pl.Datetime("us", "UTC")
ID = ["ocel_id", "ocel_type"]
VALUE_KEYS = ["ocel_id", "ocel_time", "ocel_changed_field"]
E2O_COLUMNS = ["ocel_event_id", "ocel_object_id", "ocel_qualifier"]
O2O_COLUMNS = ["ocel_source_id", "ocel_target_id", "ocel_qualifier"]
EVENT_ATTRIBUTES = {"resource": "resource", "source": "source"}  # OCEL event attribute -> event_log column
SUBJECT, CASE, PERFORMED_BY = "subject", "case", "performed by"


@dataclass(frozen=True)
class ObjectType:
    """An OCEL object type as the object model declares it, in the lake's column names."""

    name: str  # the table
    key: str  # its primary key
    attributes: dict[str, str]  # OCEL attribute -> lake column (`x__label` for a label)
    relations: tuple[tuple[str, Relation], ...]  # (lake column of the lookup, the relation)


def object_types(model: TablesConfig, keys: Mapping[str, str],
                 names: Mapping[str, list[str]]) -> dict[str, ObjectType]:
    """Every table of the object model as an OCEL object type; `names` are each table's lake columns (a lookup
    x is `_x_value` there, a label adds `__label`)."""
    out = {}
    for table in model.modelled:
        have = names.get(table.name, [])

        def column(reference: str, have: list[str] = have) -> str:
            logical, _, label = reference.partition(".")
            return lookup_column(have, logical) + ("__label" if label == "label" else "")

        out[table.name] = ObjectType(table.name, keys[table.name],
                                     {name: column(ref) for name, ref in table.ocel.attributes.items()},
                                     tuple((column(r.lookup), r) for r in table.ocel.relations))
    return out


@dataclass(frozen=True)
class Ocel:
    """The tables of the spec's relational format (ocel-standard.org/specification/formats/sqlite), format-neutral:
    native dtypes, times in UTC."""

    events: pl.DataFrame  # ocel_id, ocel_type (the activity), ocel_time, then EVENT_ATTRIBUTES
    objects: pl.DataFrame  # ocel_id, ocel_type
    values: dict[str, pl.DataFrame]  # per object type: ocel_id, ocel_time, ocel_changed_field, its attributes
    event_object: pl.DataFrame  # ocel_event_id, ocel_object_id, ocel_qualifier
    object_object: pl.DataFrame  # ocel_source_id, ocel_target_id, ocel_qualifier

    def event_attributes(self) -> dict[str, str]:
        return attribute_types(self.events.drop(ID, "ocel_time"))

    def object_attributes(self, kind: str) -> dict[str, str]:
        return attribute_types(self.values[kind].drop(VALUE_KEYS))


def attribute_types(frame: pl.DataFrame) -> dict[str, str]:
    """The OCEL attribute type of each column: string, time, integer, float or boolean (the formats' five)."""
    def kind(dtype: pl.DataType) -> str:
        if dtype.is_temporal():
            return "time"
        if dtype.is_integer():
            return "integer"
        if dtype.is_float() or dtype.is_decimal():
            return "float"
        return "boolean" if dtype == pl.Boolean else "string"

    return {name: kind(dtype) for name, dtype in frame.schema.items()}


def attribute_values(rows: pl.LazyFrame, key: str, attributes: dict[str, str]) -> pl.LazyFrame:
    """object_<Type> rows from every landed version of a table (`key`, `_version`, `modifiedon`, the columns of
    `attributes`): per record one row at time 0 with `ocel_changed_field` null and each attribute's value in the
    first version, then one row per later change of one attribute, at the version's modifiedon."""
    names = list(attributes)
    ordered = (rows.select(pl.col(key).alias("ocel_id"), pl.col("_version").cast(pl.Int64),
                               pl.col("modifiedon").cast(TIME), *(pl.col(c).alias(n) for n, c in attributes.items()))
               .sort("ocel_id", "_version", "modifiedon", nulls_last=False)
               .unique(["ocel_id", "_version", "modifiedon"], keep="last", maintain_order=True)
               .with_columns(pl.col("ocel_id").is_first_distinct().alias("_first")))
    initial = ordered.filter("_first").select(
        "ocel_id", pl.lit(EPOCH, TIME).alias("ocel_time"), pl.lit(None, pl.Utf8).alias("ocel_changed_field"), *names)
    # Only records with several versions can change; most have one, and the windows below cost per row.
    several = ordered.filter(pl.len().over("ocel_id") > 1)
    changes = []
    for name in names:
        # The last value seen before this version: a cleared value (null) is no change, so A, null, A is one value.
        before = pl.col(name).shift(1).forward_fill().over("ocel_id")
        differs = pl.col(name).is_not_null() & (before.is_null() | (pl.col(name) != before))
        changes.append(several.filter(differs & ~pl.col("_first") & pl.col("modifiedon").is_not_null()).select(
            "ocel_id", pl.col("modifiedon").alias("ocel_time"), pl.lit(name).alias("ocel_changed_field"), name))
    return pl.concat([initial, *changes], how="diagonal").select(*VALUE_KEYS, *names)


def unlanded(deleted: pl.LazyFrame, table: str, key: str, landed: pl.LazyFrame) -> pl.LazyFrame:
    """Records of `table` whose audit Delete row is all a run saw, as rows of `landed`'s columns read from the
    Delete's old values; a label (`x__label`) they never hold is taken from a landed row with the same `x`."""
    schema = landed.collect_schema()
    old = pl.col("old_values")

    def parse(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
        if isinstance(dtype, pl.Datetime):
            return raw.str.to_datetime(time_unit=dtype.time_unit, time_zone=dtype.time_zone or "UTC", strict=False)
        if dtype == pl.Date:
            return raw.str.to_date(strict=False)
        return raw == "true" if dtype == pl.Boolean else raw.cast(dtype, strict=False)

    plain = [c for c in schema if c not in (key, "_version", "modifiedon") and not c.endswith("__label")]
    rows = (deleted.filter(pl.col("objecttypecode") == table).unique("objectid", keep="first", maintain_order=True)
            .join(landed.select(key), left_on="objectid", right_on=key, how="anti")
            .select(pl.col("objectid").alias(key),
                    *(parse(old.str.json_path_match(f"$.{c}"), schema[c]).alias(c) for c in plain)))
    for label in (c for c in schema if c.endswith("__label") and c.removesuffix("__label") in plain):
        base = label.removesuffix("__label")
        names = landed.select(base, label).drop_nulls().unique(base, keep="first")
        rows = rows.join(names, on=base, how="left")
    return rows


def versions(landed: pl.LazyFrame, deleted: pl.LazyFrame, spec: ObjectType) -> pl.DataFrame:
    """Every version of a table's records (the unlanded deleted records included, one version each) in the
    columns the OCEL tables read, named for them: `ocel_id`, `_version`, `modifiedon`, each attribute whose column
    this lake has, and `_rel<i>` for the lookup of the type's i-th relation. Read once: scanning the lake again
    for every table built from it costs more."""
    used = [*spec.attributes.values(), *(column for column, _ in spec.relations)]
    wanted = [spec.key, "_version", "modifiedon", *used, *(c.removesuffix("__label") for c in used)]
    have = landed.collect_schema().names()
    landed = landed.select(c for c in dict.fromkeys(wanted) if c in have).with_columns(
        pl.lit(None, dtype).alias(c) for c, dtype in (("_version", pl.Int64), ("modifiedon", TIME)) if c not in have)
    rows = pl.concat([landed, unlanded(deleted, spec.name, spec.key, landed)], how="diagonal_relaxed")
    names = rows.collect_schema().names()
    return rows.select(
        pl.col(spec.key).alias("ocel_id"), "_version", "modifiedon",
        *(pl.col(column).alias(name) for name, column in spec.attributes.items() if column in names),
        *(pl.col(column).alias(f"_rel{i}") for i, (column, _) in enumerate(spec.relations) if column in names),
    ).collect()


def all_versions(landed: Mapping[str, pl.LazyFrame], deleted: pl.LazyFrame,
                 types: Mapping[str, ObjectType]) -> dict[str, pl.DataFrame]:
    """`versions` of every object type the lake holds: what `build` reads besides the log."""
    return {name: versions(frame, deleted, spec) for name, spec in types.items()
            if (frame := landed.get(name)) is not None}


def _newest(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.sort("_version", "modifiedon", nulls_last=False).unique("ocel_id", keep="last")


def object_links(newest: Mapping[str, pl.LazyFrame], model: TablesConfig) -> pl.LazyFrame:
    """Qualified O2O relations from the lookups of each record's newest version (`_rel<i>`), with the type each
    lookup points at (`target_type`: a polymorphic lookup, e.g. a customer, may point elsewhere). A relation
    whose lookup is empty and that the model fills `else_through` another relation takes the target of that
    relation's target's own relation to the same type (an invoice without an opportunity: its order's)."""
    parts, fills = [], []
    for table in model.modelled:
        frame = newest.get(table.name)
        if frame is None:
            continue
        names = frame.collect_schema().names()
        for i, relation in enumerate(table.ocel.relations):
            if f"_rel{i}" not in names:
                continue
            parts.append(frame.select(pl.lit(table.name).alias("source_type"),
                                      pl.col("ocel_id").alias("ocel_source_id"),
                                      pl.col(f"_rel{i}").alias("ocel_target_id"),
                                      pl.lit(relation.qualifier).alias("ocel_qualifier"),
                                      pl.lit(relation.target).alias("target_type")))
            if relation.else_through is not None:
                fills.append((table.name, relation))
    schema = dict.fromkeys(["source_type", *O2O_COLUMNS, "target_type"], pl.Utf8)
    links = (pl.concat(parts) if parts else pl.LazyFrame(schema=schema)).filter(pl.col("ocel_target_id").is_not_null())
    filled = []
    for source, relation in fills:
        own = links.filter((pl.col("source_type") == source) & (pl.col("ocel_qualifier") == relation.qualifier))
        through = links.filter((pl.col("source_type") == source) & (pl.col("ocel_qualifier") == relation.else_through))
        onward = links.filter(pl.col("target_type") == relation.target)
        filled.append(through.join(onward, left_on="ocel_target_id", right_on="ocel_source_id", suffix="_onward")
                      .join(own, on="ocel_source_id", how="anti")
                      .select(pl.lit(source).alias("source_type"), "ocel_source_id",
                              pl.col("ocel_target_id_onward").alias("ocel_target_id"),
                              pl.lit(relation.qualifier).alias("ocel_qualifier"),
                              pl.col("target_type_onward").alias("target_type")))
    return pl.concat([links, *filled]).drop("source_type")


def event_links(log: pl.LazyFrame, users: pl.LazyFrame, case_table: str) -> pl.LazyFrame:
    """E2O relations: the event's own record, the record its case is (for events on the case's other records),
    the user who did it."""
    def relation(frame: pl.LazyFrame, target: str, qualifier: str) -> pl.LazyFrame:
        return frame.select(pl.col("event_id").alias("ocel_event_id"), pl.col(target).alias("ocel_object_id"),
                            pl.lit(qualifier).alias("ocel_qualifier"))

    case_of_other = (pl.col("case_type") == case_table) & (pl.col("case_id") != pl.col("object_id"))
    return pl.concat([relation(log, "object_id", SUBJECT), relation(log.filter(case_of_other), "case_id", CASE),
                      relation(users.join(log, on="event_id", how="semi", maintain_order="left"), "user_id",
                               PERFORMED_BY)])


def build(log: pl.LazyFrame, users: pl.LazyFrame, rows: Mapping[str, pl.LazyFrame], model: TablesConfig) -> Ocel:
    """The OCEL tables of an event log (event_log.parquet), who did each event (`event_id`, `user_id`) and every
    version of each object type's records (`all_versions`), as the object model declares the types."""
    case_table, user_table = model.model.table, model.model.users
    named = pl.concat([
        *(frame.select("ocel_id", pl.lit(table).alias("ocel_type")) for table, frame in rows.items()),
        log.select(pl.col("object_id").alias("ocel_id"), pl.col("object_type").alias("ocel_type")),
        log.filter(pl.col("case_type") == case_table).select(pl.col("case_id").alias("ocel_id"),
                                                               pl.lit(case_table).alias("ocel_type")),
        users.select(pl.col("user_id").alias("ocel_id"), pl.lit(user_table).alias("ocel_type")),
    ], how="vertical_relaxed").filter(pl.col("ocel_id").is_not_null())
    # Ids are GUIDs, unique across tables; should one repeat, the landed record's type wins.
    objects = named.unique("ocel_id", keep="first", maintain_order=True).sort("ocel_type", "ocel_id").collect()

    values: dict[str, pl.DataFrame] = {}
    for kind in objects.get_column("ocel_type").unique().sort():
        ids = objects.lazy().filter(pl.col("ocel_type") == kind).select("ocel_id")
        frame = rows.get(kind)
        if frame is None:
            known = pl.LazyFrame(schema=dict.fromkeys(VALUE_KEYS, pl.Utf8)).cast({"ocel_time": TIME})
        else:
            names = [c for c in frame.collect_schema().names()
                     if c not in ("ocel_id", "_version", "modifiedon") and not c.startswith("_rel")]
            known = attribute_values(frame, "ocel_id", {n: n for n in names}).join(ids, on="ocel_id", how="semi")
        # Objects the log names without a row still need their initial row: readers list objects from it.
        bare = ids.join(known, on="ocel_id", how="anti").select(
            "ocel_id", pl.lit(EPOCH, TIME).alias("ocel_time"), pl.lit(None, pl.Utf8).alias("ocel_changed_field"))
        values[kind] = (pl.concat([known, bare], how="diagonal")
                        .sort("ocel_id", "ocel_time", "ocel_changed_field", nulls_last=False).collect())

    ids = objects.lazy().select("ocel_id")
    events = log.select(pl.col("event_id").alias("ocel_id"), pl.col("activity").alias("ocel_type"),
                        pl.col("timestamp").alias("ocel_time"),
                        *(pl.col(column).alias(name) for name, column in EVENT_ATTRIBUTES.items()))
    # In the log's order, each event's relations in the order of event_links: the same file on every run.
    e2o = (event_links(log, users, case_table)
           .join(ids, left_on="ocel_object_id", right_on="ocel_id", how="semi", maintain_order="left")
           .unique(maintain_order=True))
    newest = {table: _newest(frame) for table, frame in rows.items()}
    o2o = (object_links(newest, model).join(ids, left_on="ocel_source_id", right_on="ocel_id", how="semi")
           .join(objects.lazy(), left_on=["ocel_target_id", "target_type"], right_on=ID, how="semi")
           .select(O2O_COLUMNS).unique().sort(O2O_COLUMNS))
    return Ocel(events.sort("ocel_time", "ocel_id").collect(), objects, values, e2o.collect(), o2o.collect())
