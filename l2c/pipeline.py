"""Orchestration of a run: resolve where Dataverse is (a real org or the in-process sandbox), then
extract -> transform (event_log.parquet) -> load (l2c.duckdb).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Collection, Iterator

from config.activities import load_activities
from config.settings import Settings, load_settings
from config.tables import load_tables
from connector.extract import ExtractResult, extract
from connector.lock import RunLock
from l2c.progress import RunProgress
from sql.load import transform_and_load
from transforms.build_state import TransformState
from transforms.quality import describe


@contextlib.contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    if settings.source == "link":
        print(f"l2c: Synapse Link / Fabric Link export {settings.link_url}", flush=True)
        yield settings
    elif settings.uses_sandbox:
        from l2c.sandbox_cli import in_process

        with RunLock(settings.data_dir):  # refuse (exit 5) before the sandbox writes its files beside the data
            pass

        with in_process(settings) as sandboxed:
            yield sandboxed
    else:
        print(f"l2c: Dataverse environment {settings.dataverse_url}", flush=True)
        yield settings


def summary(result: ExtractResult) -> str:
    rows = sum(r.rows for r in result.tables.values()) + (result.audit.rows if result.audit else 0)
    total = result.requests.get("total", {})
    line = (f"extract {result.run_id}: {rows} rows, {total.get('requests', 0)} requests, "
            f"{total.get('retries', 0)} retries, {total.get('429s', 0)} throttled, {result.seconds:.1f}s")
    return line


def extract_only(args: argparse.Namespace) -> int:
    with resolved(load_settings()) as settings, RunProgress() as progress:
        # The pages the last transform read must still be there: a lake landed before pages were registered
        # (connector/register.py) is checked against them too.
        def expected() -> Collection[str]:
            last = TransformState.load(settings.data_dir)
            return last.pages if last else ()

        if settings.source == "link":
            from connector.link import extract_link

            result = extract_link(settings, progress=progress, expected=expected)
        else:
            result = extract(settings, progress=progress, expected=expected)
    print(summary(result), flush=True)
    for note in result.notes:
        print(f"note: {note}", flush=True)
    for line in result.error_lines():
        print(f"l2c: error: {line}", file=sys.stderr, flush=True)
    return result.exit_code


def transform_only(args: argparse.Namespace) -> int:
    result = transform_and_load(load_settings(), full=getattr(args, "full", False))
    how = {"unchanged": "nothing new since the last build",
           "incremental": f"incremental: {result.recomputed} of {result.cases} cases recomputed",
           "full": f"full build: {result.reason}"}[result.mode]
    print(f"transform: {result.events} events in {result.cases} cases -> {result.event_log} and {result.database}"
          + (f"; {result.orphans} events link to no case" if result.orphans else "") + f" ({how})", flush=True)
    print(describe(result.quality) + " (details: table quality_issues)", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    # The transform's declarations are checked before the extract: a bad activity map must not cost a whole
    # extract first (`l2c extract` alone does not need them all: a trimmed L2C_TABLES may omit rule tables).
    settings = load_settings()
    load_activities(settings.activity_map, load_tables(settings.tables_file))
    code = extract_only(args)
    if code != 0:
        return code
    return transform_only(args)
