"""Orchestration of a run: resolve where Dataverse is (a real org or the in-process sandbox), then
extract -> transform -> load. At this stage the extract step signs in, checks WhoAmI and lists the rows of
every table by following `@odata.nextLink` (the full connector is issue #10, transforms issue #11).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

from config.settings import Settings, load_settings
from connector.http import DataverseClient

TABLES = ("systemusers", "transactioncurrencies", "accounts", "leads", "opportunities", "quotes", "salesorders",
          "invoices", "audits")


@contextlib.contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    if settings.uses_sandbox:
        from l2c.sandbox_cli import in_process

        with in_process(settings) as sandboxed:
            yield sandboxed
    else:
        print(f"l2c: Dataverse environment {settings.dataverse_url}", flush=True)
        yield settings


def list_rows(settings: Settings) -> dict[str, int]:
    client = DataverseClient(settings)
    who = client.get_json("WhoAmI")
    print(f"signed in as application user {who['UserId']} (organization {who['OrganizationId']})", flush=True)
    counts: dict[str, int] = {}
    for entity_set in TABLES:
        started, rows, pages = time.perf_counter(), 0, 0
        url: str | None = entity_set
        prefer = [f"odata.maxpagesize={settings.page_size}"]
        while url:
            body = client.get_json(url, prefer=prefer)
            rows += len(body["value"])
            pages += 1
            url = body.get("@odata.nextLink")  # followed untouched
        counts[entity_set] = rows
        print(f"{entity_set}: {rows} rows in {pages} pages ({time.perf_counter() - started:.1f}s)", flush=True)
    return counts


def extract_only(args: argparse.Namespace) -> int:
    with resolved(load_settings()) as settings:
        list_rows(settings)
    return 0


def run(args: argparse.Namespace) -> int:
    return extract_only(args)
