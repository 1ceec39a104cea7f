"""Paging cookies, delta tokens and keyset paging of the emulator: documented examples and properties."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, unquote_plus

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.odata import ODataError
from sandbox.paging import (
    PagingCookie,
    cookie_value,
    decode_deltatoken,
    decode_history_cookie,
    decode_skiptoken,
    delta_link,
    delta_position,
    encode_delta_skiptoken,
    encode_deltatoken,
    encode_history_cookie,
    encode_skiptoken,
    keyset_predicate,
    next_link,
    page_skiptoken,
    sort_frame,
    sort_keys,
    sqlserver_guid_key,
    tracking_start,
)
from sandbox.schema import Column, Table

# [PD] webapi/query/page-results.md, first nextLink
DOC_SKIPTOKEN = (
    "%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie%2520page%253d%25221%2522%253e%253ccontactid"
    "%2520last%253d%2522%257bD5026A4D-D01C-ED11-B83E-000D3A572421%257d%2522%2520first%253d%2522%257b49B0BE2E-"
    "D01C-ED11-B83E-000D3A572421%257d%2522%2520%252f%253e%253c%252fcookie%253e%22%20istracking=%22False%22%20/%3E"
)
# [PD] fetchxml/page-results.md, the @Microsoft.Dynamics.CRM.fetchxmlpagingcookie annotation
DOC_FETCHXML_COOKIE = (
    '<cookie pagenumber="2" pagingcookie="%253ccookie%2520page%253d%25221%2522%253e%253cfullname%2520last'
    "%253d%2522Susanna%2520Stubberod%2520%2528sample%2529%2522%2520first%253d%2522Yvonne%2520McKay%2520%2528sample"
    "%2529%2522%2520%252f%253e%253ccontactid%2520last%253d%2522%257b70BF4D48-34CB-ED11-B596-0022481D68CD%257d"
    "%2522%2520first%253d%2522%257b49B0BE2E-D01C-ED11-B83E-000D3A572421%257d%2522%2520%252f%253e%253c%252fcookie"
    '%253e" istracking="False" />'
)
DOC_DELTATOKEN = "919042%2108%2f22%2f2017%2008%3a10%3a44"  # [PD] use-change-tracking-...-external-systems.md

THING = Table("thing", "things", "thingid", "name", 10001, (
    Column("thingid", "Uniqueidentifier", 1),
    Column("name", "String", 2),
    Column("amount", "Money", 3),
    Column("createdon", "DateTime", 4),
    Column("ownerid", "Owner", 5, targets=("systemuser",)),
))
SCHEMA = pl.Schema({"thingid": pl.Utf8(), "name": pl.Utf8(), "amount": pl.Float64(),
                    "createdon": pl.Datetime("us", "UTC"), "_ownerid_value": pl.Utf8()})


def after(ordered: pl.DataFrame, order: list[tuple[str, bool]], cookie: PagingCookie) -> pl.DataFrame:
    """The rows of `ordered` after the cookie's, as the store finds them (its sort keys, then the predicate)."""
    return ordered.filter(sort_keys(ordered, THING, order).select(keyset_predicate(THING, order, cookie)).to_series())


def swap_hex_case(text: str, upper: bool) -> str:
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m[0].upper() if upper else m[0].lower(), text)


def sql_order_key(guid: str) -> bytes:
    """SqlGuid.CompareTo: bytes 10-15, 8-9, 6-7, 4-5, 0-3 of the .NET (little-endian) byte layout."""
    raw = uuid.UUID(guid).bytes_le
    return bytes(raw[i] for i in (10, 11, 12, 13, 14, 15, 8, 9, 6, 7, 4, 5, 0, 1, 2, 3))


# --- the documented tokens -------------------------------------------------------------------------------

def test_documented_skiptoken_is_reproduced_byte_for_byte() -> None:
    token = encode_skiptoken(2, "contactid", {"contactid": "d5026a4d-d01c-ed11-b83e-000d3a572421"},
                             {"contactid": "49b0be2e-d01c-ed11-b83e-000d3a572421"})
    assert token == DOC_SKIPTOKEN


