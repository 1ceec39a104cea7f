"""transforms/ocel.py on hand-made frames: attribute history from landed versions (a value that changes twice gives
two changes, a repeated or cleared value none), O2O qualifiers (an invoice reaches its opportunity through its
order when its own lookup is empty), E2O qualifiers, and referential integrity (records the log names without a
row become objects without attributes; lookups to records that are neither landed nor in the log are dropped)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from config.tables import load_tables
from transforms.ocel import (
    EPOCH,
    Ocel,
    all_versions,
    attribute_types,
    attribute_values,
    build,
    object_links,
    object_types,
)

T = pl.Datetime("us", "UTC")
MODEL = load_tables()  # the default object model: its tables are the object types
KEYS = {t.name: f"{t.name}id" for t in MODEL.modelled}


def _versions(records: dict[str, pl.LazyFrame], deleted: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
    """`all_versions` of hand-made records, as transforms.build.object_versions writes them for the export."""
    types = object_types(MODEL, KEYS, {name: frame.collect_schema().names() for name, frame in records.items()})
    return {kind: frame.lazy() for kind, frame in all_versions(records, deleted, types).items()}


def _build(log: pl.LazyFrame, users: pl.LazyFrame, records: dict[str, pl.LazyFrame],
           deleted: pl.LazyFrame) -> Ocel:
    """transforms/ocel.py `build` over `all_versions` of the records, as the export reads them."""
    return build(log, users, _versions(records, deleted), MODEL)


def at(day: int) -> datetime:
    return datetime(2025, 1, day, 9, 30, tzinfo=UTC)


def versions(rows: list[dict[str, Any]], **schema: Any) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema={"quoteid": pl.Utf8, "_version": pl.Int64, "modifiedon": T, **schema})


def history(frame: pl.DataFrame, name: str) -> list[tuple[datetime, Any]]:
    """(time, value) of one attribute: the initial row's value (when set), then its changes."""
    rows = frame.filter(pl.col("ocel_changed_field").is_null() | (pl.col("ocel_changed_field") == name))
    return [(t, v) for t, v in rows.select("ocel_time", name).iter_rows() if v is not None]


def test_a_value_that_changes_twice_gives_two_changes_and_a_repeated_one_none() -> None:
    frame = versions([
        {"quoteid": "q1", "_version": 1, "modifiedon": at(1), "state": "Draft", "discount": Decimal("0")},
        {"quoteid": "q1", "_version": 2, "modifiedon": at(2), "state": "Draft", "discount": Decimal("5")},
        {"quoteid": "q1", "_version": 3, "modifiedon": at(3), "state": "Active", "discount": Decimal("5")},
        {"quoteid": "q1", "_version": 4, "modifiedon": at(4), "state": "Won", "discount": Decimal("5")},
    ], state=pl.Utf8, discount=pl.Decimal(38, 4))
    out = attribute_values(frame, "quoteid", {"state": "state", "discount_pct": "discount"}).collect()
    assert out.columns == ["ocel_id", "ocel_time", "ocel_changed_field", "state", "discount_pct"]
    assert history(out, "state") == [(EPOCH, "Draft"), (at(3), "Active"), (at(4), "Won")]
    assert history(out, "discount_pct") == [(EPOCH, Decimal("0")), (at(2), Decimal("5"))]
    assert out.filter(pl.col("ocel_changed_field").is_null()).height == 1  # one initial row per record
    assert out.get_column("ocel_changed_field").drop_nulls().value_counts(sort=True).rows() == [
        ("state", 2), ("discount_pct", 1)]


def test_a_value_repeated_across_versions_gives_no_change() -> None:
    frame = versions([{"quoteid": "q1", "_version": v, "modifiedon": at(v), "state": "Draft"} for v in (1, 2, 3)],
                     state=pl.Utf8)
    out = attribute_values(frame, "quoteid", {"state": "state"}).collect()
    assert out.rows() == [("q1", EPOCH, None, "Draft")]


def test_a_cleared_value_is_no_change_and_a_late_first_value_is_one() -> None:
    frame = versions([
        {"quoteid": "q1", "_version": 1, "modifiedon": at(1), "state": "Draft", "terms": None},
        {"quoteid": "q1", "_version": 2, "modifiedon": at(2), "state": None, "terms": "Net 30"},
        {"quoteid": "q1", "_version": 3, "modifiedon": at(3), "state": "Draft", "terms": "Net 30"},
    ], state=pl.Utf8, terms=pl.Utf8)
    out = attribute_values(frame, "quoteid", {"state": "state", "terms": "terms"}).collect()
    assert history(out, "state") == [(EPOCH, "Draft")]
    assert history(out, "terms") == [(at(2), "Net 30")]  # unknown at first: no initial value, one change


