"""Each benchmarked contender as a fresh process: `python -m tests.bench.contenders NAME ARGS_JSON`.

A process per contender so its peak memory is its own (VmHWM of /proc/self/status at the end) and no
contender warms a cache for the next. Settings come from the environment the bench passes (the sandbox's),
never from a `.env`: the bench runs us in a scratch directory. Prints one JSON object on its last line.

- `extract`: l2c's extract of the data directory, full or incremental (whatever its state says).
- `floor`: the requests an l2c run made, replayed from the sandbox's log with a plain requests.Session at the
  same concurrency, bodies read off the socket and dropped (still gzipped): the transfer floor.
- `sdk`: Microsoft's PowerPlatform-Dataverse-Client listing the same tables, columns and audit rows, one page
  after the other as it does (`records.list_pages`).
- `transform`: l2c's full transform of the lake.
- `io_floor`: DuckDB reading every table's Parquet of the lake (or given globs) and writing it once (`COPY ... TO`).
- `tile`: a synthetic audit history of N rows (the lake's audit rows and details repeated under new ids).
- `audit_events`: l2c's audit -> events transform (transforms/events.py) over such a history.
- `link_export`: `l2c sandbox export-link` of an org (simulated here, not measured) into a folder.
- `link_run`: `l2c run` with L2C_SOURCE=link over such a folder: extract and transform, each timed.
"""

from __future__ import annotations

import base64
import json
import math
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

AUDIT_ANNOTATIONS = "OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname"


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across
    fork + exec, so a child of a big pytest process would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def settings() -> Any:
    from config.settings import Settings

    return Settings(_env_file=None)  # type: ignore[call-arg]


def run_extract(args: dict[str, Any]) -> dict[str, Any]:
    from connector.extract import extract

    started = time.perf_counter()
    result = extract(settings())
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, {k: str(v) for k, v in result.errors.items()}
    rows = {name: table.rows for name, table in result.tables.items()}
    audit = result.audit
    return {"seconds": round(seconds, 2), "requests": result.requests, "rows": rows,
            "pages": {name: table.pages for name, table in result.tables.items()},
            "audit_rows": audit.rows if audit else 0, "audit_pages": audit.pages if audit else 0,
            "audit_details": audit.details if audit else 0}


def replayed(log: Path, start: int, end: int) -> list[dict[str, Any]]:
    """The Web API requests of lines [start, end) of the sandbox's log that succeeded."""
    lines = log.read_text().splitlines()[start:end]
    return [entry for entry in map(json.loads, lines) if 200 <= entry["status"] < 300]


def run_floor(args: dict[str, Any]) -> dict[str, Any]:
    from connector.auth import TokenProvider
    from connector.throttle import RetryAfterGate
    from connector.tls import trusting_session

    config = settings()
    concurrency = int(args["concurrency"])
    # TrustingAdapter: the sandbox CA is trusted whatever REQUESTS_CA_BUNDLE says; verification stays on.
    session = trusting_session(config.ca_bundle, pool_size=concurrency)
    token = TokenProvider(config, session).token()
    base = {"Authorization": f"Bearer {token}", "Accept": "application/json", "OData-MaxVersion": "4.0",
            "OData-Version": "4.0", "Accept-Encoding": "gzip"}
    todo = replayed(Path(args["log"]), args["start"], args["end"])
    if args.get("listing_only"):
        todo = [entry for entry in todo if entry["method"] == "GET"]
    origin = config.dataverse_url
    throttled = 0
    gate = RetryAfterGate()  # l2c's own: a 429's Retry-After holds every thread, as it holds l2c's

    def fetch(entry: dict[str, Any]) -> int:
        nonlocal throttled
        while True:  # under the same service protection: a 429 waits its Retry-After, as l2c must
            gate.wait()
            size, status, wait = send(entry)
            if status != 429:
                assert status == entry["status"], (status, entry["path"])
                return size
            throttled += 1
            gate.block(wait)

    def send(entry: dict[str, Any]) -> tuple[int, int, float]:
        headers = dict(base)
        if entry["prefer"]:
            headers["Prefer"] = entry["prefer"]
        if entry["content_type"]:
            headers["Content-Type"] = entry["content_type"]
        url = origin + entry["path"] + ("?" + entry["query"] if entry["query"] else "")
        body = base64.b64decode(entry["body"]) if entry["body"] else None
        with session.request(entry["method"], url, headers=headers, data=body, stream=True, timeout=120) as reply:
            size = 0
            for chunk in reply.raw.stream(1 << 16, decode_content=False):
                size += len(chunk)
            return size, reply.status_code, float(reply.headers.get("Retry-After", "1"))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        sizes = list(pool.map(fetch, todo))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "requests": len(todo), "bytes": sum(sizes), "429s": throttled}