@pytest.mark.parametrize("form", ["raw", "framework-decoded", "upper-hex", "lower-hex"])
def test_documented_skiptoken_decodes(form: str) -> None:
    raw = {"raw": DOC_SKIPTOKEN, "upper-hex": swap_hex_case(DOC_SKIPTOKEN, True),
           "lower-hex": swap_hex_case(DOC_SKIPTOKEN, False),
           "framework-decoded": dict(parse_qsl("$skiptoken=" + DOC_SKIPTOKEN))["$skiptoken"]}[form]
    assert decode_skiptoken(raw) == PagingCookie(
        page_number=2,
        columns={"contactid": ("{D5026A4D-D01C-ED11-B83E-000D3A572421}",
                               "{49B0BE2E-D01C-ED11-B83E-000D3A572421}")},
        istracking=False, inner_page=1)


def test_documented_fetchxml_cookie_decodes_and_is_reproduced() -> None:
    cookie = decode_skiptoken(DOC_FETCHXML_COOKIE)
    assert cookie.columns == {
        "fullname": ("Susanna Stubberod (sample)", "Yvonne McKay (sample)"),
        "contactid": ("{70BF4D48-34CB-ED11-B596-0022481D68CD}", "{49B0BE2E-D01C-ED11-B83E-000D3A572421}")}
    last = {"fullname": "Susanna Stubberod (sample)", "contactid": "70bf4d48-34cb-ed11-b596-0022481d68cd"}
    first = {"fullname": "Yvonne McKay (sample)", "contactid": "49b0be2e-d01c-ed11-b83e-000d3a572421"}
    token = encode_skiptoken(2, "contactid", last, first, ["fullname"])
    inner = re.search(r'pagingcookie="([^"]*)"', DOC_FETCHXML_COOKIE)
    assert inner is not None and f"pagingcookie=%22{inner[1]}%22" in token


def test_documented_deltatoken_round_trips() -> None:
    when = datetime(2017, 8, 22, 8, 10, 44, tzinfo=UTC)
    assert encode_deltatoken(919042, when) == DOC_DELTATOKEN
    assert decode_deltatoken(DOC_DELTATOKEN) == (919042, when)


@pytest.mark.parametrize("raw", [
    "919042%2108%2F22%2F2017%2008%3A10%3A44",  # upper-case hex
    "919042!08/22/2017 08:10:44",  # decoded by a framework
    "919042!08%2f22%2f2017%2008%3a10%3a44",  # partly decoded
    "919042%2108%2f22%2f2017+08%3a10%3a44",  # form-encoded space
    "919042%252108%252f22%252f2017%252008%253a10%253a44",  # encoded once more
])
def test_deltatoken_variants_decode(raw: str) -> None:
    assert decode_deltatoken(raw) == (919042, datetime(2017, 8, 22, 8, 10, 44, tzinfo=UTC))


@given(st.integers(0, 2**63 - 1), st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)), st.booleans())
def test_deltatoken_round_trip(version: int, when: datetime, upper: bool) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    token = encode_deltatoken(version, when)
    assert re.fullmatch(r"\d+%21\d\d%2f\d\d%2f\d{4}%20\d\d%3a\d\d%3a\d\d", token)
    assert decode_deltatoken(swap_hex_case(token, upper)) == (version, when)
    assert decode_deltatoken(unquote_plus(token)) == (version, when)


# --- malformed tokens ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["", "abc", "919042", "919042!13/40/2017 08:10:44", "x!08/22/2017 08:10:44",
                                 "919042!08/22/2017", "919042%2108%2f22%2f2017%2025%3a10%3a44"])
def test_malformed_deltatoken_is_a_400(raw: str) -> None:
    with pytest.raises(ODataError) as err:
        decode_deltatoken(raw)
    assert (err.value.status, err.value.code) == (400, "0x80060888")
    assert err.value.message == "The $deltatoken value is not a valid delta token."