def test_versions_are_ordered_by_row_version_and_a_version_landed_twice_counts_once() -> None:
    frame = versions([
        {"quoteid": "q1", "_version": 3, "modifiedon": at(3), "state": "Won"},
        {"quoteid": "q2", "_version": 7, "modifiedon": at(1), "state": "Draft"},
        {"quoteid": "q1", "_version": 1, "modifiedon": at(1), "state": "Draft"},
        {"quoteid": "q1", "_version": 3, "modifiedon": at(3), "state": "Won"},
    ], state=pl.Utf8)
    out = attribute_values(frame, "quoteid", {"state": "state"}).collect()
    assert out.rows() == [("q1", EPOCH, None, "Draft"), ("q2", EPOCH, None, "Draft"), ("q1", at(3), "state", "Won")]


def test_attribute_types_follow_the_spec_names() -> None:
    frame = pl.DataFrame(schema={"a": pl.Utf8, "b": T, "c": pl.Date, "d": pl.Int32, "e": pl.Decimal(38, 4),
                                 "f": pl.Float64, "g": pl.Boolean})
    assert attribute_types(frame) == {"a": "string", "b": "time", "c": "time", "d": "integer", "e": "float",
                                      "f": "float", "g": "boolean"}


# A small org: one opportunity from a lead, a quote, an order, two invoices (one without its own opportunity
# lookup), an account and two users; the customer of the opportunity is a contact (not an object).
def _records() -> dict[str, pl.LazyFrame]:
    def table(rows: list[dict[str, Any]]) -> pl.LazyFrame:
        base = {"_version": 1, "modifiedon": at(1)}
        return pl.LazyFrame([{**base, **row} for row in rows], infer_schema_length=None).with_columns(
            pl.col("modifiedon").cast(T))

    return {
        "lead": table([{"leadid": "L1", "fullname": "Ada", "_ownerid_value": "U1"}]),
        "opportunity": table([{"opportunityid": "O1", "name": "Deal", "_originatingleadid_value": "L1",
                               "_customerid_value": "contact-9", "_parentaccountid_value": "A1",
                               "_ownerid_value": "U1"}]),
        "quote": table([{"quoteid": "Q1", "quotenumber": "QUO-1", "_opportunityid_value": "O1",
                         "_customerid_value": "A1", "_ownerid_value": "team-3"}]),
        "salesorder": table([{"salesorderid": "S1", "_quoteid_value": "Q1", "_opportunityid_value": "O1",
                              "_customerid_value": "A1"}]),
        "invoice": table([{"invoiceid": "I1", "_salesorderid_value": "S1", "_opportunityid_value": "O1"},
                          {"invoiceid": "I2", "_salesorderid_value": "S1", "_opportunityid_value": None}]),
        "account": table([{"accountid": "A1", "name": "Acme"}]),
        "systemuser": table([{"systemuserid": "U1", "fullname": "Bo"}, {"systemuserid": "U2", "fullname": "Cy"}]),
    }


def test_object_links_carry_their_qualifiers() -> None:
    links = set(object_links(_versions(_records(), pl.LazyFrame(schema=DELETED_SCHEMA)), MODEL).collect().iter_rows())
    assert links == {
        ("O1", "L1", "originated from", "lead"), ("O1", "contact-9", "customer", "account"),
        ("O1", "A1", "customer", "account"), ("O1", "U1", "owner", "systemuser"), ("L1", "U1", "owner", "systemuser"),
        ("Q1", "O1", "quote for", "opportunity"), ("Q1", "A1", "customer", "account"),
        ("Q1", "team-3", "owner", "systemuser"),
        ("S1", "Q1", "ordered from", "quote"), ("S1", "O1", "order for", "opportunity"),
        ("S1", "A1", "customer", "account"),
        ("I1", "S1", "bills", "salesorder"), ("I1", "O1", "invoice for", "opportunity"),
        ("I2", "S1", "bills", "salesorder"),
        ("I2", "O1", "invoice for", "opportunity"),  # through its order: its own lookup is empty
    }


def _log(rows: list[tuple[str, str, str, str, str]]) -> pl.LazyFrame:
    """(event_id, activity, object_type, object_id, case_id) -> event_log rows."""
    return pl.LazyFrame(
        [{"event_id": e, "activity": a, "object_type": t, "object_id": o, "case_id": c,
          "case_type": "lead" if c.startswith("L") else "opportunity", "timestamp": at(n + 1), "resource": "Bo",
          "source": "audit"} for n, (e, a, t, o, c) in enumerate(rows)], schema_overrides={"timestamp": T})


