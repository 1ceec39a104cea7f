"""The emulator's query options: $filter against an independent evaluator, and what a real org rejects."""

from __future__ import annotations

import dataclasses
import json
import operator
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sandbox.odata import ODataError, filter_expr, parse_prefer, parse_query
from sandbox.schema import TABLES, Column, Table

THING = Table("thing", "things", "thingid", "name", 10001, (
    Column("thingid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("city", "String", 3),
    Column("qty", "Integer", 4),
    Column("amount", "Money", 5),
    Column("flag", "Boolean", 6),
    Column("createdon", "DateTime", 7),
    Column("due", "DateTime", 8, date_only=True, behavior="DateOnly"),
    Column("ownerid", "Owner", 9, targets=("systemuser",)),
))
SCHEMA = pl.Schema({"thingid": pl.Utf8(), "name": pl.Utf8(), "city": pl.Utf8(), "qty": pl.Int32(),
                    "amount": pl.Float64(), "flag": pl.Boolean(), "createdon": pl.Datetime("us", "UTC"),
                    "due": pl.Date(), "_ownerid_value": pl.Utf8()})
KINDS = {"thingid": "guid", "name": "string", "city": "string", "qty": "int", "amount": "decimal",
         "flag": "bool", "createdon": "datetime", "due": "date", "_ownerid_value": "guid"}

OWNERS = ["0a2a9e2c-0000-0000-0000-000000000001", "ffffffff-0000-0000-0000-000000000000",
          "00000000-0000-0000-0000-ff0000000000"]
TIMES = [datetime(2023, 4, 7, 21, 59, 1, tzinfo=UTC), datetime(2023, 4, 7, tzinfo=UTC),
         datetime(2023, 4, 8, 0, 0, 0, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)]
DATES = [date(2023, 4, 7), date(2023, 4, 8), date(2024, 2, 29)]
TEXT = "aAbBé'%_ O日😀\""
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "guid": st.sampled_from(OWNERS) | st.uuids().map(str), "string": st.text(TEXT, max_size=4),
    "int": st.integers(-2, 3), "decimal": st.sampled_from([-1.5, 0.0, 0.5, 2.25, 3.0]), "bool": st.booleans(),
    "datetime": st.sampled_from(TIMES), "date": st.sampled_from(DATES)}

OPS: dict[str, Callable[[Any, Any], bool]] = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
                                              "ge": operator.ge, "lt": operator.lt, "le": operator.le}
