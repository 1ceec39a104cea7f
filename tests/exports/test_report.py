"""`l2c report`: the page renders in Debian's chromium (/usr/bin/chromium, driven by playwright) with no error and
no request, its process map and KPI tiles hold the numbers polars computes independently from the event log, the
map is laid out without overlaps, and every value from the data is escaped. Also the maker of docs/report.png:
`python -m tests.exports.test_report DATA_DIR docs/report.png`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pytest

from config.settings import Settings, load_settings
from exports.report import MAP_MAX_ACTIVITIES, MAP_MAX_EDGES, MAP_MIN_SHARE, write_report
from exports.report_svg import process_map
from ground.errors import ConfigError
from tests.exports.conftest import Built

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless in a container: no sandbox, GPU or background traffic; playwright gives each launch
# a fresh profile. Never `playwright install`: that downloads a browser.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1400
EVIL = """<script>alert("l2c")</script> & 'quoted' <b>"""


@contextmanager
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = ("the report's browser test needs Debian's chromium at /usr/bin/chromium: "
                   "`sudo apt-get install -y --no-install-recommends chromium` (.ci/run installs it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(data_dir: Path, png: Path) -> None:
    """docs/report.png: the report of `data_dir`, full page at 1400 px wide."""
    with tempfile.TemporaryDirectory() as tmp, chromium() as browser:
        html = write_report(load_settings().model_copy(update={"data_dir": data_dir}), Path(tmp) / "report.html")
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(html.as_uri())
        page.screenshot(path=str(png), full_page=True)


@dataclass
class Opened:
    page: Page
    problems: list[str]  # console errors and warnings, page errors, requests that left the file


@pytest.fixture(scope="module")
def opened(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opened]:
    out = write_report(built.settings, tmp_path_factory.mktemp("report") / "report.html")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("request", lambda r: problems.append(f"request: {r.url}") if r.url != out.as_uri() else None)
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        yield Opened(page, problems)


def _days(later: str, earlier: str) -> pl.Expr:
    return (pl.col(later) - pl.col(earlier)).dt.total_microseconds() / 86_400e6


def _first(activity: str | list[str], how: str = "min") -> pl.Expr:
    acts = [activity] if isinstance(activity, str) else activity
    stamps = pl.col("timestamp").filter(pl.col("activity").is_in(acts))
    return stamps.max() if how == "max" else stamps.min()


def _expected_kpis(built: Built) -> dict[str, float]:
    log, cases = built.log, built.cases
    closed = cases.filter(pl.col("case_type") == "opportunity", pl.col("outcome").is_in(["Won", "Lost"]))
    sales_cycle = (log.filter(pl.col("case_type") == "opportunity").join(closed.select("case_id"), on="case_id")
                   .group_by("case_id").agg(created=_first("Opportunity Created"),
                                            closed=_first(["Opportunity Won", "Opportunity Lost"], "max"))
                   .drop_nulls().select(_days("closed", "created").median()).item())
    lead_to_opportunity = (log.filter(pl.col("case_type") == "opportunity").group_by("case_id")
                           .agg(captured=_first("Lead Captured"), created=_first("Opportunity Created"))
                           .drop_nulls().select(_days("created", "captured").median()).item())
    approval = (log.filter(pl.col("object_type") == "quote").group_by("object_id")
                .agg(created=_first("Quote Created"), activated=_first("Quote Activated"))
                .drop_nulls().select(_days("activated", "created").median() * 24).item())
    leads = (log.filter(pl.col("object_type") == "lead").group_by("object_id")
             .agg(captured=(pl.col("activity") == "Lead Captured").any(),
                  qualified=(pl.col("activity") == "Lead Qualified").any()))
    return {"events": log.height, "cases": log.get_column("case_id").n_unique(),
            "sales_cycle_median_days": sales_cycle, "lead_to_opportunity_median_days": lead_to_opportunity,
            "quote_approval_median_hours": approval,
            "lead_conversion_rate": leads.select(pl.col("qualified").sum() / pl.col("captured").sum()).item()}


def _map_activities(built: Built) -> pl.DataFrame:
    """The activities the map must show, by the rule the report states, counted from the event log."""
    n_cases = built.log.get_column("case_id").n_unique()
    return (built.log.group_by("activity").agg(events=pl.len())
            .filter(pl.col("events") >= MAP_MIN_SHARE * n_cases)
            .sort(["events", "activity"], descending=[True, False]).head(MAP_MAX_ACTIVITIES))


def _directly_follows(built: Built) -> pl.DataFrame:
    return (built.log.sort("case_id", "timestamp", "activity", "event_id")
            .with_columns(to=pl.col("activity").shift(-1).over("case_id")).drop_nulls("to")
            .group_by(pl.col("activity").alias("from"), "to").agg(edges=pl.len()))


def test_the_page_renders_without_errors_or_requests(opened: Opened) -> None:
    assert opened.problems == []
    assert opened.page.title() == "Lead-to-cash process report"
    assert opened.page.locator("#process-map").count() == 1


def test_the_map_has_a_node_per_frequent_activity_with_its_count(opened: Opened, built: Built) -> None:
    expected = dict(_map_activities(built).iter_rows())
    nodes = opened.page.locator("#process-map .pm-node")
    drawn = {nodes.nth(i).get_attribute("data-activity"): int(nodes.nth(i).get_attribute("data-count") or -1)
             for i in range(nodes.count())}
    assert drawn == expected
    hidden = opened.page.locator("#map-hidden")
    assert hidden.get_attribute("data-hidden-activities") == str(built.log.get_column("activity").n_unique()
                                                                  - len(expected))


def test_the_map_draws_the_most_frequent_transitions_with_their_counts(opened: Opened, built: Built) -> None:
    dfg = _directly_follows(built)
    counts = {(a, b): n for a, b, n in dfg.iter_rows()}
    edges = opened.page.locator("#process-map .pm-edge")
    drawn = {(edges.nth(i).get_attribute("data-from"), edges.nth(i).get_attribute("data-to")):
             int(edges.nth(i).get_attribute("data-count") or -1) for i in range(edges.count())}
    assert drawn and all(counts[pair] == n for pair, n in drawn.items())  # type: ignore[index]
    shown = _map_activities(built).get_column("activity").to_list()
    top = (dfg.filter(pl.col("from").is_in(shown), pl.col("to").is_in(shown))
           .sort(["edges", "from", "to"], descending=[True, False, False]).head(MAP_MAX_EDGES))
    assert set(top.select("from", "to").iter_rows()) <= set(drawn)
    hidden = opened.page.locator("#map-hidden").get_attribute("data-hidden-transitions")
    assert hidden == str(dfg.height - len(drawn))


def test_the_kpi_tiles_hold_the_numbers_polars_computes(opened: Opened, built: Built) -> None:
    for key, value in _expected_kpis(built).items():
        raw = opened.page.locator(f'[data-kpi="{key}"]').get_attribute("data-value")
        assert raw and float(raw) == pytest.approx(value, rel=1e-9), key
    tiles = opened.page.locator(".kpi[data-kpi]")
    assert tiles.count() == 10
    assert all(tiles.nth(i).get_attribute("data-value") for i in range(10))  # the sandbox org answers all ten


def test_the_map_is_laid_out_top_down_without_overlaps(opened: Opened) -> None:
    nodes = opened.page.locator("#process-map .pm-node")
    boxes: dict[str, Any] = {}
    for i in range(nodes.count()):
        box = nodes.nth(i).bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        assert 0 <= box["x"] and box["x"] + box["width"] <= WIDTH
        boxes[nodes.nth(i).get_attribute("data-activity") or ""] = box
    for (a, p), (b, q) in itertools.combinations(boxes.items(), 2):
        apart = (p["x"] + p["width"] <= q["x"] or q["x"] + q["width"] <= p["x"]
                 or p["y"] + p["height"] <= q["y"] or q["y"] + q["height"] <= p["y"])
        assert apart, f"{a} overlaps {b}"
    flow = [boxes[a]["y"] for a in ("Lead Captured", "Opportunity Created", "Quote Created", "Sales Order Created")
            if a in boxes]
    assert len(flow) >= 3 and flow == sorted(flow)


def _altered(built: Built, root: Path, *statements: str) -> Settings:
    """Settings for a copy of the built outputs, with `statements` run on its l2c.duckdb ($evil is EVIL)."""
    copy = root / "data"
    copy.mkdir()
    for name in ("event_log.parquet", "cases.parquet", "l2c.duckdb"):
        shutil.copy(built.data_dir / name, copy / name)
    with duckdb.connect(str(copy / "l2c.duckdb")) as con:
        for sql in statements:
            con.execute(sql, {"evil": EVIL} if "$evil" in sql else None)
    return built.settings.model_copy(update={"data_dir": copy})


def test_values_from_the_data_are_escaped(built: Built, tmp_path: Path) -> None:
    settings = _altered(built, tmp_path, "UPDATE event_log SET activity = $evil WHERE activity = 'Lead Disqualified'",
                        "UPDATE cases SET lead_source = $evil", "UPDATE quotes SET owner = $evil",
                        "UPDATE accounts SET account = $evil",
                        "INSERT INTO quality_issues VALUES ($evil, $evil, 'lead', 'x', 'y', $evil)")
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    out.write_text("the previous report")
    write_report(settings, out)
    page = out.read_text("utf-8")
    assert EVIL not in page and "<script>alert" not in page and page.count("<script>") == 1  # the report's own
    assert f'data-activity="{escape(EVIL)}"' in page  # the map
    for where in ('<td class="nowrap">', "<td>", '<td class="example">'):  # reps, sources, quality
        assert f"{where}{escape(EVIL)}</td>" in page, where
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # replaced whole, no temporary left


def test_an_org_without_events_still_gets_a_page(built: Built, tmp_path: Path) -> None:
    tables = ("event_log", "cases", "quotes", "orders", "invoices", "accounts", "quality_issues")
    settings = _altered(built, tmp_path, *(f"DELETE FROM {table}" for table in tables))
    page = write_report(settings, tmp_path / "report.html").read_text("utf-8")
    assert "No events" in page and 'data-kpi="events" data-value="0"' in page
    assert page.count('data-value=""') == 10  # every tile, none made up


def test_the_map_svg_is_well_formed_and_escaped_for_crafted_frames() -> None:
    odd = 'Approve <"R&D"> \'budget\''
    activities = pl.DataFrame({
        "activity": ["Start", odd, "Finish", "Ünïcødé step"], "events": [10, 8, 10, 3], "cases": [10, 6, 10, 3],
        "position": [1.0, 2.0, 3.0, 2.0], "object_type": ["lead", "<x>", "invoice", None]})
    transitions = pl.DataFrame({
        "from_activity": ["Start", odd, odd, "Finish", "Start", "Ünïcødé step"],
        "to_activity": [odd, "Finish", odd, odd, "Ünïcødé step", "Finish"],
        "edges": [8, 6, 2, 2, 3, 3], "cases": [6, 6, 2, 2, 3, 3],
        "median_wait_hours": [1.5, 72.0, None, 10.0, 0.0, 5.0], "p90_wait_hours": [2.0, 90.0, None, 12.0, 0.0, 6.0]})
    svg = ET.fromstring(process_map(activities, transitions, all_cases=10))
    ns = "{http://www.w3.org/2000/svg}"
    nodes = {g.get("data-activity"): g for g in svg.iter(f"{ns}g") if "pm-node" in (g.get("class") or "")}
    assert set(nodes) == set(activities.get_column("activity"))
    assert nodes[odd].get("class") == "pm-node k-other" and nodes["Start"].get("data-count") == "10"
    edges = {(g.get("data-from"), g.get("data-to")): g for g in svg.iter(f"{ns}g") if "pm-edge" in (g.get("class")
                                                                                                      or "")}
    assert len(edges) == transitions.height
    assert "pm-back" in (edges[("Finish", odd)].get("class") or "")  # against the flow: dashed
    assert "pm-back" not in (edges[("Start", odd)].get("class") or "")
    rects = [[float(r.get(k) or 0) for k in ("x", "y", "width", "height")]
             for g in nodes.values() for r in g.iter(f"{ns}rect") if r.get("class") is None]
    for (x1, y1, w1, h1), (x2, y2, w2, h2) in itertools.combinations(rects, 2):
        assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
    assert "No events" in process_map(activities.clear(), transitions.clear(), all_cases=0)


def test_a_report_before_any_transform_says_what_to_do(built: Built, tmp_path: Path) -> None:
    settings: Settings = built.settings.model_copy(update={"data_dir": tmp_path})
    with pytest.raises(ConfigError, match="l2c run"):
        write_report(settings, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