class _Credential:
    """An azure-core TokenCredential over l2c's MSAL sign-in (the token is not what is measured)."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.provider.token(), int(time.time()) + 3000)


def sdk_queries(log: Path, start: int, end: int) -> list[dict[str, Any]]:
    """The table reads of an l2c full extract as SDK calls: each entity set's first page (its $select, and for
    the audit history its filter without the backfill's createdon ranges)."""
    from sandbox.schema import ENTITY_SETS

    out: dict[str, dict[str, Any]] = {}
    for entry in replayed(log, start, end):
        entity_set = entry["path"].rsplit("/", 1)[-1]
        params = dict(parse_qsl(entry["query"]))
        if entry["method"] != "GET" or entity_set not in ENTITY_SETS or "$select" not in params:
            continue
        if "$skiptoken" in params or entity_set in out:
            continue
        query: dict[str, Any] = {"table": ENTITY_SETS[entity_set].logical_name,
                                 "select": params["$select"].split(",")}
        if "$filter" in params:  # the audit history: only its objecttypecode condition
            query["filter"] = params["$filter"].split(" and createdon")[0]
            query["orderby"] = params.get("$orderby", "").split(",")
        out[entity_set] = query
    return list(out.values())


def run_sdk(args: dict[str, Any]) -> dict[str, Any]:
    from PowerPlatform.Dataverse.client import DataverseClient

    from connector.auth import TokenProvider
    from connector.tls import trusting_session

    config = settings()
    credential = _Credential(TokenProvider(config, trusting_session(config.ca_bundle)))
    queries = sdk_queries(Path(args["log"]), args["start"], args["end"])
    rows, pages = 0, 0
    started = time.perf_counter()
    # The SDK builds its own requests.Session, trusting REQUESTS_CA_BUNDLE (certifi + the sandbox CA here).
    with DataverseClient(config.dataverse_url or "", credential) as client:
        for query in queries:
            for page in client.records.list_pages(query["table"], select=query["select"],
                                                  filter=query.get("filter"), orderby=query.get("orderby"),
                                                  page_size=int(args["page_size"]),
                                                  include_annotations=AUDIT_ANNOTATIONS):
                rows += len(page)
                pages += 1
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "rows": rows, "pages": pages,
            "tables": [q["table"] for q in queries]}


def run_transform(args: dict[str, Any]) -> dict[str, Any]:
    from sql.load import transform_and_load as transform

    started = time.perf_counter()
    result = transform(settings(), full=True)
    return {"seconds": round(time.perf_counter() - started, 2), "events": result.events, "cases": result.cases}


def run_io_floor(args: dict[str, Any]) -> dict[str, Any]:
    """`sources`: {name: parquet glob}; default every table directory of `data_dir`'s raw lake."""
    import duckdb

    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    sources = args.get("sources") or {table.name: f"{table}/**/*.parquet" for table in
                                      sorted(p for p in (Path(args["data_dir"]) / "raw").iterdir() if p.is_dir())}
    started = time.perf_counter()
    con = duckdb.connect()
    targets = []
    for name, glob in sources.items():
        targets.append(out / f"{name}.parquet")
        con.execute(f"COPY (SELECT * FROM read_parquet('{glob}', union_by_name=true)) TO '{targets[-1]}' "
                    "(FORMAT parquet)")
    seconds = time.perf_counter() - started
    rows = sum(con.execute(f"SELECT count(*) FROM read_parquet('{t}')").fetchone()[0]  # type: ignore[index]
               for t in targets)
    return {"seconds": round(seconds, 2), "rows": rows}


