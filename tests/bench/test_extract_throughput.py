"""Extract throughput against the floor and Microsoft's SDK (issue #14; `make bench`, never in CI).

One run per org size, every contender in its own process against the same sandbox process (100 ms added to
each Web API request, Dataverse's default service-protection limits), one after the other, each in a fresh
service-protection window (the sandbox's counters reset before it):
1. l2c full extract (first backfill), then 2. a no-change incremental extract;
3. the floor: the very requests of 1., replayed at the same concurrency with a plain requests.Session;
4. the SDK's `records.list_pages` over the same tables, columns and audit rows, sequentially as it pages;
5. l2c full extract again without audit details (an activity map without `changed` rules: only the rare Delete
   rows' details), the same listing the SDK does, and the floor of the listing alone (the GETs of 1.);
6. a day later (`advance 1`), l2c's daily incremental extract.
Audit detail calls are also set against the audit rows an activity rule actually reads (a `changed` rule's
column, or a Delete row's links).
Ratios are throughput ratios (time of the other / time of l2c) from this one run. The projection applies
Dataverse's default limits to the measured request counts (see `projection`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from config.activities import load_activities
from config.tables import load_tables
from connector.audit import AUDIT, DETAILS, OP_DELETE, OP_UPDATE, mask_hits
from connector.lake import Lake
from sandbox.schema import TABLES
from tests.bench.harness import CONCURRENCY, PAGE_SIZE, REPO, Org, per_100k, record, row, run

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]  # 100k and 1M take minutes

# Dataverse's default service protection limits per user ([PD] api-limits.md; sandbox/protection.py).
LIMIT_REQUESTS, WINDOW_S, LIMIT_EXEC_S, LIMIT_CONCURRENT = 6000, 300, 1200, 52
HEADER = ("| leads | contender | wall s | requests (page / audit / detail $batch / other) | table rows | "
          "audit rows | req per 100k table rows | detail req per 100k audit rows | peak MB | load |")


def kinds(result: dict[str, Any]) -> dict[str, int]:
    counts = {kind: int(v.get("requests", 0)) for kind, v in result["requests"].items()}
    return {"page": counts.get("page", 0) + counts.get("delta", 0), "audit": counts.get("audit", 0),
            "audit_detail": counts.get("audit_detail", 0), "total": counts.get("total", 0),
            "429s": int(result["requests"].get("total", {}).get("429s", 0))}


def full_then_incremental(org: Org, env: dict[str, str]) -> tuple[int, Any, int, Any, int, dict[str, float]]:
    """l2c's full extract then a no-change one, each in a fresh service-protection window: (log line before,
    full, log line after it, incremental, log line after it, sandbox execution seconds of each)."""
    start = org.mark()
    org.reset()
    full = run("extract", env)
    after_full = org.mark()
    server_s = {"full": org.reset()}
    incremental = run("extract", env)
    after_incremental = org.mark()
    server_s["incremental"] = org.reset()
    return start, full, after_full, incremental, after_incremental, server_s


def l2c_row(leads: int, name: str, result: dict[str, Any]) -> None:
    """One l2c extract's row of HEADER."""
    k = kinds(result)
    rows = sum(result["rows"].values())
    row(leads, name, result["seconds"],
        f"{k['total']} ({k['page']} / {k['audit']} / {k['audit_detail']} / "
        f"{k['total'] - k['page'] - k['audit'] - k['audit_detail']})",
        rows, result["audit_rows"], per_100k(k["page"], rows), per_100k(k["audit_detail"], result["audit_rows"]),
        result["peak_mb"], result["loadavg"])


def projection(requests: int, seconds: float, request_seconds: float) -> dict[str, float]:
    """Lower bound on wall time under the default limits, from a measured run:
    T = max(T_measured, (R - 6000)+ / (6000 / 300 s), (E - 1200 s)+ / (1200 s / 300 s))
    R requests; E their combined time (client-side, wire latency included: an upper bound of server time);
    the first 6000 requests and 1200 s fit in the first window, then 20 requests/s and 4 busy s/s sustain."""
    by_rate = max(0, requests - LIMIT_REQUESTS) / (LIMIT_REQUESTS / WINDOW_S)
    by_exec = max(0.0, request_seconds - LIMIT_EXEC_S) / (LIMIT_EXEC_S / WINDOW_S)
    return {"measured_s": round(seconds, 1), "rate_bound_s": round(by_rate, 1), "exec_bound_s": round(by_exec, 1),
            "projected_s": round(max(seconds, by_rate, by_exec), 1)}