DELETED_SCHEMA = {"objecttypecode": pl.Utf8, "objectid": pl.Utf8, "old_values": pl.Utf8}


def test_build_keeps_referential_integrity_with_stubs_for_what_the_log_names() -> None:
    log = _log([("e1", "Lead Captured", "lead", "L1", "O1"), ("e2", "Opportunity Created", "opportunity", "O1", "O1"),
                ("e3", "Quote Created", "quote", "Q1", "O1"), ("e4", "Quote Deleted", "quote", "Q9", "O1"),
                ("e5", "Lead Captured", "lead", "L7", "L7")])
    users = pl.LazyFrame({"event_id": ["e1", "e3", "e4", "e-not-in-log"], "user_id": ["U1", "U1", "U8", "U2"]})
    records = _records()
    records["invoice"] = records["invoice"].with_columns(_customerid_value=pl.lit("U1"))  # a user is no account
    out = _build(log, users, records, pl.LazyFrame(schema=DELETED_SCHEMA))
    objects = dict(out.objects.iter_rows())
    # Q9 (deleted before any run landed it), L7 (lead without a row) and U8 (a user without a row) are stubs.
    assert {k: objects.get(k) for k in ("Q9", "L7", "U8")} == {"Q9": "quote", "L7": "lead", "U8": "systemuser"}
    assert "contact-9" not in objects and "team-3" not in objects
    assert out.values["quote"].filter(pl.col("ocel_id") == "Q9").rows() == [
        ("Q9", EPOCH, None, None)]  # its initial row, number unknown: readers list objects from it
    assert out.events.columns == ["ocel_id", "ocel_type", "ocel_time", "resource", "source"]
    assert set(out.event_object.iter_rows()) == {
        ("e1", "L1", "subject"), ("e1", "O1", "case"), ("e1", "U1", "performed by"),
        ("e2", "O1", "subject"),
        ("e3", "Q1", "subject"), ("e3", "O1", "case"), ("e3", "U1", "performed by"),
        ("e4", "Q9", "subject"), ("e4", "O1", "case"), ("e4", "U8", "performed by"),
        ("e5", "L7", "subject"),
    }
    o2o = set(out.object_object.iter_rows())
    assert ("O1", "contact-9", "customer") not in o2o and ("Q1", "team-3", "owner") not in o2o
    assert ("I1", "U1", "customer") not in o2o and ("O1", "U1", "owner") in o2o
    assert {("O1", "A1", "customer"), ("I2", "O1", "invoice for"), ("O1", "L1", "originated from")} <= o2o
    ids = set(objects)
    assert all(s in ids and t in ids for s, t, _ in o2o)
    assert all(o in ids for _, o, _ in out.event_object.iter_rows())


def test_a_record_only_the_audit_saw_is_read_from_its_delete_old_values() -> None:
    records = _records()
    records["quote"] = records["quote"].with_columns(statecode=pl.lit(0, pl.Int32),
                                                     statecode__label=pl.lit("Draft"),
                                                     totalamount=pl.lit(Decimal("10"), pl.Decimal(38, 4)))
    deleted = pl.LazyFrame([{"objecttypecode": "quote", "objectid": "Q9", "old_values":
                             '{"quoteid": "Q9", "quotenumber": "QUO-9", "statecode": 0, "totalamount": "1234.5",'
                             ' "_opportunityid_value": "O1", "_customerid_value": "A1"}'}], schema=DELETED_SCHEMA)
    log = _log([("e4", "Quote Deleted", "quote", "Q9", "O1")])
    out = _build(log, pl.LazyFrame(schema={"event_id": pl.Utf8, "user_id": pl.Utf8}), records, deleted)
    row = out.values["quote"].filter(pl.col("ocel_id") == "Q9").to_dicts()
    assert len(row) == 1
    assert {k: row[0][k] for k in ("number", "state", "total_amount")} == {
        "number": "QUO-9", "state": "Draft", "total_amount": Decimal("1234.5")}
    assert {("Q9", "O1", "quote for"), ("Q9", "A1", "customer")} <= set(out.object_object.iter_rows())


@pytest.mark.parametrize("table", ["lead", "account"])
def test_a_table_with_no_landed_rows_still_gets_the_objects_the_log_names(table: str) -> None:
    records = {name: frame for name, frame in _records().items() if name != table}
    log = _log([("e1", "Lead Captured", "lead", "L1", "O1")])
    out = _build(log, pl.LazyFrame(schema={"event_id": pl.Utf8, "user_id": pl.Utf8}), records,
                pl.LazyFrame(schema=DELETED_SCHEMA))
    assert ("L1", "lead") in set(out.objects.iter_rows())
    assert ("e1", "L1", "subject") in set(out.event_object.iter_rows())
