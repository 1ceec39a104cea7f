"""connector/rows.py: types from metadata, exact money, bad values quarantined (hypothesis against an oracle
written independently of the converter), deletions split out, and every sandbox table read without loss."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.rows import (
    FORMATTED,
    LOOKUP_LOGICAL,
    ColumnSpec,
    ShapeNote,
    arrow_schema,
    column_names,
    column_specs,
    deletions_frame,
    polars_schema,
    quarantine_frame,
    split_deletions,
    to_frame,
)
from ground.errors import ConfigError
from sandbox.metadata import attribute_rows
from sandbox.schema import TABLES
from sandbox.simulator import simulate
from sandbox.store import Annotations, Store, render_entity


def attr(name: str, attribute_type: str, fmt: str | None = None, behavior: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"LogicalName": name, "AttributeType": attribute_type}
    if attribute_type == "DateTime":
        row["Format"] = fmt or "DateAndTime"
        row["DateTimeBehavior"] = {"Value": behavior or "UserLocal"}
    return row


ATTRIBUTES = [
    attr("thingid", "Uniqueidentifier"), attr("name", "String"), attr("notes", "Memo"), attr("count", "Integer"),
    attr("sourcecode", "Picklist"), attr("statecode", "State"), attr("statuscode", "Status"),
    attr("versionnumber", "BigInt"), attr("amount", "Money"), attr("discount", "Decimal"), attr("ratio", "Double"),
    attr("isactive", "Boolean"), attr("createdon", "DateTime"), attr("closedate", "DateTime", "DateOnly", "UserLocal"),
    attr("duedate", "DateTime", "DateOnly", "DateOnly"), attr("tzfree", "DateTime", "DateOnly", "TimeZoneIndependent"),
    attr("ownerid", "Owner"), attr("customerid", "Customer"), attr("parentid", "Lookup"),
    attr("objecttypecode", "EntityName"), attr("hidden", "Virtual"),
]
SELECTED = ["thingid", "name", "notes", "count", "sourcecode", "statecode", "statuscode", "versionnumber", "amount",
            "discount", "ratio", "isactive", "createdon", "closedate", "duedate", "tzfree", "_ownerid_value",
            "customerid", "_parentid_value", "objecttypecode"]
SPECS = column_specs(ATTRIBUTES, SELECTED, table="thing")
BY_NAME = {s.api_name: s for s in SPECS}


@pytest.mark.parametrize(("column", "expected"), [
    ("thingid", pa.string()), ("name", pa.string()), ("notes", pa.string()), ("count", pa.int32()),
    ("sourcecode", pa.int32()), ("statecode", pa.int32()), ("statuscode", pa.int32()),
    ("versionnumber", pa.int64()), ("amount", pa.decimal128(38, 4)), ("discount", pa.decimal128(38, 10)),
    ("ratio", pa.float64()), ("isactive", pa.bool_()), ("createdon", pa.timestamp("us", "UTC")),
    ("closedate", pa.timestamp("us", "UTC")),  # UserLocal date-only: a UTC instant, the day may shift
    ("duedate", pa.date32()), ("tzfree", pa.timestamp("us", "UTC")), ("_ownerid_value", pa.string()),
    ("_customerid_value", pa.string()), ("_parentid_value", pa.string()), ("objecttypecode", pa.string()),
])
def test_arrow_type_follows_metadata(column: str, expected: pa.DataType) -> None:
    assert arrow_schema(SPECS).field(column).type == expected


def test_fixed_column_order_with_labels_lookup_types_and_version() -> None:
    names = column_names(SPECS)
    assert names[:4] == ["thingid", "name", "notes", "count"]
    assert names[4:6] == ["sourcecode", "sourcecode__label"]
    assert names[names.index("isactive") + 1] == "isactive__label"
    at = names.index("_ownerid_value")
    assert names[at:at + 3] == ["_ownerid_value", "_ownerid_value__label", "_ownerid_value__type"]
    assert "name__label" not in names and "createdon__label" not in names
    assert names[-1] == "_version"
    assert arrow_schema(SPECS).names == names
    frame, bad = to_frame([], SPECS)
    assert frame.columns == names and frame.schema == polars_schema(SPECS) and frame.height == 0 and bad == []


def test_lookup_named_by_logical_name_gives_the_api_name() -> None:
    assert BY_NAME["_customerid_value"].logical_name == "customerid" and BY_NAME["_customerid_value"].lookup


@pytest.mark.parametrize(("selected", "message"), [
    (["nosuchcolumn"], "'nosuchcolumn' is not in the table's metadata"),
    (["hidden"], "AttributeType Virtual, which l2c cannot land"),
])
def test_column_specs_refuses(selected: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        column_specs(ATTRIBUTES, selected, table="thing")
    assert "table=thing" in str(err.value) and "config/tables.toml" in str(err.value)


def test_money_from_json_stays_exact() -> None:
    text = ('{"@odata.etag": "W/\\"9007199254740993\\"", "thingid": "a", "amount": 922337203685477.5807, '
            '"discount": 0.1234567891, "ratio": 0.1, "count": 7}')
    frame, bad = to_frame([json.loads(text, parse_float=Decimal)], SPECS)
    assert bad == []
    row = frame.row(0, named=True)
    assert row["amount"] == Decimal("922337203685477.5807") and str(row["amount"]) == "922337203685477.5807"
    assert row["discount"] == Decimal("0.1234567891")
    assert row["ratio"] == 0.1 and row["count"] == 7
    assert row["_version"] == 9007199254740993  # beyond float precision: parsed as an integer, not a double


# --- hypothesis: random records against an oracle ----------------------------------------------------------

TS_MIN, TS_MAX = datetime(1753, 1, 2), datetime(9999, 12, 30)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


def _instant(moment: datetime, zone: timezone) -> tuple[str, datetime]:
    moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(zone).isoformat()
    return text.replace("+00:00", "Z"), moment


def _float(value: float, as_decimal: bool) -> tuple[Any, float]:
    return (Decimal(repr(value)) if as_decimal else value), value


TRICKY = ['"', "'", "\\", "é", "漢", "🙂", "\n", "\x00"]
# kind -> strategy of (JSON value, the value the frame must hold)
GOOD: dict[str, st.SearchStrategy[tuple[Any, Any]]] = {
    "string": st.text(st.characters(codec="utf-8") | st.sampled_from(TRICKY)).map(lambda s: (s, s)),
    "int32": st.integers(-2**31, 2**31 - 1).map(lambda i: (i, i)),
    "int64": st.integers(-2**63, 2**63 - 1).map(lambda i: (i, i)),
    "money": st.one_of(
        st.decimals(-10**15, 10**15, places=4, allow_nan=False, allow_infinity=False),
        st.integers(-10**15, 10**15)).map(lambda d: (d, Decimal(d))),
    "decimal": st.decimals(-10**12, 10**12, places=10, allow_nan=False, allow_infinity=False).map(lambda d: (d, d)),
    "float64": st.builds(_float, st.floats(allow_nan=False, allow_infinity=False), st.booleans()),
    "bool": st.booleans().map(lambda b: (b, b)),
    "timestamp": st.builds(_instant, st.datetimes(TS_MIN, TS_MAX), ZONES),
    "date": st.dates(date(1753, 1, 1), date(9999, 12, 31)).map(lambda d: (d.isoformat(), d)),
}
# kind -> (JSON value in the other DateTime shape, the value the frame must hold): a bare date in a timestamp
# column is its UTC midnight, a full timestamp in a DateOnly column its UTC day; both are noted, not quarantined.
OTHER_SHAPE: dict[str, st.SearchStrategy[tuple[Any, Any]]] = {
    "timestamp": st.dates(date(1753, 1, 2), date(9999, 12, 30)).map(
        lambda d: (d.isoformat(), datetime(d.year, d.month, d.day, tzinfo=UTC))),
    "date": st.builds(_instant, st.datetimes(TS_MIN, TS_MAX), ZONES).map(lambda pair: (pair[0], pair[1].date())),
}
# kind -> values that must be quarantined, each tried alone below and mixed in by hypothesis
LONE_SURROGATE = json.loads('"\\ud800"')  # valid JSON, but no UTF-8 string can hold it
BAD_VALUES: dict[str, list[Any]] = {
    "string": [12, True, {"nested": 1}, ["x"], LONE_SURROGATE, "ok " + LONE_SURROGATE],
    "int32": ["12", True, 1.5, Decimal("1.0"), 2**31, -2**31 - 1],
    "int64": ["12", False, 2**63, [1]],
    "money": [Decimal("1.00001"), "12.50", True, Decimal("1E+40"), Decimal("NaN"), Decimal("Infinity")],
    "decimal": [Decimal("0.12345678901"), "0.5"],
    "float64": ["1.5", True, Decimal("1E+400"), float("inf"), float("nan")],
    "bool": [0, 1, "true", "Yes"],
    "timestamp": ["2023-02-30T00:00:00Z", "2023-04-07T21:59:01", "2023-02-30", "yesterday", "",
                  "2023-04-07 21:59:01Z", " 2023-04-07T21:59:01Z", "2023-04-07T21:59Z", 1680904741, LONE_SURROGATE],
    "date": ["2023-02-30T00:00:00Z", "2023-02-30", "2023-4-7", " 2023-04-07", "20230407", 20230407,
             "2023-04-07T21:59:01"],
}
BAD: dict[str, st.SearchStrategy[Any]] = {kind: st.sampled_from(values) for kind, values in BAD_VALUES.items()}
KIND_COLUMN = {"string": "name", "int32": "count", "int64": "versionnumber", "money": "amount", "decimal": "discount",
               "float64": "ratio", "bool": "isactive", "timestamp": "createdon", "date": "duedate"}


@pytest.mark.parametrize(("kind", "value"), [(k, v) for k, values in BAD_VALUES.items() for v in values],
                         ids=lambda x: repr(x)[:30])
def test_bad_value_is_quarantined_not_raised(kind: str, value: Any) -> None:
    column = KIND_COLUMN[kind]
    assert BY_NAME[column].kind == kind
    good = {"thingid": "good", column: None}
    frame, bad = to_frame([good, {"thingid": "bad", column: value}, good], SPECS)
    assert frame.get_column("thingid").to_list() == ["good", "good"]
    assert len(bad) == 1 and bad[0][0]["thingid"] == "bad" and bad[0][1].startswith(f"{column}: ")


BAD_ETAGS = ['W/"x"', '"5"', "W/5", 5, 'W/"-1"', 'W/"99999999999999999999"', 'W/"1' + LONE_SURROGATE + '"']


@pytest.mark.parametrize("etag", BAD_ETAGS)
def test_bad_etag_is_quarantined(etag: Any) -> None:
    frame, bad = to_frame([{"thingid": "a", "@odata.etag": etag}, {"thingid": "b", "@odata.etag": 'W/"7"'}], SPECS)
    assert frame.select("thingid", "_version").rows() == [("b", 7)]
    assert [r["thingid"] for r, _ in bad] == ["a"] and bad[0][1].startswith("_version: ")


Case = tuple[list[dict[str, Any]], list[dict[str, Any] | None], list[tuple[int, str, str, str]]]


@st.composite
def records(draw: Callable[..., Any]) -> Case:
    """Records as json.loads(parse_float=Decimal) gives them, per record the row expected (None = bad), and the
    shape notes expected: (record index, column, value, landed as) of kept records.

    At most one value per record is bad, so a converter that let a bad value through is seen (a record with
    several bad values would be quarantined for the others anyway)."""
    out: list[dict[str, Any]] = []
    expected: list[dict[str, Any] | None] = []
    notes: list[tuple[int, str, str, str]] = []
    for index in range(draw(st.integers(0, 12))):
        shifted: list[tuple[int, str, str, str]] = []
        culprit = draw(st.one_of(st.none(), st.none(), st.sampled_from([*SPECS, "label", "etag"])))
        record: dict[str, Any] = {"@odata.extra": "ignored"}  # annotations no spec names are not columns
        row: dict[str, Any] = dict.fromkeys(column_names(SPECS))
        for spec in SPECS:
            if spec is culprit:
                record[spec.api_name] = draw(BAD[spec.kind])
            elif draw(st.integers(0, 3)) == 0:
                if draw(st.booleans()):
                    record[spec.api_name] = None  # else the property is absent
            elif spec.kind in OTHER_SHAPE and draw(st.integers(0, 3)) == 0:
                record[spec.api_name], row[spec.api_name] = draw(OTHER_SHAPE[spec.kind])
                shifted.append((index, spec.api_name, record[spec.api_name], spec.kind))
            else:
                record[spec.api_name], row[spec.api_name] = draw(GOOD[spec.kind])
            if spec.labelled and draw(st.booleans()):
                record[spec.api_name + FORMATTED] = row[spec.api_name + "__label"] = draw(st.text(max_size=20))
            if spec.lookup and draw(st.booleans()):
                record[spec.api_name + LOOKUP_LOGICAL] = row[spec.api_name + "__type"] = draw(
                    st.sampled_from(["account", "contact"]))
        if culprit == "label":
            record["statecode" + FORMATTED] = draw(st.one_of(st.integers(), st.booleans()))
        version = draw(st.one_of(st.none(), st.integers(0, 2**63 - 1)))
        if culprit == "etag":
            record["@odata.etag"] = draw(st.sampled_from(BAD_ETAGS))
        elif version is not None:
            record["@odata.etag"], row["_version"] = f'W/"{version}"', version
        out.append(record)
        expected.append(None if culprit is not None else row)
        notes += shifted if culprit is None else []
    return out, expected, notes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_to_frame_matches_oracle(case: Case) -> None:
    batch, expected, expected_notes = case
    notes: list[ShapeNote] = []
    frame, bad = to_frame(batch, SPECS, notes)
    assert frame.schema == polars_schema(SPECS)
    assert frame.to_dicts() == [row for row in expected if row is not None]
    assert [record for record, _ in bad] == [r for r, row in zip(batch, expected, strict=True) if row is None]
    assert sorted((n.index, n.column, n.value, n.landed_as) for n in notes) == sorted(expected_notes)
    for _, reason in bad:  # "<column>: <problem> <value>[; ...]"
        assert reason.split(":")[0] in column_names(SPECS), reason


def test_bad_reason_names_column_and_value() -> None:
    frame, bad = to_frame([{"thingid": "a", "count": "12"}, {"thingid": "b", "count": 12}], SPECS)
    assert frame.get_column("thingid").to_list() == ["b"]
    assert bad == [({"thingid": "a", "count": "12"}, "count: expected int32, got str '12'")]


def test_date_only_and_user_local() -> None:
    record = {"thingid": "a", "duedate": "2024-02-29", "closedate": "2024-02-28T23:00:00Z",
              "tzfree": "2024-02-29T00:00:00Z"}
    notes: list[ShapeNote] = []
    row = to_frame([record], SPECS, notes)[0].row(0, named=True)
    assert row["duedate"] == date(2024, 2, 29)
    assert row["closedate"] == datetime(2024, 2, 28, 23, tzinfo=UTC)
    assert row["tzfree"] == datetime(2024, 2, 29, tzinfo=UTC)
    assert notes == []


def test_a_value_in_the_other_date_shape_is_landed_and_noted_not_quarantined() -> None:
    """Dataverse serves a DateOnly-behaviour column as "YYYY-MM-DD" (realdata README): metadata that says
    otherwise (a stale cache, a behaviour changed in the org) must not cost the row."""
    records = [{"thingid": "a", "createdon": "2026-06-01", "duedate": "2026-06-01T22:30:00+02:00"},
               {"thingid": "b", "createdon": "2026-06-02", "count": "x"}]  # quarantined: no note
    notes: list[ShapeNote] = []
    frame, bad = to_frame(records, SPECS, notes)
    row = frame.row(0, named=True)
    assert row["createdon"] == datetime(2026, 6, 1, tzinfo=UTC)
    assert row["duedate"] == date(2026, 6, 1)  # 22:30 at +02:00 is 20:30 UTC, the same UTC day
    assert [r["thingid"] for r, _ in bad] == ["b"]
    assert [(n.index, n.column, n.value, n.landed_as) for n in notes] == [
        (0, "createdon", "2026-06-01", "timestamp"), (0, "duedate", "2026-06-01T22:30:00+02:00", "date")]
    assert "DateOnly" in notes[1].message and "UTC day" in notes[1].message


# --- deletions and quarantine ------------------------------------------------------------------------------

CTX = "https://org.crm.dynamics.com/api/data/v9.2/$metadata#things/$deletedEntity"


def test_split_deletions_and_a_malformed_one_is_quarantined() -> None:
    page = [{"thingid": "a", "@odata.etag": 'W/"5"'},
            {"@odata.context": CTX, "id": "b", "reason": "deleted"},
            {"@odata.context": CTX, "reason": "deleted"}]
    live, gone = split_deletions(page)
    assert gone == ["b"] and len(live) == 2
    frame, bad = to_frame(live, SPECS)
    assert frame.get_column("thingid").to_list() == ["a"]
    assert len(bad) == 1 and "$deletedEntity" in bad[0][1]
    assert deletions_frame(gone, "thingid").schema == pl.Schema({"thingid": pl.String, "_version": pl.Int64})


def test_quarantine_frame_keeps_the_record_exactly() -> None:
    record = {"thingid": "a", "amount": Decimal("1.000001"), "name": 'Zoë "the" ünïcode'}
    frame = quarantine_frame([(record, "amount: more than 4 decimals"), ({"name": LONE_SURROGATE}, "name: bad")])
    assert frame.columns == ["record", "reason"]
    assert json.loads(frame.item(0, "record")) == {"thingid": "a", "amount": "1.000001", "name": record["name"]}
    assert json.loads(frame.item(1, "record")) == {"name": LONE_SURROGATE}


# --- every sandbox table, as the Web API renders it, reads without quarantine ------------------------------

@pytest.fixture(scope="module")
def rows_store() -> Store:
    return Store(simulate(11, 100))


@pytest.mark.parametrize("table", sorted(TABLES))
def test_sandbox_table_reads_whole(rows_store: Store, table: str) -> None:
    if table not in rows_store.tables:
        pytest.skip(f"the sandbox serves no rows for {table}")
    served = rows_store.tables[table]
    columns = list(served.table.columns)
    rendered = [render_entity(rows_store, served.table, row, columns, Annotations(formatted=True, lookup=True))
                for row in served.frame.iter_rows(named=True)]
    page = json.loads(json.dumps(rendered), parse_float=Decimal)  # through JSON text, as a response body
    specs = column_specs(attribute_rows(served.table), [c.api_name for c in columns], table=table)
    frame, bad = to_frame(page, specs)
    assert bad == []
    assert frame.height == served.frame.height > 0
    pk = served.table.primary_id
    assert frame.get_column(pk).to_list() == served.frame.get_column(pk).to_list()
    for spec in specs:
        if spec.labelled:  # every non-null choice/boolean/lookup value that had a label kept it
            labelled = [r.get(spec.api_name + FORMATTED) is not None for r in page]
            assert frame.get_column(spec.api_name + "__label").is_not_null().to_list() == labelled


def test_spec_is_hashable_value() -> None:
    spec = ColumnSpec("duedate", "duedate", "DateTime", date_only=True, behavior="DateOnly")
    assert spec.kind == "date" and not spec.labelled and spec == BY_NAME["duedate"]