@pytest.mark.parametrize("raw", [
    "", "garbage", "%3Ccookie%20/%3E", DOC_SKIPTOKEN.replace("pagenumber=%222%22", "pagenumber=%22x%22"),
    DOC_SKIPTOKEN.replace("pagingcookie", "paging"),
    "%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22abc%22%20/%3E",
    unquote_plus(unquote_plus(DOC_SKIPTOKEN)),  # decoded twice: the inner quotes break the outer element
    '<cookie pagenumber="²" pagingcookie="%3ccookie%20page%3d%221%22%3e%3c%2fcookie%3e" />',
    '<cookie pagenumber="2" pagingcookie="%253ccookie%2520page%253d%25221%2522%253e%253ca%2520last%253d%2522'
    '%2526%252399999999999%253b%2522%2520%252f%253e%253c%252fcookie%253e" />',  # &#99999999999;
])
def test_malformed_skiptoken_is_a_400(raw: str) -> None:
    with pytest.raises(ODataError) as err:
        decode_skiptoken(raw)
    assert (err.value.status, err.value.code, err.value.message) == (
        400, "0x80060888", "The $skiptoken value is not a valid paging cookie.")


# --- skiptoken round trip --------------------------------------------------------------------------------

values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False),
    st.uuids().map(str), st.dates(), st.datetimes(timezones=st.just(UTC)),
    st.text(st.characters(codec="utf-8"), max_size=12),
)


@given(st.lists(values, min_size=1, max_size=4), st.lists(values, min_size=1, max_size=4), st.uuids(),
       st.uuids(), st.integers(2, 10_000), st.booleans(),
       st.sampled_from(["raw", "decoded", "upper", "lower"]))
def test_skiptoken_round_trip(lasts: list[object], firsts: list[object], last_id: uuid.UUID,
                              first_id: uuid.UUID, page: int, tracking: bool, form: str) -> None:
    names = [f"c{i}" for i in range(min(len(lasts), len(firsts)))]
    last = {**dict(zip(names, lasts, strict=False)), "id": str(last_id)}
    first = {**dict(zip(names, firsts, strict=False)), "id": str(first_id)}
    token = encode_skiptoken(page, "id", last, first, names, tracking)
    assert re.fullmatch(r"[A-Za-z0-9%=/._~-]+", token), "the token must survive a URL untouched"  # RFC 3986 unreserved
    raw = {"raw": token, "decoded": unquote_plus(token), "upper": swap_hex_case(token, True),
           "lower": swap_hex_case(token, False)}[form]
    cookie = decode_skiptoken(raw)
    assert (cookie.page_number, cookie.inner_page, cookie.istracking) == (page, page - 1, tracking)
    assert cookie.columns == {n: (cookie_value(last[n]), cookie_value(first[n])) for n in [*names, "id"]}
    assert cookie.columns["id"][0] == "{" + str(last_id).upper() + "}"


def test_links_replace_tokens_and_keep_the_rest_verbatim() -> None:
    base = "https://org.crm.dynamics.com/api/data/v9.2/contacts"
    assert next_link(base, "$select=fullname&%24skiptoken=old&$filter=name%20eq%20%27a%27", "NEW") == (
        base + "?$select=fullname&$filter=name%20eq%20%27a%27&$skiptoken=NEW")
    assert delta_link(base, "$select=name&$skiptoken=x&$deltatoken=y", DOC_DELTATOKEN) == (
        base + "?$select=name&$deltatoken=" + DOC_DELTATOKEN)
    assert next_link(base, "", "T") == base + "?$skiptoken=T"


# --- SQL Server order and keyset paging ------------------------------------------------------------------

@given(st.lists(st.uuids().map(str), min_size=2, max_size=20, unique=True))
def test_guid_key_sorts_like_sql_server(guids: list[str]) -> None:
    upper = [g.upper() for g in guids]
    keyed = pl.DataFrame({"g": upper}).sort(sqlserver_guid_key(pl.col("g")))["g"].to_list()
    assert keyed == sorted(upper, key=sql_order_key)


