"""`l2c export --format xes`: pm4py reads back every event, trace, time and resource of the event log, in order; a
DFG discovered from the file equals the one counted from the log; the document declares the standard extensions
and carries the case attributes on its traces; awkward names are escaped; small batches give the same bytes.

Expected values come from `built.log` / `built.cases` (or a frame written here), never from the exporter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pm4py
import polars as pl
import pytest

from exports import xes
from ground.errors import ConfigError
from tests.exports.conftest import CASE_ATTRIBUTES, ORDER, Built, data_dir_with, log_dfg, synthetic_log

NS = {"x": "http://www.xes-standard.org/"}








def read_xes(path: Path, variant: str | None = None) -> pl.DataFrame:
    frame: pd.DataFrame = pm4py.read_xes(str(path), variant=variant, show_progress_bar=False)
    return pl.from_pandas(frame)


@pytest.fixture(scope="module")
def exported(built: Built, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("xes") / "log.xes"
    return out, xes.export(built.settings, out)


def test_pm4py_reads_every_event_and_case(built: Built, exported: tuple[Path, Any]) -> None:
    path, done = exported
    frame = read_xes(path)
    assert frame.height == built.log.height == done.events
    assert frame.get_column("case:concept:name").n_unique() == built.log.get_column("case_id").n_unique() == done.cases


@pytest.mark.parametrize("variant", [None, "iterparse"])  # pm4py's default (chunk regex) and its lxml parser
def test_traces_carry_the_log_in_order(built: Built, exported: tuple[Path, Any], variant: str | None) -> None:
    frame = read_xes(exported[0], variant).select(
        pl.col("case:concept:name").alias("case_id"), pl.col("concept:name").alias("activity"),
        pl.col("time:timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias("timestamp"),
        pl.col("org:resource").alias("resource"), "event_id", "object_type", "object_id", "source",
        pl.col("lifecycle:transition").alias("transition"),
    )
    expected = built.log.sort(ORDER).select(
        "case_id", "activity", "timestamp", "resource", "event_id", "object_type", "object_id", "source",
        pl.lit("complete").alias("transition"),
    )
    assert frame.equals(expected)


def test_dfg_discovered_from_the_file_equals_the_log(built: Built, exported: tuple[Path, Any]) -> None:
    dfg, starts, ends = pm4py.discover_dfg(read_xes(exported[0]).to_pandas())
    expected_dfg, expected_starts, expected_ends = log_dfg(built.log)
    assert dict(dfg) == expected_dfg
    assert (dict(starts), dict(ends)) == (expected_starts, expected_ends)


def test_document_declares_extensions_globals_and_case_attributes(built: Built, exported: tuple[Path, Any]) -> None:
    root = ET.parse(exported[0]).getroot()
    assert root.tag == "{http://www.xes-standard.org/}log"
    Decimal(root.attrib["xes.version"])  # xs:decimal, as the IEEE 1849-2016 schema types it
    extensions = {e.get("prefix"): (e.get("name"), e.get("uri")) for e in root.findall("x:extension", NS)}
    assert extensions == {
        "concept": ("Concept", "http://www.xes-standard.org/concept.xesext"),
        "time": ("Time", "http://www.xes-standard.org/time.xesext"),
        "lifecycle": ("Lifecycle", "http://www.xes-standard.org/lifecycle.xesext"),
        "org": ("Organizational", "http://www.xes-standard.org/org.xesext"),
    }
    globals_ = {g.get("scope"): {a.get("key") for a in g} for g in root.findall("x:global", NS)}
    assert globals_ == {"trace": {"concept:name"},
                        "event": {"concept:name", "time:timestamp", "lifecycle:transition"}}
    for classifier in root.findall("x:classifier", NS):  # a classifier's keys must be global event attributes
        assert set(classifier.get("keys", "").split()) <= globals_["event"]
    assert "concept:name" in {c.get("keys") for c in root.findall("x:classifier", NS)}

    traces: dict[str, dict[str, tuple[str, object]]] = {}
    for trace in root.findall("x:trace", NS):
        attributes: dict[str, tuple[str, object]] = {
            str(a.get("key")): (a.tag.split("}")[1], a.get("value")) for a in trace.findall("./*[@key]")}
        if "amount" in attributes:  # compare the number, not its spelling
            attributes["amount"] = ("float", float(str(attributes["amount"][1])))
        traces[str(attributes.pop("concept:name")[1])] = attributes
    assert len(traces) == built.cases.height
    for case in built.cases.select("case_id", *CASE_ATTRIBUTES).iter_rows(named=True):
        expected: dict[str, tuple[str, object]] = {
            k: ("string", v) for k, v in case.items() if k not in ("case_id", "amount") and v is not None}
        if case["amount"] is not None:
            expected["amount"] = ("float", float(case["amount"]))
        assert traces[case["case_id"]] == expected, case["case_id"]


def test_names_are_escaped_and_illegal_characters_replaced(built: Built, tmp_path: Path) -> None:
    t0 = datetime(2025, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC)
    nasty = 'R&D <"quoted"> \'single\''
    rows = [
        {"event_id": "e1", "case_id": "case&1", "case_type": "lead", "activity": nasty, "timestamp": t0,
         "resource": "Tab\there\nnewline\rcr", "owner": "bell\x07and\x00nul", "account": "Ünal > \ufffe",
         "amount": Decimal("12.5000"), "object_type": "lead", "object_id": "x", "source": "audit"},
        {"event_id": "e2", "case_id": "case&1", "case_type": "lead", "activity": "Lead Qualified",
         "timestamp": t0.replace(minute=45), "resource": None, "owner": "bell\x07and\x00nul",
         "account": "Ünal > \ufffe", "amount": Decimal("12.5000"), "object_type": "lead", "object_id": "x",
         "source": "audit"},
    ]
    settings = data_dir_with(tmp_path / "data", synthetic_log(built.log.schema, rows), built.settings)
    out = tmp_path / "nasty.xes"
    xes.export(settings, out)

    root = ET.parse(out).getroot()  # a strict XML 1.0 parser: control characters would make it fail
    trace = root.find("x:trace", NS)
    assert trace is not None
    values = {a.get("key"): a.get("value") for a in trace if a.get("key")}
    assert values["concept:name"] == "case&1"
    assert values["owner"] == "bell\ufffdand\ufffdnul"  # characters XML 1.0 forbids become U+FFFD
    assert values["account"] == "Ünal > \ufffd"
    assert "lead_source" not in values and "stage" not in values  # nulls are omitted, not written empty
    events = [{a.get("key"): a.get("value") for a in event} for event in trace.findall("x:event", NS)]
    assert events[0]["concept:name"] == nasty
    assert events[0]["org:resource"] == "Tab\there\nnewline\rcr"  # whitespace survives attribute normalisation
    assert events[0]["time:timestamp"] == "2025-03-01T09:30:15.250+00:00"
    assert "org:resource" not in events[1]

    frame = read_xes(out, "iterparse")
    assert frame.get_column("concept:name").to_list() == [nasty, "Lead Qualified"]
    assert frame.get_column("org:resource").to_list() == ["Tab\there\nnewline\rcr", None]


def test_small_batches_give_the_same_file(built: Built, exported: tuple[Path, Any], tmp_path: Path) -> None:
    batch = 7
    # the test means something only if some case straddles a batch boundary
    cases = built.log.get_column("case_id")
    assert any(cases[i - 1] == cases[i] for i in range(batch, built.log.height, batch))
    small = tmp_path / "small.xes"
    done = xes.export(built.settings, small, batch_size=batch)
    assert small.read_bytes() == exported[0].read_bytes()
    assert (done.events, done.cases) == (exported[1].events, exported[1].cases)


def test_one_event_per_batch_and_an_empty_log(built: Built, tmp_path: Path) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [{"event_id": f"e{i}", "case_id": f"c{i // 3}", "case_type": "lead", "activity": f"A{i % 3}",
             "timestamp": t0.replace(hour=i), "resource": "Ana"} for i in range(7)]
    settings = data_dir_with(tmp_path / "data", synthetic_log(built.log.schema, rows), built.settings)
    one, whole = tmp_path / "one.xes", tmp_path / "whole.xes"
    assert xes.export(settings, one, batch_size=1).cases == 3
    xes.export(settings, whole)
    assert one.read_bytes() == whole.read_bytes()
    assert [len(t.findall("x:event", NS)) for t in ET.parse(one).getroot().findall("x:trace", NS)] == [3, 3, 1]

    empty = data_dir_with(tmp_path / "empty", synthetic_log(built.log.schema, []), built.settings)
    done = xes.export(empty, tmp_path / "empty.xes")
    assert (done.events, done.cases) == (0, 0)
    assert ET.parse(tmp_path / "empty.xes").getroot().find("x:trace", NS) is None


def test_without_an_event_log_it_says_what_to_run(built: Built, tmp_path: Path) -> None:
    settings = built.settings.model_copy(update={"data_dir": tmp_path})
    with pytest.raises(ConfigError, match="l2c run"):
        xes.export(settings, tmp_path / "log.xes")
    assert not (tmp_path / "log.xes").exists()