INVERT = {"eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge"}
FLIP = {"eq": "eq", "ne": "ne", "gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}


# --- an independent reference: plain Python over dict rows ------------------------------------------------

def sql_guid(value: str) -> bytes:
    raw = uuid.UUID(value).bytes_le
    return bytes(raw[i] for i in (10, 11, 12, 13, 14, 15, 8, 9, 6, 7, 4, 5, 0, 1, 2, 3))


def like(text: str, pattern: str) -> bool:
    """SQL LIKE with % and _ (the generated patterns hold no '[')."""
    @cache
    def match(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(text)
        if pattern[j] == "%":
            return match(i, j + 1) or (i < len(text) and match(i + 1, j))
        return i < len(text) and (pattern[j] == "_" or pattern[j] == text[i]) and match(i + 1, j + 1)
    return match(0, 0)


def key(kind: str, value: Any, ordered: bool) -> Any:
    if kind == "string":
        return value.lower()
    if kind == "guid":
        return sql_guid(value) if ordered else value.lower()
    return value


def evaluate(node: tuple[Any, ...], row: dict[str, Any], negate: bool = False) -> bool:
    """Dataverse semantics: `not` pushed onto inverted conditions; ne matches null, nothing else does."""
    kind = node[0]
    if kind == "paren":
        return evaluate(node[1], row, negate)
    if kind == "not":
        return evaluate(node[1], row, not negate)
    if kind in ("and", "or"):
        left, right = evaluate(node[1], row, negate), evaluate(node[2], row, negate)
        return (left and right) if (kind == "and") != negate else (left or right)
    if kind == "bool":
        return bool(node[1]) != negate
    if kind in ("cmp", "colcmp"):
        col, op, other = node[1], INVERT[node[2]] if negate else node[2], node[3]
        value = row[col]
        if kind == "colcmp":
            return row[other] is not None and value is not None and OPS[op](value, row[other])
        if other is None:
            return value is None if op == "eq" else value is not None if op == "ne" else False
        if value is None:
            return op == "ne"
        ordered = op not in ("eq", "ne")
        return OPS[op](key(KINDS[col], value, ordered), key(KINDS[col], other, ordered))
    value = row[node[2]]
    if value is None:
        return False
    if kind == "func":
        text = node[3].lower()
        pattern = {"contains": f"%{text}%", "startswith": f"{text}%", "endswith": f"%{text}"}[node[1]]
        return like(value.lower(), pattern) != negate
    if kind == "in":
        col_kind = KINDS[node[2]]
        found = key(col_kind, value, False) in {key(col_kind, v, False) for v in node[3]}
        return found != (negate != (node[1] == "NotIn"))
    if kind == "between":
        return (node[3] <= value <= node[4]) != (negate != (node[1] == "NotBetween"))
    day: date = node[3]
    if isinstance(value, datetime):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        inside = {"On": start <= value < start + timedelta(days=1), "OnOrAfter": value >= start,
                  "OnOrBefore": value < start + timedelta(days=1)}[node[1]]
    else:
        inside = {"On": value == day, "OnOrAfter": value >= day, "OnOrBefore": value <= day}[node[1]]
    return inside != negate


# --- random filters and their OData text -----------------------------------------------------------------

@st.composite
def literal(draw: st.DrawFn, kind: str, value: Any) -> str:
    if kind == "string":
        return "'" + value.replace("'", "''") + "'"
    if kind == "guid":
        text = draw(st.sampled_from([value.lower(), value.upper()]))
        return draw(st.sampled_from([text, f"'{text}'"]))
    if kind == "bool":
        return "true" if value else "false"
    if kind == "decimal":
        return draw(st.sampled_from([repr(value), repr(value) + "M", repr(value) + "d"]))
    if kind == "date":
        return value.isoformat()
    if kind == "datetime":
        minutes = draw(st.sampled_from([0, -150, 330]))
        local = value.astimezone(timezone(timedelta(minutes=minutes)))
        text = local.strftime("%Y-%m-%dT%H:%M:%S") + draw(st.sampled_from(["", ".0000000", ".000"]))
        offset = local.strftime("%z")
        if value == datetime(value.year, value.month, value.day, tzinfo=UTC) and draw(st.booleans()):
            return value.date().isoformat()
        return text + ("Z" if minutes == 0 and draw(st.booleans()) else f"{offset[:3]}:{offset[3:]}")
    return str(value)


@st.composite
def comparison(draw: st.DrawFn) -> tuple[Any, ...]:
    col = draw(st.sampled_from(list(KINDS)))
    kind = KINDS[col]
    op = draw(st.sampled_from(["eq", "ne"] if kind == "bool" else list(OPS)))
    value = draw(st.none() | VALUES[kind])
    text = "null" if value is None else draw(literal(kind, value))
    flipped = draw(st.booleans())
    rendered = f"{text} {FLIP[op]} {col}" if flipped else f"{col} {op} {text}"
    return ("cmp", col, op, value, rendered)


@st.composite
def condition(draw: st.DrawFn) -> tuple[Any, ...]:
    choice = draw(st.sampled_from(["colcmp", "func", "in", "between", "on", "bool"]))
    if choice == "colcmp":
        op = draw(st.sampled_from(list(OPS)))
        return ("colcmp", "qty", op, "amount", f"qty {op} amount")
    if choice == "func":
        fn = draw(st.sampled_from(["contains", "startswith", "endswith"]))
        col = draw(st.sampled_from(["name", "city"]))
        text = draw(st.text(TEXT, max_size=3))
        return ("func", fn, col, text, f"{fn}({col},'{text.replace(chr(39), chr(39) * 2)}')")
    if choice == "in":
        col = draw(st.sampled_from(["name", "qty", "_ownerid_value"]))
        plain = VALUES[KINDS[col]].filter(lambda v: '"' not in str(v))
        values = draw(st.lists(plain, min_size=1, max_size=3))
        fn = draw(st.sampled_from(["In", "NotIn"]))
        array = "[" + ",".join(json.dumps(str(v), ensure_ascii=False) for v in values) + "]"
        text = f"Microsoft.Dynamics.CRM.{fn}(PropertyName='{col}',PropertyValues={array})"
        return ("in", fn, col, values, text)
    if choice == "between":
        col = draw(st.sampled_from(["qty", "amount"]))
        lo, hi = sorted(draw(st.lists(VALUES[KINDS[col]], min_size=2, max_size=2)))
        fn = draw(st.sampled_from(["Between", "NotBetween"]))
        return ("between", fn, col, lo, hi,
                f'Microsoft.Dynamics.CRM.{fn}(PropertyName=\'{col}\',PropertyValues=["{lo}","{hi}"])')
    if choice == "on":
        fn, col, day = (draw(st.sampled_from(["On", "OnOrAfter", "OnOrBefore"])),
                        draw(st.sampled_from(["createdon", "due"])), draw(st.sampled_from(DATES)))
        text = f"Microsoft.Dynamics.CRM.{fn}(PropertyName='{col}',PropertyValue='{day}')"
        return ("on", fn, col, day, text)
    value = draw(st.booleans())
    return ("bool", value, "true" if value else "false")


LEVEL = {"or": 1, "and": 2, "cmp": 3, "colcmp": 3}  # anything else is a primary (4): not > cmp > and > or


def render(node: tuple[Any, ...]) -> str:
    """OData text with only the parentheses precedence needs (plus those the tree asks for)."""
    def sub(child: tuple[Any, ...], least: int) -> str:
        text = render(child)
        return f"({text})" if LEVEL.get(child[0], 4) < least else text
    kind = node[0]
    if kind == "or":
        return f"{sub(node[1], 1)} or {sub(node[2], 2)}"
    if kind == "and":
        return f"{sub(node[1], 2)} and {sub(node[2], 3)}"
    if kind == "not":
        return f"not {sub(node[1], 4)}"
    if kind == "paren":
        return f"({render(node[1])})"
    return str(node[-1])


filters = st.recursive(
    comparison() | condition(),
    lambda inner: st.one_of(st.tuples(st.just("not"), inner), st.tuples(st.just("paren"), inner),
                            st.tuples(st.just("and"), inner, inner), st.tuples(st.just("or"), inner, inner)),
    max_leaves=6)
COLUMN_VALUES = {
    "name": VALUES["string"], "city": st.sampled_from(["", "Paris", "paris", "o'neil"]), "qty": VALUES["int"],
    "amount": VALUES["decimal"], "flag": VALUES["bool"], "createdon": VALUES["datetime"],
    "due": VALUES["date"], "_ownerid_value": st.sampled_from(OWNERS)}
rows = st.fixed_dictionaries({name: st.none() | strategy for name, strategy in COLUMN_VALUES.items()}
                             | {"thingid": st.uuids().map(str)})


def matches(text: str, data: list[dict[str, Any]]) -> list[int]:
    frame = pl.DataFrame(data, schema=SCHEMA).with_row_index("i")
    return frame.filter(filter_expr(THING, text))["i"].to_list()


_ONE_QUOTE = {**dict.fromkeys(COLUMN_VALUES), "name": "'", "thingid": "259f4329-e6f4-590b-9a16-4106cf6a659e"}


@settings(max_examples=400, deadline=None)
@given(filters, st.lists(rows, max_size=10))
# Found by this test on a helper's run: a JSON string "''" in PropertyValues is two quotes (JSON has no '' escape); the
# sandbox read it as the OData escape of one quote and matched a name of "'".
@example(("not", ("in", "In", "name", ["", "''"],
                  """Microsoft.Dynamics.CRM.In(PropertyName='name',PropertyValues=["","''"])""")), [_ONE_QUOTE])
def test_filter_matches_the_reference_evaluator(tree: tuple[Any, ...], data: list[dict[str, Any]]) -> None:
    text = render(tree)
    assert matches(text, data) == [i for i, row in enumerate(data) if evaluate(tree, row)], text


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc", "Cn")), max_size=8))
def test_string_literals_escape_quotes_and_compare_case_insensitively(value: str) -> None:
    # Characters this Python's Unicode tables leave unassigned (Cn) are skipped: polars may know their case.
    data = [{"name": v} for v in (value, value.upper(), value + "x", "O'Brien", None)]
    literal_text = value.replace("'", "''")
    names = [row["name"].lower() if row["name"] is not None else None for row in data]
    want = [i for i, name in enumerate(names) if name == value.lower()]
    assert matches(f"name eq '{literal_text}'", data) == want
    assert matches(f"'{literal_text}' eq name", data) == want
    escaped = "".join(f"[{c}]" if c in "%_[" else c for c in literal_text)  # LIKE wildcards taken literally
    contained = [i for i, name in enumerate(names) if name is not None and value.lower() in name]
    assert matches(f"contains(name,'{escaped}')", data) == contained


@pytest.mark.parametrize(("text", "expected"), [
    ("qty eq 1 or qty eq 2 and flag eq false", [0, 1]),  # and binds tighter than or
    ("(qty eq 1 or qty eq 2) and flag eq false", [1]),
    ("not contains(name,'a') and qty eq 2", [1, 2]),  # not binds tighter than and; not-like skips nulls
    ("name ne 'a'", [1, 2, 3]),  # ne matches the null name
    ("not (name eq 'a')", [1, 2, 3]),
    ("not (qty gt 1)", [0]),  # becomes le, which the null qty does not match
    ("contains(name,'[ab]')", [0, 1]),
    ("contains(name,'[^ab]')", [2]),
    ("startswith(name,'[a-b]')", [0, 1]),
    ("contains(name,'[')", [2]),
    ("endswith(name,'%')", [0, 1, 2]),
])
def test_precedence_nulls_and_wildcards(text: str, expected: list[int]) -> None:
    data: list[dict[str, Any]] = [
        {"name": "a", "qty": 1, "flag": True}, {"name": "B", "qty": 2, "flag": False},
        {"name": "x[", "qty": 2, "flag": True}, {"name": None, "qty": None, "flag": None}]
    assert matches(text, data) == expected


def test_not_binds_tighter_than_a_comparison() -> None:
    with pytest.raises(ODataError) as err:
        matches("not qty eq 1", [])
    assert err.value.message == ("A unary operator with an incompatible type was detected. Found operand "
                                 "type 'Edm.Int32' for operator kind 'Not'.")


# --- the whole request -----------------------------------------------------------------------------------

def test_parse_query_collects_every_option() -> None:
    lead = TABLES["lead"]
    query = parse_query(lead, [("$select", "fullname, statecode,_parentaccountid_value,fullname"),
                               ("$filter", "statecode eq @s"), ("@s", "0"),
                               ("$orderby", "createdon desc,fullname"), ("$count", "true"), ("$top", "10"),
                               ("$skiptoken", "abc")],
                        'odata.include-annotations="OData.Community.Display.V1.FormattedValue",odata.maxpagesize=9')
    assert query.select == ("fullname", "statecode", "_parentaccountid_value")
    assert query.orderby == (("createdon", True), ("fullname", False))
    assert (query.count, query.skiptoken, query.page_size) == (True, "abc", 9)
    assert query.top is None, "$top is ignored with odata.maxpagesize ([PD] page-results.md)"
    assert query.prefer.annotations.wanted == {"OData.Community.Display.V1.FormattedValue"}
    assert query.preference_applied == (
        'odata.include-annotations="OData.Community.Display.V1.FormattedValue"', "odata.maxpagesize=9")
    assert (query.formatted_values, query.lookup_annotations) == (True, False)
    assert query.page_size_requested
    assert query.filter is not None and not query.track_changes
    frame = pl.DataFrame({"statecode": [0, 1, None]}, schema={"statecode": pl.Int32})
    assert frame.filter(query.filter).height == 1


MIXED = "*,-Microsoft.Dynamics.CRM.*,Microsoft.Dynamics.CRM.lookuplogicalname"


@pytest.mark.parametrize(("header", "page_size", "track", "applied", "included", "excluded"), [
    (None, 5000, False, "", [], ["OData.Community.Display.V1.FormattedValue"]),
    ("odata.maxpagesize=2", 2, False, "odata.maxpagesize=2", [], []),
    ("odata.maxpagesize=5001", 5000, False, "", [], []),  # ignored beyond 5000 ([PD] page-results.md)
    ('odata.maxpagesize="0"', 5000, False, "", [], []),
    ("ODATA.TRACK-CHANGES, odata.maxpagesize=5000", 5000, True, "odata.track-changes,odata.maxpagesize=5000",
     [], []),
    ('odata.include-annotations="*"', 5000, False, 'odata.include-annotations="*"',
     ["OData.Community.Display.V1.FormattedValue", "Microsoft.Dynamics.CRM.lookuplogicalname"], []),
    ('odata.include-annotations="Microsoft.Dynamics.CRM.*"', 5000, False,
     'odata.include-annotations="Microsoft.Dynamics.CRM.*"', ["Microsoft.Dynamics.CRM.lookuplogicalname"],
     ["OData.Community.Display.V1.FormattedValue"]),
    (f'odata.include-annotations="{MIXED}"', 5000, False, f'odata.include-annotations="{MIXED}"',
     ["OData.Community.Display.V1.FormattedValue", "Microsoft.Dynamics.CRM.lookuplogicalname"],
     ["Microsoft.Dynamics.CRM.associatednavigationproperty"]),
])
def test_prefer_header(header: str | None, page_size: int, track: bool, applied: str, included: list[str],
                       excluded: list[str]) -> None:
    prefer = parse_prefer(header)
    assert (prefer.page_size, prefer.track_changes, ",".join(prefer.applied)) == (page_size, track, applied)
    assert all(prefer.annotations.includes(t) for t in included)
    assert not any(prefer.annotations.includes(t) for t in excluded)


LEAD, OPPORTUNITY, AUDIT = TABLES["lead"], TABLES["opportunity"], TABLES["audit"]
EXPAND_UNSUPPORTED = "The query option $expand is not supported by the sandbox."
NOT_NAVIGATION = ("Property '{}' on type 'Microsoft.Dynamics.CRM.{}' is not a navigation property or complex "
                  "property. Only navigation properties can be expanded.")
UNTRACKED = dataclasses.replace(LEAD, change_tracking=False)  # a table whose ChangeTrackingEnabled is false
NOT_FOUND = "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.{}'."
CT = "The \"{}\" query parameter isn't supported when Change Tracking is enabled."
ERRORS: list[tuple[Table, list[tuple[str, str]], str | None, int, str, str]] = [
    (LEAD, [("$select", "fullname,x")], None, 400, "0x0", NOT_FOUND.format("x", "lead")),
    (LEAD, [("$select", "parentaccountid")], None, 400, "0x0", NOT_FOUND.format("parentaccountid", "lead")),
    (AUDIT, [("$select", "changedata")], None, 400, "0x0", NOT_FOUND.format("changedata", "audit")),
    (LEAD, [("$orderby", "nosuch desc")], None, 400, "0x0", NOT_FOUND.format("nosuch", "lead")),
    (LEAD, [("$filter", "nosuch eq 1")], None, 400, "0x0", NOT_FOUND.format("nosuch", "lead")),
    (LEAD, [("$skip", "10")], None, 400, "0x80060888", "Skip Clause is not supported in CRM"),
    (LEAD, [("$foo", "1")], None, 400, "0x0", "The query parameter $foo is not supported"),
    (LEAD, [("utm_source", "x")], None, 400, "0x0", "The query parameter utm_source is not supported"),
    (LEAD, [("$Filter", "x")], None, 400, "0x0", "The query parameter $Filter is not supported"),
    (LEAD, [("$top", "1"), ("$top", "2")], None, 400, "0x0",
     "Query option '$top' was specified more than once, but it must be specified at most once."),
    (LEAD, [("$top", "-1")], None, 400, "0x0",
     "Invalid value '-1' for $top query option found. The $top query option requires a non-negative integer "
     "value."),
    (LEAD, [("$count", "True")], None, 400, "0x0", "'True' is not a valid count option."),
    (LEAD, [], "odata.maxpagesize=ten", 400, "0x0", "Invalid value 'ten' for odata.maxpagesize preference "
     "header found. The odata.maxpagesize preference header requires an integer value."),
    (LEAD, [], 'odata.include-annotations="FormattedValue"', 400, "0x0", "The pattern 'FormattedValue' is "
     "not a valid pattern to match an annotation. It must contain at least one '.' separating the namespace "
     "and the name segments of an annotation."),
    (LEAD, [("$filter", "statecode eq 0")], "odata.track-changes", 400, "0x80060888", CT.format("$filter")),
    (LEAD, [("$orderby", "fullname")], "odata.track-changes", 400, "0x80060888", CT.format("$orderby")),
    (LEAD, [("$expand", "parentaccountid")], "odata.track-changes", 400, "0x80060888", CT.format("$expand")),
    (LEAD, [("$top", "5"), ("$deltatoken", "1%2101%2f01%2f2024%2000%3a00%3a00")], None, 400, "0x80060888",
     CT.format("$top")),
    (UNTRACKED, [], "odata.track-changes", 400, "0x80072491", "Entity lead isn't enabled for change tracking."),
    (LEAD, [("$expand", "parentaccountid")], None, 400, "0x80060888", EXPAND_UNSUPPORTED),
    # $expand names are bound first ([PD] webapi/web-api-navigation-properties.md: a lookup's navigation property
    # is named as the lookup, one per table for a multi-table lookup); only then is the option refused.
    (OPPORTUNITY, [("$expand", "customerid_account($select=name;$expand=createdby($select=fullname)),"
                               "customerid_contact,ownerid,transactioncurrencyid,originatingleadid")],
     None, 400, "0x80060888", EXPAND_UNSUPPORTED),
    (AUDIT, [("$expand", "callinguserid,userid($select=fullname)")], None, 400, "0x80060888", EXPAND_UNSUPPORTED),
    (LEAD, [("$expand", "nosuch")], None, 400, "0x0", NOT_FOUND.format("nosuch", "lead")),
    (OPPORTUNITY, [("$expand", "parentaccountid($filter=name eq 'a,b'),customerid")], None, 400, "0x0",
     NOT_FOUND.format("customerid", "opportunity")),  # a multi-table lookup has no navigation of its own name
    (AUDIT, [("$expand", "changedata")], None, 400, "0x0", NOT_FOUND.format("changedata", "audit")),
    (OPPORTUNITY, [("$expand", "name")], None, 400, "0x0", NOT_NAVIGATION.format("name", "opportunity")),
    (OPPORTUNITY, [("$expand", "_parentaccountid_value")], None, 400, "0x0",
     NOT_NAVIGATION.format("_parentaccountid_value", "opportunity")),
    (LEAD, [("$select", "x"), ("$expand", "nosuch")], None, 400, "0x0", NOT_FOUND.format("x", "lead")),
    (LEAD, [("$apply", "groupby((statecode))")], None, 400, "0x80060888",
     "The query option $apply is not supported by the sandbox."),
    # syntax errors: Microsoft.OData.Core texts and positions (the first is [PD] filter-rows.md verbatim)
    (LEAD, [("$filter", "lastname eq 'O'Bryan'")], None, 400, "0x0",
     "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''."),
    (LEAD, [("$filter", "lastname eq 'O")], None, 400, "0x0",
     "There is an unterminated string literal at position 14 in 'lastname eq 'O'."),
    (LEAD, [("$filter", "lastname eq")], None, 400, "0x0",
     "Expression expected at position 11 in 'lastname eq'."),
    (LEAD, [("$filter", "(lastname eq 'a'")], None, 400, "0x0",
     "')' or operator expected at position 16 in '(lastname eq 'a''."),
    (LEAD, [("$filter", "contains(lastname,'a'")], None, 400, "0x0",
     "')' or ',' expected at position 21 in 'contains(lastname,'a''."),
    (LEAD, [("$filter", "lastname eq 'a' lastname")], None, 400, "0x0",
     "Syntax error at position 24 in 'lastname eq 'a' lastname'."),
    (LEAD, [("$filter", "lastname eq 'a' & x")], None, 400, "0x0",
     "Syntax error: character '&' is not valid at position 16 in 'lastname eq 'a' & x'."),
    (LEAD, [("$filter", "lastname eq '😀' x")], None, 400, "0x0",  # .NET positions count UTF-16 units
     "Syntax error at position 18 in 'lastname eq '😀' x'."),
    (LEAD, [("$filter", "estimatedamount gt 1.")], None, 400, "0x0",
     "A digit was expected at position 21 in 'estimatedamount gt 1.'."),
    (LEAD, [("$orderby", "lastname sideways")], None, 400, "0x0",
     "Syntax error at position 17 in 'lastname sideways'."),
    (LEAD, [("$filter", "statecode eq '0'")], None, 400, "0x0", "A binary operator with incompatible types "
     "was detected. Found operand types 'Edm.Int32' and 'Edm.String' for operator kind 'Equal'."),
    (LEAD, [("$filter", "lastname")], None, 400, "0x0",
     "The $filter expression must evaluate to a single boolean value."),
    (LEAD, [("$filter", "substringof('a',lastname)")], None, 400, "0x0", "An unknown function with name "
     "'substringof' was found. This may also be a function import or a key lookup on a navigation property, "
     "which is not allowed."),
    (LEAD, [("$filter", "Microsoft.Dynamics.CRM.In(PropertyName='lastname',PropertyValues=['O'Brian'])")],
     None, 400, "0x0", "Found an unbalanced bracket expression."),
    (LEAD, [("$filter", "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)"),
            ("@p1", "'lastname'"), ("@p2", "['OBrian','O'Brian']")],
     None, 400, "0x0",  # [PD] webapi/query/filter-rows.md, "Manage single quotes"
     "Invalid JSON. A comma character ',' was expected in scope 'Array'. Every two elements in an array and "
     "properties of an object must be separated by commas."),
    (LEAD, [("$filter", "Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=3)")], None,
     400, "0x80060888",
     "The query function 'Microsoft.Dynamics.CRM.LastXDays' is not supported by the sandbox."),
    (LEAD, [("$filter", "parentaccountid/name eq 'x'")], None, 400, "0x80060888",
     "A property path or lambda operator ('/') in $filter is not supported by the sandbox."),
]


@pytest.mark.parametrize(("table", "params", "prefer", "status", "code", "message"), ERRORS,
                         ids=[f"{i}:{p[:1]}" for i, (_, p, *_rest) in enumerate(ERRORS)])
def test_rejections(table: Table, params: list[tuple[str, str]], prefer: str | None, status: int, code: str,
                    message: str) -> None:
    with pytest.raises(ODataError) as err:
        parse_query(table, params, prefer)
    assert (err.value.status, err.value.code, err.value.message) == (status, code, message)
    assert err.value.body() == {"error": {"code": code, "message": message}}


def test_aliases_and_quoted_guids() -> None:
    owner = OWNERS[1]
    data = [{"_ownerid_value": owner, "name": "O'Brian"}, {"_ownerid_value": OWNERS[0], "name": "x"}]
    assert matches(f"_ownerid_value eq '{owner.upper()}'", data) == [0]
    frame = pl.DataFrame(data, schema=SCHEMA)
    query = parse_query(THING, [("$filter", "Microsoft.Dynamics.CRM.In(PropertyName=@p1,PropertyValues=@p2)"),
                                ("@p1", "'name'"), ("@p2", '["OBrian","o\'brian"]')], None)
    assert query.filter is not None and frame.filter(query.filter)["name"].to_list() == ["O'Brian"]
    assert matches("name eq @missing", data) == []  # an alias without a value is null


@pytest.mark.parametrize(("text", "expected"), [
    ("", None), ("*", None), ("name,*", None), (" name , qty,name", ("name", "qty")),
    ("_ownerid_value", ("_ownerid_value",)),
])
def test_select_forms(text: str, expected: tuple[str, ...] | None) -> None:
    assert parse_query(THING, [("$select", text)], None).select == expected


@pytest.mark.parametrize("text", ["name,", ",name", "name,,qty"])
def test_select_with_an_empty_item_is_a_syntax_error(text: str) -> None:
    with pytest.raises(ODataError, match="^Syntax error at position"):
        parse_query(THING, [("$select", text)], None)


fragments = st.sampled_from([
    "name", "qty", "eq", "ne", "gt", "and", "or", "not", "(", ")", ",", "'a'", "'", "''", "1", "-", "2.5",
    "1e", "@p", "[", "]", "\"", "contains", "contains(", "null", "true", "2023-04-07", "2023-04-07T21:59:01Z",
    "00000000-0000-0000-0000-000000000001", " ", "Microsoft.Dynamics.CRM.In(", "PropertyName=",
    "PropertyValues=", "/", "$", "{", "😀"])


@settings(max_examples=500, deadline=None)
@given(st.lists(fragments, max_size=12).map(" ".join) | st.text(max_size=30))
def test_any_filter_text_compiles_or_is_a_400(text: str) -> None:
    try:
        expr = filter_expr(THING, text, {"@p": "'a'"})
    except ODataError as err:
        assert err.status == 400 and err.code in ("0x0", "0x80060888")
    else:
        matches(text, [{"name": "a", "qty": 1}, {}])  # and it runs
        assert isinstance(expr, pl.Expr)


def test_a_long_generated_or_chain_compiles_flat() -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(1, 3001)]
    data = [{"thingid": i} for i in ids[::100]] + [{"thingid": str(uuid.UUID(int=5000))}]
    assert matches(" or ".join(f"thingid eq {i}" for i in ids), data) == list(range(30))
    assert matches("not (" + " or ".join(f"thingid eq {i}" for i in ids) + ")", data) == [30]


@pytest.mark.parametrize("text", ["(" * 101 + "qty eq 1" + ")" * 101, "not " * 101 + "flag"])
def test_nesting_beyond_the_limit_is_a_400(text: str) -> None:
    with pytest.raises(ODataError, match="^Recursion depth exceeded allowed limit.$"):
        filter_expr(THING, text)
    assert matches("(" * 90 + "qty eq 1" + ")" * 90, [{"qty": 1}]) == [0]