def test_primary_key_order_is_not_lexicographic() -> None:
    low_last_bytes = "ffffffff-ffff-ffff-ffff-000000000001"  # sorts first on SQL Server: bytes 10-15 lead
    high_last_bytes = "00000000-0000-0000-0000-000000000002"
    frame = pl.DataFrame({"thingid": [high_last_bytes, low_last_bytes], "name": ["a", "b"],
                          "amount": [1.0, 2.0], "createdon": [None, None], "_ownerid_value": [None, None]},
                         schema=SCHEMA)
    assert sort_frame(frame, THING, [])["thingid"].to_list() == [low_last_bytes, high_last_bytes]
    assert sorted([high_last_bytes, low_last_bytes]) == [high_last_bytes, low_last_bytes]


def test_keyset_after_null_and_descending() -> None:
    frame = pl.DataFrame({"thingid": [str(uuid.UUID(int=i)) for i in range(1, 6)],
                          "name": [None, "b", "A", None, "a"], "amount": [1.0, None, 2.0, 3.0, 4.0],
                          "createdon": [None] * 5, "_ownerid_value": [None] * 5}, schema=SCHEMA)
    order = [("name", True)]  # descending: 'b', then 'A'/'a' (equal ignoring case) by id, then the NULLs
    ordered = sort_frame(frame, THING, order)
    assert ordered["name"].to_list() == ["b", "A", "a", None, None]
    token = page_skiptoken(THING, order, 2, ordered.head(3))
    rest = after(ordered, order, decode_skiptoken(token))
    assert rest["name"].to_list() == [None, None]
    token = page_skiptoken(THING, order, 3, ordered.head(4))  # the cookie's last name is null
    assert decode_skiptoken(token).columns["name"][0] is None
    assert after(ordered, order, decode_skiptoken(token))["thingid"].to_list() == (
        ordered["thingid"].to_list()[4:])


def test_keyset_rejects_a_cookie_from_another_order() -> None:
    frame = pl.DataFrame({"thingid": [str(uuid.uuid4())], "name": ["x"], "amount": [1.0], "createdon": [None],
                          "_ownerid_value": [None]}, schema=SCHEMA)
    token = page_skiptoken(THING, [], 2, frame)
    with pytest.raises(ODataError):
        keyset_predicate(THING, [("name", False)], decode_skiptoken(token))


names = st.sampled_from([None, "a", "A", "b", "Bé", "o'b", "<&>", "z"])
amounts = st.sampled_from([None, -1.5, 0.0, 2.25, 1e300])
times = st.sampled_from([None, datetime(2023, 4, 7, 21, 59, 1, tzinfo=UTC),
                         datetime(2023, 4, 7, 21, 59, 1, 500, tzinfo=UTC), datetime(1999, 1, 1, tzinfo=UTC)])
owners = st.sampled_from([None, "0a2a9e2c-0000-0000-0000-000000000001",
                           "ffffffff-0000-0000-0000-000000000000"])
rows = st.fixed_dictionaries({"thingid": st.uuids().map(str), "name": names, "amount": amounts,
                              "createdon": times, "_ownerid_value": owners})
orders = st.lists(st.tuples(st.sampled_from(["name", "amount", "createdon", "_ownerid_value"]),
                            st.booleans()), max_size=3, unique_by=lambda pair: pair[0])


@settings(max_examples=150, deadline=None)
@given(st.lists(rows, max_size=25, unique_by=lambda r: r["thingid"]), orders, st.integers(1, 6),
       st.lists(st.lists(rows, max_size=3), max_size=10), st.booleans())
def test_keyset_paging_never_loses_or_repeats_a_row(start: list[dict[str, object]],
                                                     order: list[tuple[str, bool]], page_size: int,
                                                     inserts: list[list[dict[str, object]]],
                                                     framework_decoded: bool) -> None:
    table = pl.DataFrame(start, schema=SCHEMA)
    seen: list[object] = []
    cookie: PagingCookie | None = None
    for step in range(len(start) + len(inserts) * 3 + 2):
        ordered = sort_frame(table, THING, order)
        rest = ordered if cookie is None else after(ordered, order, cookie)
        page = rest.head(page_size)
        seen += page["thingid"].to_list()
        if page.height < page_size:
            break
        token = page_skiptoken(THING, order, step + 2, page)
        cookie = decode_skiptoken(unquote_plus(token) if framework_decoded else token)
        arriving = inserts[step] if step < len(inserts) else []
        new = [r for r in arriving if r["thingid"] not in table["thingid"]]
        table = pl.concat([table, pl.DataFrame(new, schema=SCHEMA)]) if new else table
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert {r["thingid"] for r in start} <= set(seen), "a row present from the start was never returned"


