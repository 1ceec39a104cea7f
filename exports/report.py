"""`l2c report`: one self-contained HTML page about the lead-to-cash process, read from the transform's l2c.duckdb
(never from Dataverse). `load` runs the named queries of exports/report.sql into a `ReportData` of small frames;
`render` turns that into HTML with the page skeleton, style and script of exports/report.html, .css and .js
inlined (a Content-Security-Policy forbids any fetch, so the file works offline and leaks nothing); the process map
is drawn by exports/report_svg.py. Every value from the data is escaped where it enters the markup; elements carry
stable ids and data attributes (`data-kpi` and `data-value` with the raw number, `data-activity`, `data-count`)
so tests and scripts can read the numbers back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any

import duckdb
import polars as pl

from config.settings import Settings
from config.tables import load_tables
from exports.common import outputs
from exports.report_svg import kind_class, kind_css, process_map, wait
from ground.errors import L2CError
from ground.files import write_out

MAP_MIN_SHARE = 0.02  # an activity is on the map when it happens at least once per 50 cases on average...
MAP_MAX_ACTIVITIES = 24  # ...and is among the most frequent
MAP_MAX_EDGES = 32  # the most frequent transitions (and one for an activity none of them touches)
SLOW_MIN_SUPPORT = 5  # a transition seen fewer times says nothing about waiting

_HERE = Path(__file__).parent
_QUERIES = dict(re.findall(r"^-- name: (\w+)\n(.*?)(?=^-- name: |\Z)", (_HERE / "report.sql").read_text("utf-8"),
                           flags=re.S | re.M))


@dataclass(frozen=True)
class Kpi:
    key: str  # data-kpi
    title: str
    activity: str  # the tile wears the colour of this activity's object type
    value: float | None
    unit: str  # "%" (value is a fraction), "days" or "hours"
    sub: str  # plain text, escaped when rendered


@dataclass(frozen=True)
class ReportData:
    generated_at: datetime
    header: dict[str, Any]  # events, cases, activities, opportunities, first_at, last_at, policy_pct
    kpis: list[Kpi]
    activities: pl.DataFrame  # every activity, `shown` marks the map's
    transitions: pl.DataFrame  # the map's edges
    all_transitions: int
    slowest: pl.DataFrame
    variants: pl.DataFrame
    rework: pl.DataFrame
    conversion: pl.DataFrame
    discount_reps: pl.DataFrame
    discount_quotes: pl.DataFrame
    quality: pl.DataFrame
    # (object type, what the report calls it) of the object model's case and member tables, in declaration order:
    # each has a colour on the map, the tiles and the variants.
    kinds: tuple[tuple[str, str], ...] = ()


def write_report(settings: Settings, out: Path) -> Path:
    _, _, db = outputs(settings)
    model = load_tables(settings.tables_file)
    kinds = tuple((t.name, t.label) for t in model.modelled if t.role != "context")
    page = render(replace(load(db), kinds=kinds)).encode("utf-8")
    return write_out(out, lambda handle: handle.write(page))  # the old report or the new one, never half


def load(db: Path) -> ReportData:
    # The transform replaces l2c.duckdb whole (temp + rename), so it never locks a reader out; what does is a
    # program holding the file open for writing, or a damaged file.
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        raise L2CError(f"cannot read {db}: {exc}", hint="close any program that has it open for writing (a DuckDB "
                       "session), or rebuild it with `l2c transform --full`") from exc
    with con:
        con.execute("SET enable_progress_bar = false")  # drawn on stdout, terminal or not
        con.execute("SET TimeZone = 'UTC'")

        def query(name: str, **params: object) -> pl.DataFrame:
            return con.sql(_QUERIES[name], params=params or None).pl()

        activities = query("activities", min_share=MAP_MIN_SHARE, max_activities=MAP_MAX_ACTIVITIES)
        shown = activities.filter("shown").get_column("activity").to_list()
        return ReportData(
            generated_at=datetime.now(UTC),
            header=query("header").row(0, named=True),
            kpis=_kpis(query("kpis").row(0, named=True)),
            activities=activities,
            transitions=query("transitions", shown=shown, max_edges=MAP_MAX_EDGES),
            all_transitions=int(query("all_transitions").item()),
            slowest=query("slowest", min_support=SLOW_MIN_SUPPORT),
            variants=query("variants"),
            rework=query("rework"),
            conversion=query("conversion"),
            discount_reps=query("discount_reps"),
            discount_quotes=query("discount_quotes"),
            quality=query("quality"),
        )


# Formatting for people: thousands separators, one decimal for days and hours, "–" for no value.
def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _int(n: object) -> str:
    return "–" if _missing(n) else f"{int(n):,}"  # type: ignore[call-overload]


def _dec(x: object, digits: int = 1) -> str:
    return "–" if _missing(x) else f"{float(x):,.{digits}f}"  # type: ignore[arg-type]


def _pct(x: object, digits: int = 1) -> str:
    return "–" if _missing(x) else f"{float(x) * 100:,.{digits}f}%"  # type: ignore[arg-type]


def _kpis(k: dict[str, Any]) -> list[Kpi]:
    return [
        Kpi("lead_conversion_rate", "Lead conversion", "Lead Captured", k["conversion_rate"], "%",
            f"qualified, of {_int(k['conversion_leads'])} leads · {_pct(k['conversion_won'])} end in a won deal"),
        Kpi("lead_to_opportunity_median_days", "Lead → opportunity", "Lead Captured", k["lead_to_opportunity_days"],
            "days",
            f"median · p90 {_dec(k['lead_to_opportunity_p90'])} d · {_int(k['lead_to_opportunity_n'])} "
            "opportunities from leads"),
        Kpi("sales_cycle_median_days", "Sales cycle", "Opportunity Created", k["sales_cycle_days"], "days",
            f"median, created → closed · won {_dec(k['sales_cycle_won'])} d, lost {_dec(k['sales_cycle_lost'])} d "
            f"· {_int(k['sales_cycle_n'])} closed"),
        Kpi("quote_approval_median_hours", "Quote approval", "Quote Created", k["approval_hours"], "hours",
            f"median, created → activated · above policy {wait(k['approval_above'])}, no discount "
            f"{wait(k['approval_none'])}"),
        Kpi("discount_above_policy_share", "Discount vs policy", "Discount Applied", k["discount_share"], "%",
            f"{_int(k['discount_above'])} of {_int(k['discount_quotes'])} quotes above the "
            f"{_dec(k['policy_pct'], 0)}% policy"),
        Kpi("rework_share", "Rework", "Opportunity Created", k["rework_share"], "%",
            f"{_int(k['rework_cases'])} of {_int(k['opportunities'])} opportunities revised a quote, went back a "
            "stage or reopened"),
        Kpi("quote_to_order_median_days", "Quote → order", "Sales Order Created", k["quote_to_order_days"], "days",
            f"median, quote accepted → order · p90 {_dec(k['quote_to_order_p90'])} d · "
            f"{_int(k['quote_to_order_n'])} orders"),
        Kpi("order_fulfilment_median_days", "Order fulfilment", "Order Fulfilled", k["fulfilment_days"], "days",
            f"median, order → fulfilled · {_int(k['fulfilment_fulfilled'])} of {_int(k['fulfilment_orders'])} "
            f"fulfilled, {_int(k['fulfilment_canceled'])} canceled"),
        Kpi("fulfilment_to_invoice_median_days", "Fulfilment → invoice", "Invoice Created", k["invoicing_days"],
            "days",
            f"median · {_int(k['invoicing_n'])} orders invoiced, {_int(k['invoicing_missing'])} fulfilled but not "
            "invoiced"),
        Kpi("dso_median_days", "Invoice → payment", "Payment Received", k["dso_days"], "days",
            f"median days to pay · amount-weighted {_dec(k['dso_weighted'])} d · {_pct(k['dso_late'], 0)} of "
            f"{_int(k['dso_paid'])} paid late"),
    ]


def render(data: ReportData) -> str:
    kinds = dict(data.activities.select("activity", "object_type").iter_rows())
    known = [kind for kind, _ in data.kinds]
    sections = [
        _header(data),
        '<section class="kpis" aria-label="Key figures">'
        + "".join(_tile(i, k, kind_class(kinds.get(k.activity), known)) for i, k in enumerate(data.kpis, 1))
        + "</section>",
        _map_section(data),
        _card("variants", "Top variants", _variant_note(data.variants),
              _variants(data.variants, {a: kind_class(kind, known) for a, kind in kinds.items()}), wide=True),
        _card("discounts", "Discounts against policy",
              f"A quote is above policy when its discount exceeds {_dec(data.header['policy_pct'], 0)}%. Every "
              "revision of a quote counts; the share is of each rep's quotes.",
              f'<div class="split"><div id="discount-reps"><h3>By rep</h3>{_discount_reps(data.discount_reps)}</div>'
              f'<div id="discount-quotes"><h3>Quotes furthest above policy</h3>'
              f"{_discount_quotes(data.discount_quotes)}</div></div>", wide=True),
        _card("quality", "Data quality", "What the transform's checks found (details: table quality_issues).",
              _quality(data.quality), wide=True),
        f'<footer class="foot">l2c lead-to-cash report · generated {data.generated_at:%Y-%m-%d %H:%M} UTC from '
        "l2c.duckdb · all times UTC</footer>",
    ]
    template = Template((_HERE / "report.html").read_text("utf-8"))
    css = (_HERE / "report.css").read_text("utf-8").replace("/* kinds */\n", kind_css(known))
    return template.substitute(title="Lead-to-cash process report", css=css,
                               script=(_HERE / "report.js").read_text("utf-8"), body="\n".join(sections))


def _header(data: ReportData) -> str:
    h = data.header
    first, last = h["first_at"], h["last_at"]
    period = "no events" if first is None else f"{first.day} {first:%b %Y} – {last.day} {last:%b %Y}"
    stats = [("cases", "Cases", h["cases"], _int(h["cases"])), ("events", "Events", h["events"], _int(h["events"])),
             ("opportunities", "Opportunities", h["opportunities"], _int(h["opportunities"])),
             ("activities", "Activities", h["activities"], _int(h["activities"]))]
    chips = "".join(f'<div class="stat" data-kpi="{key}" data-value="{value}"><b>{text}</b><span>{label}</span></div>'
                    for key, label, value, text in stats)
    return (f'<header class="top"><div><p class="eyebrow">Process mining · Dataverse</p>'
            f"<h1>Lead-to-cash process report</h1>"
            f'<p class="meta"><span id="period">{escape(period)}</span> · generated '
            f'<time id="generated" datetime="{data.generated_at:%Y-%m-%dT%H:%M:%SZ}">'
            f"{data.generated_at:%d %b %Y, %H:%M} UTC</time></p></div>"
            f'<div class="stats">{chips}</div></header>')


def _tile(step: int, k: Kpi, kind: str) -> str:
    raw = "" if _missing(k.value) else repr(float(k.value))  # type: ignore[arg-type]
    if k.unit == "%":
        number, unit = _pct(k.value)[:-1] if not _missing(k.value) else "–", "%"
    else:
        number, unit = _dec(k.value), k.unit
    return (f'<article class="kpi {kind}" data-kpi="{k.key}" data-value="{raw}">'
            f'<p class="kpi-title"><span class="kpi-step">{step:02d}</span>{escape(k.title)}</p>'
            f'<p class="kpi-value">{number}<span class="kpi-unit{" pct" if unit == "%" else ""}">{unit}</span></p>'
            f'<p class="kpi-sub">{escape(k.sub)}</p></article>')


def _card(key: str, title: str, note: str, body: str, *, wide: bool = False, tag: str = "h2") -> str:
    return (f'<section class="card{" wide" if wide else ""}" id="{key}"><div class="card-head"><{tag}>{title}</{tag}>'
            f'<p class="note">{note}</p></div>{body}</section>')


def _map_section(data: ReportData) -> str:
    acts = data.activities
    shown = acts.filter("shown")
    hidden = acts.filter(~pl.col("shown")).get_column("activity").to_list()
    hidden_edges = data.all_transitions - data.transitions.height
    note = (f'Showing <b id="map-activities">{shown.height}</b> of {acts.height} activities (those that happen '
            f"at least once per {round(1 / MAP_MIN_SHARE)} cases, at most {MAP_MAX_ACTIVITIES}) and "
            f'<b id="map-transitions">{data.transitions.height}</b> of {data.all_transitions} transitions (the '
            f"{MAP_MAX_EDGES} most frequent, and an activity's main one where none of those touch it): "
            f'<span id="map-hidden" data-hidden-activities="{len(hidden)}" data-hidden-transitions="{hidden_edges}">'
            f"{hidden_edges} rarer transitions hidden</span>.")
    if hidden:
        note += " Not shown: " + ", ".join(escape(a) for a in hidden) + "."
    known = [kind for kind, _ in data.kinds]
    legend = "".join(f'<span class="key {kind_class(kind, known)}"><i></i>{escape(label)}</span>'
                     for kind, label in data.kinds)
    legend += ('<span class="key edge"><i></i>Transition: count · median wait</span>'
               '<span class="key edge back"><i></i>Back in the flow (loop, rework)</span>')
    svg = process_map(shown, data.transitions, int(data.header["cases"] or 0), known)
    side = (_card("slowest", "Slowest transitions", f"By median wait, of those seen at least {SLOW_MIN_SUPPORT} "
                  "times.", _slowest(data.slowest), tag="h3")
            + _card("rework", "Rework", "Opportunities that went back: a revised quote, an earlier stage, a reopen.",
                    _rework(data.rework), tag="h3")
            + _card("conversion", "Lead conversion by source", "Qualified and won, of the leads captured.",
                    _conversion(data.conversion), tag="h3"))
    return (f'<section class="card wide" id="map"><div class="card-head"><h2>Process map</h2><p class="note">{note}'
            f'</p><div class="legend">{legend}</div></div><div class="map-layout"><div class="map-frame">{svg}</div>'
            f'<aside class="map-side">{side}</aside></div></section>')


def _bar(fraction: object, label: str, tone: str = "") -> str:
    width = 0.0 if _missing(fraction) else max(0.0, min(1.0, float(fraction))) * 100  # type: ignore[arg-type]
    return (f'<span class="bar{" " + tone if tone else ""}"><span style="width:{width:.1f}%"></span></span>'
            f'<span class="bar-label">{label}</span>')


def _table(head: list[tuple[str, str]], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{empty}</p>'
    cells = "".join(f'<th class="{cls}">{title}</th>' for title, cls in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _variant_note(variants: pl.DataFrame) -> str:
    if variants.is_empty():
        return "The most frequent paths cases take."
    top = variants.row(variants.height - 1, named=True)
    return (f"The {variants.height} most frequent paths cases take, of {_int(top['variants'])} variants; together "
            f"they cover {_pct(top['cumulative_share'])} of cases. Duration: first to last event, median.")


def _variants(variants: pl.DataFrame, classes: dict[str, str]) -> str:
    rows = []
    for v in variants.iter_rows(named=True):
        chips = "".join(f'<li class="chip {classes.get(a, kind_class(None, []))}">{escape(a)}</li>'
                        for a in v["variant"].split(" -> "))
        rows.append(f'<tr data-variant-rank="{v["rank"]}"><td class="rank">{v["rank"]}</td>'
                    f'<td><ol class="trace">{chips}</ol></td><td class="num">{_int(v["cases"])}</td>'
                    f'<td class="share">{_bar(v["share"], _pct(v["share"]))}</td>'
                    f'<td class="num">{_dec(v["median_case_days"])} d</td></tr>')
    return _table([("#", "rank"), ("Path", ""), ("Cases", "num"), ("Share", "share"), ("Duration", "num")], rows,
                  "No cases.")


def _slowest(slowest: pl.DataFrame) -> str:
    top = slowest.select(pl.col("median_wait_hours").max()).item() or 1.0
    rows = [f'<tr><td><span class="from">{escape(s["from_activity"])}</span> <span class="arrow">→</span> '
            f'<span class="to">{escape(s["to_activity"])}</span></td><td class="num">{_int(s["edges"])}</td>'
            f'<td class="share">{_bar(s["median_wait_hours"] / top, wait(s["median_wait_hours"]), "warm")}</td>'
            f'<td class="num">{wait(s["p90_wait_hours"])}</td></tr>' for s in slowest.iter_rows(named=True)]
    return _table([("Transition", ""), ("Times", "num"), ("Median wait", "share"), ("p90", "num")], rows,
                  "No transition seen often enough.")


def _rework(rework: pl.DataFrame) -> str:
    rows = [f'<tr class="{"total" if r["rework"] == "any" else ""}" data-rework="{escape(r["rework"])}">'
            f'<td>{escape(r["rework"])}</td><td class="num">{_int(r["occurrences"])}</td>'
            f'<td class="num">{_int(r["cases"])}</td>'
            f'<td class="share">{_bar(r["share_of_opportunities"], _pct(r["share_of_opportunities"]), "warm")}</td>'
            "</tr>" for r in rework.iter_rows(named=True)]
    return _table([("Kind", ""), ("Times", "num"), ("Cases", "num"), ("Of opportunities", "share")], rows,
                  "No rework found.")


def _conversion(conversion: pl.DataFrame) -> str:
    rows = [f'<tr class="{"total" if c["lead_source"] == "(all)" else ""}"><td>{escape(c["lead_source"])}</td>'
            f'<td class="num">{_int(c["leads"])}</td>'
            f'<td class="share">{_bar(c["qualification_rate"], _pct(c["qualification_rate"]))}</td>'
            f'<td class="num">{_int(c["won"])}</td><td class="num">{_pct(c["lead_to_won_rate"])}</td></tr>'
            for c in conversion.iter_rows(named=True)]
    return _table([("Source", ""), ("Leads", "num"), ("Qualified", "share"), ("Won", "num"), ("Lead → won", "num")],
                  rows, "No leads.")


def _discount_reps(reps: pl.DataFrame) -> str:
    worst = reps.select(pl.col("share_above_policy").max()).item() or 1.0  # bars relative to the worst rep
    rows = [f'<tr data-rep="{escape(r["rep"])}"><td class="nowrap">{escape(r["rep"])}</td>'
            f'<td class="num">{_int(r["quotes"])}</td>'
            f'<td class="num">{_dec(r["avg_discount_pct"])}%</td><td class="num">{_dec(r["max_discount_pct"])}%</td>'
            f'<td class="share">{_bar(r["share_above_policy"] / worst, _above(r), "hot")}</td></tr>'
            for r in reps.iter_rows(named=True)]
    return _table([("Rep", ""), ("Quotes", "num"), ("Avg disc.", "num"), ("Max", "num"), ("Above policy", "share")],
                  rows, "No quotes.")


def _above(rep: dict[str, Any]) -> str:
    return f"{_int(rep['above_policy'])} · {_pct(rep['share_above_policy'])}"


def _discount_quotes(quotes: pl.DataFrame) -> str:
    rows = [f'<tr><td class="nowrap">{escape(q["number"] or "–")}<span class="muted"> rev {_int(q["revision"])}'
            f'</span></td><td class="nowrap">{escape(q["owner"] or "–")}</td><td>{escape(q["account"] or "–")}</td>'
            f'<td class="num hot">{_dec(q["discount_pct"])}%</td>'
            f'<td class="num">{_dec(q["total_amount"], 0)} {escape(q["currency"] or "")}</td></tr>'
            for q in quotes.iter_rows(named=True)]
    return _table([("Quote", ""), ("Rep", ""), ("Account", ""), ("Discount", "num"), ("Quote total", "num")], rows,
                  "No quote above policy.")


def _quality(quality: pl.DataFrame) -> str:
    rows = [f'<tr data-check="{escape(q["check"])}"><td><code>{escape(q["check"])}</code></td>'
            f'<td><span class="sev sev-{"error" if q["severity"] == "error" else "warning"}">'
            f'{escape(q["severity"])}</span></td><td class="num">{_int(q["issues"])}</td>'
            f'<td class="num">{_int(q["objects"])}</td><td class="example">{escape(q["example"] or "")}</td></tr>'
            for q in quality.iter_rows(named=True)]
    return _table([("Check", ""), ("Severity", ""), ("Findings", "num"), ("Records", "num"), ("Example", "")], rows,
                  "No findings: every check passed.")
