"""Transform time and memory against the IO floor (issue #14; `make bench`, never in CI).

Per org size, on the lake the extract bench landed (full backfill plus a day): l2c's full transform
(`transform(settings, full=True)`: event log, cases, DuckDB) against DuckDB reading every table's Parquet once
and writing it once (`COPY (SELECT * FROM read_parquet('raw/<table>/**/*.parquet')) TO ...`), each in its own
process for its peak memory. For the 100k org and up, also the audit -> events step alone (as transforms/build.py
feeds it: `distinct` audit rows and details, `events_from_audit`, written to Parquet) over synthetic histories
of 1M and 10M audit rows (L2C_BENCH_AUDIT_ROWS; the lake's rows repeated under new ids) against DuckDB
copying the same two Parquet files.
"""

from __future__ import annotations

import os

import pytest

from tests.bench.harness import Org, record, row, run

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]  # 100k and 1M take minutes

# Sizes of the synthetic audit history for the audit -> events step (L2C_BENCH_AUDIT_ROWS, comma-separated).
# Empty (L2C_BENCH_AUDIT_ROWS=) skips the step.
AUDIT_ROWS = [int(n) for n in os.environ.get("L2C_BENCH_AUDIT_ROWS", "1000000,10000000").split(",") if n]
# From this size on the sandbox is stopped once the lake has landed: it holds the org in memory (8.6 GB at
# 1M leads, measured), which the transform of that lake (3.3 GB in parts; 6.9 GB in one pass before) should not
# compete with on a 2-core, 23 GB machine; the finished extract bench no longer needs it.
RELEASE_SANDBOX_FROM = 1_000_000
HEADER = "| leads | what | audit rows | events | l2c s | IO floor s | l2c / IO | l2c peak MB | IO peak MB | load |"


def test_transform_against_io_floor(org: Org) -> None:
    env = org.env()
    if not (org.data_dir / "raw").exists():
        run("extract", env)  # the extract bench was deselected: land the lake, unmeasured
    if org.leads >= RELEASE_SANDBOX_FROM:
        org.stop()
    full = run("transform", env)
    floor = run("io_floor", env, data_dir=org.data_dir, out_dir=org.work / "io-floor")
    ratio = round(full["seconds"] / floor["seconds"], 2)
    print("\n" + HEADER + "\n" + "|---" * (HEADER.count("|") - 1) + "|")
    row(org.leads, "full transform", org.info["audit_rows"], full["events"], full["seconds"], floor["seconds"],
        ratio, full["peak_mb"], floor["peak_mb"], f"{full['loadavg']} / {floor['loadavg']}")
    record("transform", org.leads, transform=full, io_floor=floor, ratio=ratio)
    assert full["events"] > 0 and floor["rows"] > 0

    if org.leads < 100_000 or not AUDIT_ROWS:
        return
    for audit_rows in AUDIT_ROWS:
        tiled = org.work / f"audit-{audit_rows}"
        made = run("tile", env, data_dir=org.data_dir, out_dir=tiled, rows=audit_rows)
        events = run("audit_events", env, dir=tiled, out=org.work / f"events-{audit_rows}.parquet")
        copy = run("io_floor", env, out_dir=org.work / f"io-{audit_rows}",
                   sources={"audit": str(tiled / "audit.parquet"), "details": str(tiled / "details.parquet")})
        ratio = round(events["seconds"] / copy["seconds"], 2)
        row(org.leads, f"audit -> events, {audit_rows // 1_000_000}M audit rows", made["rows"], events["events"],
            events["seconds"], copy["seconds"], ratio, events["peak_mb"], copy["peak_mb"],
            f"{events['loadavg']} / {copy['loadavg']}")
        record("audit_events", org.leads, audit_rows=made["rows"], events=events, io_floor=copy, ratio=ratio)
        assert events["events"] > 0
