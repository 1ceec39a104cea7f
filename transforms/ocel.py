"""Object-centric lead-to-cash (OCEL 2.0, https://www.ocel-standard.org/specification/, arXiv:2403.01975): the
event log and the lake's records -> events, objects, their attribute values over time and the qualified
event-to-object (E2O) and object-to-object (O2O) relations, in the spec's relational shape. Object types are
lead, opportunity, quote, salesorder, invoice, account and systemuser (`OBJECT_TYPES`: each type's key and the
attributes it shows, read from Dataverse columns), plus any other table a custom rule puts in the log. An object
is every landed record, every record whose deletion the audit kept although no run landed it (its Delete old
values stand in for a row), and every object the log names: an event's own record, an opportunity case, the user
who acted (the log is evidence they existed, so those without a row become objects without attributes). Attribute
values change over time (the metamodel's object attribute values carry a time): each record's first landed value
holds from time 0 (the spec's examples use the UNIX epoch for a value known from the start), and every later
landed version whose value differs from the one before adds a change at that version's modifiedon; a value
repeated across versions adds nothing, a cleared value is kept as the last one seen. E2O qualifiers: "subject"
(the record the event happened to), "case" (the opportunity of the case, for events on its leads, quotes, orders
and invoices), "performed by" (the systemuser behind the event's resource). O2O qualifiers come from the lookups
in `LINKS`. Every relation points at an existing object: an O2O lookup to a record that is neither landed nor in
the log, or is not of the lookup's type (a customer that is a contact, an owner that is a team), is dropped.
Pure polars: frames in, frames out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import polars as pl

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME = pl.Datetime("us", "UTC")
ID = ["ocel_id", "ocel_type"]
VALUE_KEYS = ["ocel_id", "ocel_time", "ocel_changed_field"]
E2O_COLUMNS = ["ocel_event_id", "ocel_object_id", "ocel_qualifier"]
O2O_COLUMNS = ["ocel_source_id", "ocel_target_id", "ocel_qualifier"]
EVENT_ATTRIBUTES = {"resource": "resource", "source": "source"}  # OCEL event attribute -> event_log column
SUBJECT, CASE, PERFORMED_BY = "subject", "case", "performed by"


class ObjectType(NamedTuple):
    key: str  # the table's primary key
    attributes: dict[str, str]  # OCEL attribute -> Dataverse column (skipped when this lake has no such column)


_RECORD = {"state": "statecode__label", "status": "statuscode__label", "owner": "_ownerid_value__label",
           "currency": "_transactioncurrencyid_value__label"}
OBJECT_TYPES: dict[str, ObjectType] = {
    "lead": ObjectType("leadid", {"name": "fullname", "company": "companyname", "lead_source": "leadsourcecode__label",
                                  **_RECORD, "estimated_amount": "estimatedamount"}),
    "opportunity": ObjectType("opportunityid", {
        "name": "name", "stage": "salesstage__label", **_RECORD, "estimated_value": "estimatedvalue",
        "actual_value": "actualvalue", "estimated_close": "estimatedclosedate", "discount_pct": "discountpercentage"}),
    "quote": ObjectType("quoteid", {
        "number": "quotenumber", "name": "name", "revision": "revisionnumber", **_RECORD,
        "discount_pct": "discountpercentage", "discount_amount": "discountamount",
        "line_amount": "totallineitemamount", "total_amount": "totalamount"}),
    "salesorder": ObjectType("salesorderid", {
        "number": "ordernumber", "name": "name", **_RECORD, "total_amount": "totalamount", "submitted": "submitdate",
        "fulfilled": "datefulfilled"}),
    "invoice": ObjectType("invoiceid", {
        "number": "invoicenumber", "name": "name", **_RECORD, "total_amount": "totalamount",
        "payment_terms": "paymenttermscode__label", "due_date": "duedate"}),
    "account": ObjectType("accountid", {
        "name": "name", "number": "accountnumber", "region": "territorycode__label",
        "industry": "industrycode__label", "employees": "numberofemployees", "revenue": "revenue",
        "country": "address1_country", "state": "statecode__label", "owner": "_ownerid_value__label"}),
    "systemuser": ObjectType("systemuserid", {"name": "fullname", "title": "title", "disabled": "isdisabled"}),
}


class Link(NamedTuple):
    source: str  # object type holding the lookup
    column: str  # the lookup column
    qualifier: str  # reads "source <qualifier> target"
    target: str  # object type the lookup points at


LINKS: tuple[Link, ...] = (
    Link("opportunity", "_originatingleadid_value", "originated from", "lead"),
    Link("quote", "_opportunityid_value", "quote for", "opportunity"),
    Link("salesorder", "_quoteid_value", "ordered from", "quote"),
    Link("salesorder", "_opportunityid_value", "order for", "opportunity"),
    Link("invoice", "_salesorderid_value", "bills", "salesorder"),
    Link("invoice", "_opportunityid_value", "invoice for", "opportunity"),
    # An opportunity's customer may be a contact; its parent account is then the account (both when they differ).
    *(Link(kind, column, "customer", "account") for kind, column in (
        ("opportunity", "_customerid_value"), ("opportunity", "_parentaccountid_value"),
        ("quote", "_customerid_value"), ("salesorder", "_customerid_value"), ("invoice", "_customerid_value"),
        ("lead", "_parentaccountid_value"))),
    *(Link(kind, "_ownerid_value", "owner", "systemuser")
      for kind in ("lead", "opportunity", "quote", "salesorder", "invoice", "account")),
)
# An invoice whose own opportunity lookup is empty belongs to its order's opportunity (as in transforms/cases.py).
INVOICE_VIA_ORDER = ("bills", "order for", "invoice for")


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


def unlanded(deleted: pl.LazyFrame, table: str, landed: pl.LazyFrame) -> pl.LazyFrame:
    """Records of `table` whose audit Delete row is all a run saw, as rows of `landed`'s columns read from the
    Delete's old values; a label (`x__label`) they never hold is taken from a landed row with the same `x`."""
    key, schema = OBJECT_TYPES[table].key, landed.collect_schema()
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


