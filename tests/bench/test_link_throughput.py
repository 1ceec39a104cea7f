"""The Link source at scale (issue 25; `make bench`, never in CI): time and peak memory of `l2c run` with
L2C_SOURCE=link over the sandbox org exported as Synapse Link would (CSV append-only, and Delta with the audit
table), against the Web API path's measured and projected time for the same org (BENCHMARKS.md).

Sizes: L2C_BENCH_LINK_SIZES (comma-separated; default 100000, and 1000000 too with L2C_BENCH_1M=1). Each step is a
fresh process (tests/bench/contenders.py) so its peak memory is its own: the export (the org simulated first,
unmeasured), the first run over it (full extract + full transform), then a second run with nothing new. No
sandbox server runs: the Link source needs none.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.bench.harness import SEED, clean_env, record, row, run

pytestmark = [pytest.mark.bench, pytest.mark.timeout(7200)]

SIZES = ([int(n) for n in os.environ["L2C_BENCH_LINK_SIZES"].split(",")] if os.environ.get("L2C_BENCH_LINK_SIZES")
         else [100_000] + ([1_000_000] if os.environ.get("L2C_BENCH_1M") == "1" else []))
HEADER = ("| leads | export | export s | export MB | table rows landed | events | first run s (extract + transform) "
          "| first run peak MB (extract) | no-change run s | no-change peak MB | load |")


@pytest.mark.parametrize("leads", SIZES, ids=lambda n: f"{n // 1000}k")
@pytest.mark.parametrize("fmt", ["csv", "delta"])
def test_link_source_time_and_memory(leads: int, fmt: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp(f"link-{fmt}-{leads}")
    export, data = work / "export", work / "data"
    env = {**clean_env(), "L2C_SOURCE": "link", "L2C_LINK_URL": str(export), "L2C_DATA_DIR": str(data)}
    made = run("link_export", env, seed=SEED, leads=leads, format=fmt, out=export)
    first = run("link_run", env)
    again = run("link_run", env)
    print("\n" + HEADER + "\n" + "|---" * (HEADER.count("|") - 1) + "|")
    row(leads, fmt, made["seconds"], round(made["bytes"] / 2**20, 1), first["rows"], first["events"],
        f"{first['seconds']} ({first['extract_s']} + {first['transform_s']})",
        f"{first['peak_mb']} ({first['extract_peak_mb']})", again["seconds"],
        again["peak_mb"], f"{first['loadavg']} / {again['loadavg']}")
    record("link", leads, format=fmt, export=made, first=first, again=again)
    assert first["events"] > 0 and again["rows"] == 0
    shutil.rmtree(work, ignore_errors=True)  # 1M: gigabytes