def without_details(work: Path) -> Path:
    """config/activities.toml without its `changed` rules: the extract then asks for no Update row's details
    (only the rare Delete rows'): the listing the SDK does, plus those few detail batches."""
    path = work / "activities-no-changed-rules.toml"
    text = (REPO / "config" / "activities.toml").read_text()
    head, *blocks = text.split("[[activity]]")
    kept = [block for block in blocks if 'trigger = "changed"' not in block]
    assert len(kept) < len(blocks)
    path.write_text(head + "".join("[[activity]]" + block for block in kept))
    return path


def details_rules_read(data_dir: Path) -> int:
    """Landed audit rows whose details some activity rule reads: an Update of a `changed` rule's column, or a
    Delete (its old values link the record to its case)."""
    tables = load_tables()
    rules = load_activities(None, tables)
    audit = Lake(data_dir).scan(AUDIT)
    wanted = pl.lit(False)
    for cfg in tables.audited:
        numbers = [TABLES[cfg.name].by_name[r.column].number for r in rules
                   if r.trigger == "changed" and r.table == cfg.name and r.column]
        changed = (pl.col("operation") == OP_UPDATE) & mask_hits(pl.col("attributemask"), numbers)
        wanted = wanted | ((pl.col("objecttypecode") == cfg.name) & (changed | (pl.col("operation") == OP_DELETE)))
    return int(audit.filter(wanted).select(pl.col("auditid").n_unique()).collect().item())


@pytest.mark.skipif(os.environ.get("L2C_BENCH_L2C_ONLY") == "1", reason="L2C_BENCH_L2C_ONLY=1: l2c alone")
def test_extract_against_floor_and_sdk(org: Org) -> None:
    env = org.env()
    print(f"\norg: {org.leads} leads, {sum(org.info['rows'].values())} rows, {org.info['audit_rows']} audit rows "
          f"(simulated in {org.info['simulate_seconds']} s); concurrency {CONCURRENCY}")
    start, full, after_full, incremental, after_incremental, server_s = full_then_incremental(org, env)
    floor = run("floor", env, log=org.log, start=start, end=after_full, concurrency=CONCURRENCY)
    after_floor = org.mark()
    server_s["floor"] = org.reset()
    sdk = run("sdk", {**env, "REQUESTS_CA_BUNDLE": str(org.sdk_bundle)}, log=org.log, start=start, end=after_full,
              page_size=PAGE_SIZE)
    server_s["sdk"] = org.reset()
    listing = run("extract", org.env(L2C_DATA_DIR=str(org.work / "data-listing"),
                                     L2C_ACTIVITY_MAP=str(without_details(org.work))))
    server_s["listing"] = org.reset()
    floor_listing = run("floor", env, log=org.log, start=start, end=after_full, concurrency=CONCURRENCY,
                        listing_only=True)
    server_s["floor_listing"] = org.reset()
    landed_details = Lake(org.data_dir).scan(DETAILS).select(pl.len()).collect().item()
    rules_read = details_rules_read(org.data_dir)
    org.advance(1)
    org.reset()
    daily = run("extract", env)
    server_s["daily"] = org.reset()
    print(f"sandbox execution seconds per contender (last 300 s of each): {server_s}")

    table_rows = sum(full["rows"].values())
    full_k, inc_k, daily_k = kinds(full), kinds(incremental), kinds(daily)
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    for name, result in (("l2c full", full), ("l2c no-change incremental", incremental),
                         ("l2c daily incremental (+1 day)", daily), ("l2c full without audit details", listing)):
        l2c_row(org.leads, name, result)
    row(org.leads, "floor (replay of l2c full's requests)", floor["seconds"], floor["requests"], "", "", "", "",
        floor["peak_mb"], floor["loadavg"])
    row(org.leads, "floor of the listing (GETs of l2c full)", floor_listing["seconds"], floor_listing["requests"],
        "", "", "", "", floor_listing["peak_mb"], floor_listing["loadavg"])
    row(org.leads, "SDK records.list_pages (sequential)", sdk["seconds"], f"{sdk['pages']} pages", sdk["rows"], "",
        "", "", sdk["peak_mb"], sdk["loadavg"])

    tables = len(full["rows"]) + 1  # the declared tables and the audit history
    ratios = {"l2c_vs_floor_throughput": round(floor["seconds"] / full["seconds"], 3),
              "l2c_vs_sdk_throughput": round(sdk["seconds"] / full["seconds"], 3),
              "l2c_listing_vs_floor_listing": round(floor_listing["seconds"] / listing["seconds"], 3),
              "l2c_listing_vs_sdk": round(sdk["seconds"] / listing["seconds"], 3),
              "detail_rows_fetched": landed_details, "detail_rows_rules_read": rules_read,
              "incremental_requests_per_table": round(inc_k["total"] / tables, 2)}
    request_seconds = float(full["requests"]["total"].get("seconds", 0))
    daily_seconds = float(daily["requests"]["total"].get("seconds", 0))
    backfill = projection(full_k["total"], full["seconds"], request_seconds)
    day = projection(daily_k["total"], daily["seconds"], daily_seconds)
    print(f"ratios: {ratios}")
    print(f"projection, first backfill: {backfill}; daily run: {day}")
    record("extract", org.leads, org=org.info | {"env": None}, full=full, incremental=incremental, daily=daily,
           floor=floor, floor_listing=floor_listing, listing=listing, sdk=sdk, ratios=ratios,
           projection={"backfill": backfill, "daily": day}, server_execution_s=server_s,
           log_lines={"full": after_full - start, "incremental": after_incremental - after_full,
                      "floor": after_floor - after_incremental})

    assert full_k["total"] == after_full - start or full_k["429s"], "every l2c request reached the sandbox's log"
    assert after_floor - after_incremental >= floor["requests"]
    assert sdk["rows"] >= table_rows, "the SDK read the same tables"
    assert math.isfinite(ratios["l2c_vs_floor_throughput"])


