"""The Link's CSV dialect (docs/LINK.md D3) and value formats (D5), as the reader parses them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest

from connector.link_csv import complete_end, parse
from connector.link_values import coerce
from ground.errors import SourceUnavailable


def test_a_record_ends_at_a_newline_outside_quotes_and_a_half_written_tail_waits() -> None:
    data = b'a,"two\nlines",1\nb,"x ""q""",2\nc,"half\nwrit'
    end = complete_end(data)
    assert data[:end].endswith(b'2\n')
    assert complete_end(b'a,"open\n') == 0
    frame = parse(data[:end], ["id", "text", "n"], "t/2025.csv")
    assert frame.to_dicts() == [{"id": "a", "text": "two\nlines", "n": "1"}, {"id": "b", "text": 'x "q"', "n": "2"}]


def test_short_rows_are_padded_a_trailing_comma_ignored_a_bom_stripped_and_empty_quoted_is_empty_text() -> None:
    data = b'\xef\xbb\xbfa,"",1,\nb\n\nc,,\n'
    frame = parse(data, ["id", "text", "n"], "t/2025.csv")
    assert frame.to_dicts() == [{"id": "a", "text": "", "n": "1"}, {"id": "b", "text": None, "n": None},
                                {"id": "c", "text": None, "n": None}]


def test_a_row_longer_than_model_json_names_the_file_and_its_row() -> None:
    with pytest.raises(SourceUnavailable, match=r"t/2025\.csv: row 12 has more fields than the 2 columns"):
        parse(b"a,1\nb,2,3\n", ["id", "n"], "t/2025.csv", first_row=10)


def test_every_d5_format_is_read_as_utc() -> None:
    raw = pl.DataFrame({
        "t": ["6/28/2021 4:34:35 PM", "2018-05-25T16:21:09.0000000+00:00", "2021-06-25T16:21:12Z",
              "2021-06-25T18:21:12.5+02:00", "2021-06-25", None],
        "d": ["2025-04-30T00:00:00Z", "2025-04-30", None, None, None, None],
        "b": ["True", "false", "1", "0", "FALSE", None],
        "m": ["1200.50", "-3", "0.0001", None, None, ""],
    })
    typed = coerce(raw, {"t": "timestamp", "d": "date", "b": "bool", "m": "money"}, "t/2025.csv")
    assert typed.get_column("t").to_list() == [
        datetime(2021, 6, 28, 16, 34, 35, tzinfo=UTC), datetime(2018, 5, 25, 16, 21, 9, tzinfo=UTC),
        datetime(2021, 6, 25, 16, 21, 12, tzinfo=UTC), datetime(2021, 6, 25, 16, 21, 12, 500000, tzinfo=UTC),
        datetime(2021, 6, 25, tzinfo=UTC), None]
    assert typed.get_column("d").to_list()[:2] == [date(2025, 4, 30), date(2025, 4, 30)]
    assert typed.get_column("b").to_list() == [True, False, True, False, False, None]
    assert typed.get_column("m").to_list()[:3] == [Decimal("1200.5000"), Decimal("-3.0000"), Decimal("0.0001")]
    assert typed.schema["m"] == pl.Decimal(38, 4)


@pytest.mark.parametrize(("value", "kind"), [("12.34567", "money"), ("soon", "timestamp"), ("yes", "bool"),
                                             ("1.5", "int32"), ("2025-13-01", "date")])
def test_a_value_that_does_not_convert_exactly_names_file_row_and_column(value: str, kind: str) -> None:
    raw = pl.DataFrame({"c": [None, value]}, schema={"c": pl.Utf8})
    with pytest.raises(SourceUnavailable, match=rf"lead/2025\.csv: row 7, column c: '{value}' is not a valid"):
        coerce(raw, {"c": kind}, "lead/2025.csv", first_row=5)
