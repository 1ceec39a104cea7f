"""The measurement tables of BENCHMARKS.md from the benches' results files: `python -m tests.bench.report [FILE...]`.

FILE defaults to L2C_BENCH_RESULTS (/tmp/l2c-bench/results.jsonl); the newest entry per (bench, size) wins, the
files read in the order given. An l2c-only run (`L2C_BENCH_L2C_ONLY=1`, for 1M leads) fills the contenders it
measured; the others read "-".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.bench.harness import RESULTS


def newest(paths: list[Path]) -> dict[tuple[str, int, int], dict[str, Any]]:
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            bench = "extract" if entry["bench"] == "extract_l2c" else entry["bench"]
            out[(bench, entry["leads"], entry.get("audit_rows", 0))] = entry
    return out


def requests_of(result: dict[str, Any]) -> tuple[int, int, int, int]:
    kinds = result["requests"]
    count = {k: int(v.get("requests", 0)) for k, v in kinds.items()}
    page = count.get("page", 0) + count.get("delta", 0)
    return count.get("total", 0), page, count.get("audit", 0), count.get("audit_detail", 0)


def extract_table(entries: list[dict[str, Any]]) -> list[str]:
    lines = ["| leads | contender | wall s | requests | table pages | audit pages | detail $batch | "
             "table-page req / 100k rows | detail req / 100k audit rows | 429s | peak MB | load |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        for name, key in (("l2c full", "full"), ("l2c no-change incremental", "incremental"),
                          ("l2c daily incremental (+1 day)", "daily"), ("l2c full, no audit details", "listing")):
            if key not in e:
                continue
            r = e[key]
            total, page, audit, detail = requests_of(r)
            rows = sum(r["rows"].values())
            per_rows = round(page / rows * 100_000, 1) if rows else "-"
            per_audit = round(detail / r["audit_rows"] * 100_000, 1) if r["audit_rows"] else "-"
            throttled = int(r["requests"].get("total", {}).get("429s", 0))
            lines.append(f"| {e['leads']:,} | {name} | {r['seconds']} | {total} | {page} | {audit} | {detail} | "
                         f"{per_rows} | {per_audit} | {throttled} | {r['peak_mb']} | {r['loadavg']} |")
        for name, key in (("floor: l2c full's requests replayed", "floor"),
                          ("floor: l2c full's GETs replayed", "floor_listing")):
            if key not in e:
                continue
            r = e[key]
            lines.append(f"| {e['leads']:,} | {name} | {r['seconds']} | {r['requests']} | | | | | | "
                         f"{r.get('429s', 0)} | {r['peak_mb']} | {r['loadavg']} |")
        if "sdk" not in e:
            continue
        r = e["sdk"]
        lines.append(f"| {e['leads']:,} | SDK records.list_pages, sequential | {r['seconds']} | {r['pages']} | | | | "
                     f"| | | {r['peak_mb']} | {r['loadavg']} |")
    return lines


def ratio_table(entries: list[dict[str, Any]]) -> list[str]:
    lines = ["| leads | l2c/floor (all) | l2c/floor (listing) | l2c/SDK (full) | l2c/SDK (listing) | "
             "incremental req per table | detail rows fetched | detail rows a rule reads | backfill projected s | "
             "daily projected s |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        r, p = e["ratios"], e["projection"]
        cells = [r.get(key, "-") for key in ("l2c_vs_floor_throughput", "l2c_listing_vs_floor_listing",
                                             "l2c_vs_sdk_throughput", "l2c_listing_vs_sdk",
                                             "incremental_requests_per_table", "detail_rows_fetched",
                                             "detail_rows_rules_read")]
        cells += [p[key]["projected_s"] if key in p else "-" for key in ("backfill", "daily")]
        lines.append(f"| {e['leads']:,} | " + " | ".join(str(c) for c in cells) + " |")
    return lines


def transform_table(entries: list[dict[str, Any]]) -> list[str]:
    lines = ["| leads | what | input audit rows | events | l2c s | IO floor s | l2c / IO | l2c peak MB | "
             "IO peak MB | load |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        if e["bench"] == "transform":
            t, f = e["transform"], e["io_floor"]
            what, rows, events = "full transform", "", t["events"]
        else:
            t, f = e["events"], e["io_floor"]
            what, rows, events = "audit -> events", e["audit_rows"], t["events"]
        lines.append(f"| {e['leads']:,} | {what} | {rows} | {events} | {t['seconds']} | {f['seconds']} | "
                     f"{e['ratio']} | {t['peak_mb']} | {f['peak_mb']} | {t['loadavg']} / {f['loadavg']} |")
    return lines


def main(argv: list[str]) -> None:
    entries = newest([Path(arg) for arg in argv] or [RESULTS])
    ordered = [entries[k] for k in sorted(entries, key=lambda k: (k[1], k[2]))]
    extracts = [e for e in ordered if e["bench"] in ("extract", "extract_l2c")]
    print("\n".join(extract_table(extracts) + [""] + ratio_table(extracts) + [""]
                    + transform_table([e for e in ordered if e["bench"] in ("transform", "audit_events")])))


if __name__ == "__main__":
    main(sys.argv[1:])