@pytest.mark.skipif(os.environ.get("L2C_BENCH_L2C_ONLY") != "1", reason="L2C_BENCH_L2C_ONLY=1 runs it (for 1M leads)")
def test_l2c_extract_alone(org: Org) -> None:
    """l2c's full and no-change incremental extract and the floor of the full one (its requests replayed), without
    the SDK and the listing-only contenders: for an org (1M leads) where the whole comparison would take hours.
    `L2C_BENCH_L2C_ONLY=1 L2C_BENCH_SIZES=1000000 make bench` (the transform bench after it then measures the
    full transform of that lake)."""
    env = org.env()
    start, full, after_full, incremental, after_incremental, server_s = full_then_incremental(org, env)
    floor = run("floor", env, log=org.log, start=start, end=after_full, concurrency=CONCURRENCY)
    server_s["floor"] = org.reset()
    full_k, inc_k = kinds(full), kinds(incremental)
    print(f"\norg: {org.leads} leads, {org.info['audit_rows']} audit rows (simulated in "
          f"{org.info['simulate_seconds']} s); sandbox execution seconds {server_s}")
    print(HEADER)
    for name, result in (("l2c full", full), ("l2c no-change incremental", incremental)):
        l2c_row(org.leads, name, result)
    row(org.leads, "floor (replay of l2c full's requests)", floor["seconds"], floor["requests"], "", "", "", "",
        floor["peak_mb"], floor["loadavg"])
    ratios = {"l2c_vs_floor_throughput": round(floor["seconds"] / full["seconds"], 3),
              "incremental_requests_per_table": round(inc_k["total"] / (len(full["rows"]) + 1), 2)}
    backfill = projection(full_k["total"], full["seconds"], float(full["requests"]["total"].get("seconds", 0)))
    print(f"ratios: {ratios}; projection, first backfill: {backfill}")
    record("extract_l2c", org.leads, org=org.info | {"env": None}, full=full, incremental=incremental, floor=floor,
           ratios=ratios, projection={"backfill": backfill}, server_execution_s=server_s,
           log_lines={"full": after_full - start, "incremental": after_incremental - after_full})
    assert full_k["total"] == after_full - start or full_k["429s"], "every l2c request reached the sandbox's log"
    assert inc_k["total"] <= len(full["rows"]) + 1