def test_cookie_values_are_typed_back_exactly() -> None:
    when = datetime(2023, 4, 7, 21, 59, 1, 123456, tzinfo=UTC)
    assert cookie_value(when) == "2023-04-07T21:59:01.123456Z"
    assert cookie_value(when.replace(microsecond=0, tzinfo=None)) == "2023-04-07T21:59:01Z"  # naive = UTC
    assert cookie_value(when.astimezone(timezone(timedelta(hours=2)))) == "2023-04-07T21:59:01.123456Z"
    assert cookie_value(date(2023, 4, 7)) == "2023-04-07"
    assert cookie_value(0.1) == "0.1" and float(cookie_value(1 / 3) or "") == 1 / 3
    assert cookie_value(True) == "True" and cookie_value(None) is None
    frame = pl.DataFrame({"thingid": [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))], "name": ["a", "a"],
                          "amount": [1 / 3, 1 / 3], "createdon": [when, when],
                          "_ownerid_value": [None, None]}, schema=SCHEMA)
    order = [("amount", False), ("createdon", True)]
    token = page_skiptoken(THING, order, 2, frame.head(1))
    later = after(frame, order, decode_skiptoken(token))
    assert later["thingid"].to_list() == [str(uuid.UUID(int=2))], "exact ties fall to the primary key"


@given(st.sampled_from([0, 1]), st.integers(0, 2**62), st.integers(0, 2**62),
       st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC)), st.booleans())
def test_delta_skiptoken_round_trip(phase: int, version: int, start_version: int, start_time: datetime,
                                    framework_decoded: bool) -> None:
    start = (start_version, start_time.replace(microsecond=0))
    token = encode_delta_skiptoken(phase, version, start)
    cookie = decode_skiptoken(unquote_plus(token) if framework_decoded else token)
    assert cookie.istracking and delta_position(cookie) == (phase, version)
    assert tracking_start(cookie) == start


def test_delta_position_and_tracking_start_reject_an_ordinary_cookie() -> None:
    with pytest.raises(ODataError):
        delta_position(decode_skiptoken(DOC_SKIPTOKEN))
    with pytest.raises(ODataError):
        tracking_start(decode_skiptoken(DOC_SKIPTOKEN))


@given(st.integers(1, 1000), st.integers(0, 10**9), st.booleans())
def test_history_cookie_round_trip(page: int, start: int, encoded: bool) -> None:
    cookie = encode_history_cookie(page, start)
    assert cookie.startswith(f'<cookie page="{page}">')
    assert decode_history_cookie(quote(cookie) if encoded else cookie) == start


@pytest.mark.parametrize("cookie", ["", "abc", '<cookie page="1"><auditid last="{X}" /></cookie>',
                                    '<cookie page="1"><offset last="-1" /></cookie>'])
def test_malformed_history_cookie_is_a_400(cookie: str) -> None:
    with pytest.raises(ODataError) as err:
        decode_history_cookie(cookie)
    assert err.value.status == 400


@settings(max_examples=300)
@given(st.text(max_size=60) | st.integers(0, 400).map(lambda at: DOC_SKIPTOKEN[:at] + DOC_SKIPTOKEN[at + 7:]))
def test_any_skiptoken_decodes_or_is_a_400(raw: str) -> None:
    try:
        cookie = decode_skiptoken(raw)
    except ODataError as err:
        assert err.status == 400
    else:
        assert cookie.page_number >= 0


@given(st.text(max_size=40) | st.builds(lambda s: DOC_DELTATOKEN[:s], st.integers(0, 40)))
def test_any_deltatoken_decodes_or_is_a_400(raw: str) -> None:
    try:
        decode_deltatoken(raw)
    except ODataError as err:
        assert err.status == 400