def versions(landed: pl.LazyFrame, deleted: pl.LazyFrame, table: str) -> pl.DataFrame:
    """Every version of a table's records in the columns the OCEL tables read (the unlanded deleted records
    included, one version each), read once: scanning the lake again for every table built from it costs more."""
    spec = OBJECT_TYPES[table]
    used = [*spec.attributes.values(), *(link.column for link in LINKS if link.source == table)]
    wanted = [spec.key, "_version", "modifiedon", *used, *(c.removesuffix("__label") for c in used)]
    have = landed.collect_schema().names()
    landed = landed.select(c for c in dict.fromkeys(wanted) if c in have).with_columns(
        pl.lit(None, dtype).alias(c) for c, dtype in (("_version", pl.Int64), ("modifiedon", TIME)) if c not in have)
    return pl.concat([landed, unlanded(deleted, table, landed)], how="diagonal_relaxed").collect()


def _newest(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
    return rows.sort("_version", "modifiedon", nulls_last=False).unique(key, keep="last")


def object_links(newest: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """Qualified O2O relations from the lookups of each record's newest version, with the type each lookup points
    at (`target_type`: a polymorphic lookup, e.g. a customer, may point elsewhere)."""
    parts = []
    for link in LINKS:
        frame = newest.get(link.source)
        if frame is None or link.column not in frame.collect_schema().names():
            continue
        parts.append(frame.select(pl.col(OBJECT_TYPES[link.source].key).alias("ocel_source_id"),
                                  pl.col(link.column).alias("ocel_target_id"),
                                  pl.lit(link.qualifier).alias("ocel_qualifier"),
                                  pl.lit(link.target).alias("target_type")))
    links = (pl.concat(parts) if parts
             else pl.LazyFrame(schema=dict.fromkeys([*O2O_COLUMNS, "target_type"], pl.Utf8)))
    links = links.filter(pl.col("ocel_target_id").is_not_null())
    bills, order_for, invoice_for = INVOICE_VIA_ORDER
    via_order = (links.filter(pl.col("ocel_qualifier") == bills)
                 .join(links.filter(pl.col("ocel_qualifier") == order_for), left_on="ocel_target_id",
                       right_on="ocel_source_id", suffix="_order")
                 .join(links.filter(pl.col("ocel_qualifier") == invoice_for), on="ocel_source_id", how="anti")
                 .select("ocel_source_id", pl.col("ocel_target_id_order").alias("ocel_target_id"),
                         pl.lit(invoice_for).alias("ocel_qualifier"), pl.col("target_type_order").alias("target_type")))
    return pl.concat([links, via_order])


def event_links(log: pl.LazyFrame, users: pl.LazyFrame) -> pl.LazyFrame:
    """E2O relations: the event's own record, its opportunity case, the user who did it."""
    def relation(frame: pl.LazyFrame, target: str, qualifier: str) -> pl.LazyFrame:
        return frame.select(pl.col("event_id").alias("ocel_event_id"), pl.col(target).alias("ocel_object_id"),
                            pl.lit(qualifier).alias("ocel_qualifier"))

    case_of_other = (pl.col("case_type") == "opportunity") & (pl.col("case_id") != pl.col("object_id"))
    return pl.concat([relation(log, "object_id", SUBJECT), relation(log.filter(case_of_other), "case_id", CASE),
                      relation(users.join(log, on="event_id", how="semi", maintain_order="left"), "user_id",
                               PERFORMED_BY)])


def all_versions(landed: dict[str, pl.LazyFrame], deleted: pl.LazyFrame) -> dict[str, pl.DataFrame]:
    """`versions` of every object type the lake holds: what `build` reads besides the log."""
    return {table: versions(frame, deleted, table) for table in OBJECT_TYPES
            if (frame := landed.get(table)) is not None}


def build(log: pl.LazyFrame, users: pl.LazyFrame, rows: dict[str, pl.LazyFrame]) -> Ocel:
    """The OCEL tables of an event log (event_log.parquet), who did each event (`event_id`, `user_id`) and every
    version of each object type's records (`all_versions`)."""
    named = pl.concat([
        *(frame.select(pl.col(OBJECT_TYPES[table].key).alias("ocel_id"), pl.lit(table).alias("ocel_type"))
          for table, frame in rows.items()),
        log.select(pl.col("object_id").alias("ocel_id"), pl.col("object_type").alias("ocel_type")),
        log.filter(pl.col("case_type") == "opportunity").select(pl.col("case_id").alias("ocel_id"),
                                                                 pl.lit("opportunity").alias("ocel_type")),
        users.select(pl.col("user_id").alias("ocel_id"), pl.lit("systemuser").alias("ocel_type")),
    ], how="vertical_relaxed").filter(pl.col("ocel_id").is_not_null())
    # Ids are GUIDs, unique across tables; should one repeat, the landed record's type wins.
    objects = named.unique("ocel_id", keep="first", maintain_order=True).sort("ocel_type", "ocel_id").collect()

    values: dict[str, pl.DataFrame] = {}
    for kind in objects.get_column("ocel_type").unique().sort():
        ids = objects.lazy().filter(pl.col("ocel_type") == kind).select("ocel_id")
        frame, spec = rows.get(kind), OBJECT_TYPES.get(kind)
        if frame is None or spec is None:
            known = pl.LazyFrame(schema=dict.fromkeys(VALUE_KEYS, pl.Utf8)).cast({"ocel_time": TIME})
        else:
            have = frame.collect_schema().names()
            known = attribute_values(frame, spec.key, {n: c for n, c in spec.attributes.items() if c in have})
            known = known.join(ids, on="ocel_id", how="semi")
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
    e2o = (event_links(log, users)
           .join(ids, left_on="ocel_object_id", right_on="ocel_id", how="semi", maintain_order="left")
           .unique(maintain_order=True))
    newest = {table: _newest(frame, OBJECT_TYPES[table].key) for table, frame in rows.items()}
    o2o = (object_links(newest).join(ids, left_on="ocel_source_id", right_on="ocel_id", how="semi")
           .join(objects.lazy(), left_on=["ocel_target_id", "target_type"], right_on=ID, how="semi")
           .select(O2O_COLUMNS).unique().sort(O2O_COLUMNS))
    return Ocel(events.sort("ocel_time", "ocel_id").collect(), objects, values, e2o.collect(), o2o.collect())