def run_tile(args: dict[str, Any]) -> dict[str, Any]:
    """Synthetic audit history of `rows` rows: the lake's audit rows and details repeated, ids suffixed per copy
    (so every copy is other records' history), written copy by copy to two Parquet files."""
    import polars as pl
    import pyarrow.parquet as pq

    from connector.lake import Lake
    from transforms.build import AUDIT_SCHEMA, DETAILS_SCHEMA

    lake, out, wanted = Lake(Path(args["data_dir"])), Path(args["out_dir"]), int(args["rows"])
    out.mkdir(parents=True, exist_ok=True)
    audit = lake.scan("audit").select(list(AUDIT_SCHEMA)).unique("auditid").collect()
    details = lake.scan("audit_details").select(list(DETAILS_SCHEMA)).unique("auditid").collect()
    written = 0
    writers: dict[str, Any] = {}
    for copy in range(math.ceil(wanted / audit.height)):
        take = min(audit.height, wanted - written)
        suffix = pl.lit(f"-{copy}")
        part = audit.head(take).with_columns(pl.col("auditid") + suffix, pl.col("_objectid_value") + suffix)
        ids = part.select("auditid")
        detail = (details.with_columns(pl.col("auditid") + suffix, pl.col("objectid") + suffix)
                  .join(ids, on="auditid", how="semi"))
        for name, frame in (("audit", part), ("details", detail)):
            table = frame.to_arrow()
            if name not in writers:
                writers[name] = pq.ParquetWriter(out / f"{name}.parquet", table.schema)
            writers[name].write_table(table)
        written += take
    for writer in writers.values():
        writer.close()
    return {"rows": written}


def run_audit_events(args: dict[str, Any]) -> dict[str, Any]:
    """l2c's audit -> events step (transforms/events.py, as transforms/build.py feeds it) over tiled Parquet."""
    import polars as pl

    from config.activities import load_activities
    from config.tables import load_tables
    from ground.files import OUTPUT_PARQUET
    from transforms.build import distinct
    from transforms.events import events_from_audit

    source, out = Path(args["dir"]), Path(args["out"])
    started = time.perf_counter()
    rules = load_activities(None, load_tables())
    audit = distinct(pl.scan_parquet(source / "audit.parquet"), "auditid")
    details = distinct(pl.scan_parquet(source / "details.parquet"), "auditid")
    events = events_from_audit(audit, details, rules).collect()
    events.write_parquet(out, **OUTPUT_PARQUET)  # as l2c writes its outputs
    return {"seconds": round(time.perf_counter() - started, 2), "events": events.height}


def run_link_export(args: dict[str, Any]) -> dict[str, Any]:
    from sandbox.link_export import LinkOptions, export_link
    from sandbox.orgdata import BASE_CLOCK
    from sandbox.simulator import simulate

    started = time.perf_counter()
    org = simulate(int(args["seed"]), int(args["leads"]), BASE_CLOCK)
    simulated = time.perf_counter() - started
    result = export_link(org, Path(args["out"]), LinkOptions(format=args["format"], mode=args.get("mode",
                                                                                                   "append-only")))
    return {"seconds": round(result.seconds, 2), "simulate_s": round(simulated, 2), "rows": result.rows,
            "bytes": sum(p.stat().st_size for p in Path(args["out"]).rglob("*") if p.is_file())}


def run_link_run(args: dict[str, Any]) -> dict[str, Any]:
    from connector.link import extract_link
    from sql.load import transform_and_load

    config = settings()
    started = time.perf_counter()
    result = extract_link(config)
    extracted = time.perf_counter() - started
    extract_peak = peak_mb()  # VmHWM only grows: the extract's peak, before the transform's
    assert result.exit_code == 0, {k: str(v) for k, v in result.errors.items()}
    built = transform_and_load(config)
    total = time.perf_counter() - started
    return {"seconds": round(total, 2), "extract_s": round(extracted, 2), "transform_s": round(total - extracted, 2),
            "extract_peak_mb": extract_peak, "rows": sum(t.rows for t in result.tables.values()),
            "events": built.events}


CONTENDERS = {"extract": run_extract, "floor": run_floor, "sdk": run_sdk, "transform": run_transform,
              "io_floor": run_io_floor, "tile": run_tile, "audit_events": run_audit_events,
              "link_export": run_link_export, "link_run": run_link_run}


def main(argv: list[str]) -> None:
    outcome = CONTENDERS[argv[0]](json.loads(argv[1]))
    outcome["peak_mb"] = peak_mb()
    # This process's CPU seconds (user + system, start-up included): on a 2-core machine a client's CPU is
    # taken from the emulator serving it, which the floor's client (bodies dropped undecoded) barely uses.
    outcome["cpu_s"] = round(sum(os.times()[:2]), 2)
    outcome["pid"] = os.getpid()
    print(json.dumps(outcome, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
