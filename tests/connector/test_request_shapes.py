"""Every request l2c sends is a claim about Dataverse: each distinct shape a run makes is listed here with the
Microsoft doc (or shared realdata payload) that shows Dataverse accepting it, and every request of a recorded run
went through the strict sandbox and was accepted.

The run covers what `l2c run` and `l2c doctor` send: a first extract (metadata, tracked reads with nextLinks,
the audit backfill and its detail batches), an incremental one after the org moved (delta links, the audit
watermark), a table without change tracking (the modifiedon watermark), the doctor's checks, and a first
backfill from L2C_SINCE. A new request
shape fails `test_every_request_shape_is_documented` until it is added below with its source: check the docs and
../shared/realdata first, and make the sandbox refuse the variants Dataverse refuses.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import pytest

from connector.doctor import doctor
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.schema import ENTITY_SETS
from sandbox.webapi import API_PREFIX, Seen
from tests.conftest import settings_for

PD = "MicrosoftDocs/powerapps-docs powerapps-docs/developer/data-platform/"
TRACKED = "Prefer: odata.include-annotations,odata.maxpagesize,odata.track-changes"
PAGED = "Prefer: odata.include-annotations,odata.maxpagesize"
# shape -> where Microsoft shows Dataverse accepting it
DOCUMENTED: dict[str, str] = {
    "GET WhoAmI": f"{PD}webapi/use-web-api-functions.md (WhoAmI, an unbound function without parameters)",
    "GET EntityDefinitions?$filter&$select": f"{PD}webapi/query-schema-definitions.md (`EntityDefinitions?$select="
                                             "SchemaName&$filter=LogicalName eq 'account' or LogicalName eq "
                                             "'contact'`); query-metadata-web-api.md (any EntityMetadata property "
                                             "in $select)",
    "GET EntityDefinitions(LogicalName='{name}')/Attributes?$select": f"{PD}webapi/query-metadata-web-api.md "
                                                                      "(AttributeMetadata's own properties only)",
    "GET EntityDefinitions(LogicalName='{name}')/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata"
    "?$select": f"{PD}webapi/query-metadata-web-api.md (cast to the derived type);"
                " webapi/web-api-metadata-operations-sample.md (DateTimeAttributeMetadata?$select=...,Format,"
                "DateTimeBehavior)",
    f"GET {{entityset}}?$select | {TRACKED}": f"{PD}use-change-tracking-synchronize-data-external-systems.md "
                                              "(Prefer: odata.track-changes); webapi/query/page-results.md "
                                              "(odata.maxpagesize); webapi/query/select-columns.md (annotations); "
                                              "realdata 05",
    f"GET {{entityset}}?$select&$skiptoken | {TRACKED}": f"{PD}webapi/query/page-results.md (the nextLink, followed "
                                                         "verbatim with the same Prefer); realdata 07, 08",
    f"GET {{entityset}}?$deltatoken&$select | {TRACKED}": f"{PD}use-change-tracking-synchronize-data-external-"
                                                          "systems.md (the deltaLink, verbatim); realdata 05, 06",
    f"GET {{entityset}}?$orderby&$select | {PAGED}": f"{PD}webapi/query/order-rows.md (two columns; a first "
                                                     "watermark read, from the start)",
    f"GET {{entityset}}?$orderby&$select&$skiptoken | {PAGED}": f"{PD}webapi/query/page-results.md",
    f"GET {{entityset}}?$filter&$orderby&$select | {PAGED}": f"{PD}webapi/query/filter-rows.md (ge on a date); "
                                                             "webapi/query/order-rows.md (two columns)",
    f"GET {{entityset}}?$filter&$orderby&$select&$skiptoken | {PAGED}": f"{PD}webapi/query/page-results.md",
    "GET audits?$filter&$orderby&$select&$top": f"{PD}auditing/retrieve-audit-data.md (audits with $select, "
                                                "$filter on objecttypecode, $orderby createdon, $top)",
    f"GET audits?$filter&$orderby&$select | {PAGED}": f"{PD}auditing/retrieve-audit-data.md; realdata 01",
    f"GET audits?$filter&$orderby&$select&$skiptoken | {PAGED}": f"{PD}webapi/query/page-results.md",
    "POST $batch | Prefer: odata.continue-on-error": f"{PD}webapi/execute-batch-operations-using-web-api.md "
                                                     "(Handling errors); realdata 21, 23",
    "GET audits({id})/Microsoft.Dynamics.CRM.RetrieveAuditDetails | Prefer: odata.include-annotations (in $batch)":
        f"{PD}auditing/retrieve-audit-data.md (RetrieveAuditDetails); "
        "webapi/execute-batch-operations-using-web-api.md (GET requests in a batch); realdata 02",
    "GET audits?$select&$top": f"{PD}auditing/retrieve-audit-data.md (doctor: can the user read audit rows)",
    "GET audits({id})/Microsoft.Dynamics.CRM.RetrieveAuditDetails": f"{PD}auditing/retrieve-audit-data.md "
                                                                    "(doctor: can the user read audit details)",
}
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DATA_SETS = {name for name, table in ENTITY_SETS.items() if table.logical_name != "audit"}


def shape(seen: Seen) -> str:
    """Method, path (ids, logical names and data entity sets as placeholders), query option names, Prefer
    preference names: what a doc has to show for the request to be a documented one."""
    path = GUID.sub("{id}", unquote(seen.path.removeprefix(API_PREFIX)))
    path = re.sub(r"LogicalName='[^']*'", "LogicalName='{name}'", path)
    head, _, rest = path.partition("/")
    path = "/".join(["{entityset}" if head in DATA_SETS else head, *([rest] if rest else [])])
    options = sorted({name for name, _ in parse_qsl(seen.query, keep_blank_values=True) if not name.startswith("@")})
    text = f"{seen.method} {path}" + ("?" + "&".join(options) if options else "")
    if seen.prefer:  # preferences are comma-separated; a quoted value may hold commas
        items = re.findall(r'(?:[^,"]|"[^"]*")+', seen.prefer)
        text += " | Prefer: " + ",".join(sorted(item.split("=")[0].strip() for item in items if item.strip()))
    return text + (" (in $batch)" if seen.in_batch else "")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[Seen]:
    root = tmp_path_factory.mktemp("shapes")
    options = SandboxOptions(change_tracking_off={"opportunity"})  # one table read by the modifiedon watermark
    with Sandbox(root / "sb", OrgState(seed=5, leads=300), options) as sandbox:
        assert sandbox.webapi is not None
        sandbox.webapi.seen = []
        settings = settings_for(sandbox, root / "data", L2C_PAGE_SIZE=20)  # small pages: nextLinks everywhere
        assert extract(settings).exit_code == 0
        sandbox.advance(6)  # within the 7 days a delta token lives
        assert extract(settings).exit_code == 0
        assert doctor(settings, emit=lambda check: None) == 0
        # A first backfill from L2C_SINCE: the watermark read filters from its first page on.
        assert extract(settings_for(sandbox, root / "since", L2C_PAGE_SIZE=20, L2C_SINCE="2025-03-01")).exit_code == 0
        return list(sandbox.webapi.seen)


def test_every_request_of_a_run_was_accepted_by_the_strict_sandbox(recorded: list[Seen]) -> None:
    refused = [(s.method, s.path, s.query, s.status) for s in recorded if s.status >= 400]
    assert refused == []
    assert len(recorded) > 50


def test_every_request_shape_is_documented(recorded: list[Seen]) -> None:
    shapes = Counter(shape(s) for s in recorded)
    undocumented = sorted(set(shapes) - set(DOCUMENTED))
    assert undocumented == [], "add each with the Microsoft doc or realdata payload that shows Dataverse accepting it"
    # The run reached every path whose shape is listed (a listed shape no run makes is a stale claim).
    assert sorted(set(DOCUMENTED) - set(shapes)) == []


def test_metadata_is_read_through_the_base_collection_and_the_datetime_cast(recorded: list[Seen]) -> None:
    paths = [unquote(s.path) + "?" + unquote(s.query) for s in recorded if "/Attributes" in s.path]
    assert paths and all(
        p.endswith("/Attributes?$select=LogicalName,ColumnNumber,AttributeType")
        or p.endswith("/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata?$select=LogicalName,Format,"
                      "DateTimeBehavior") for p in paths), paths


def test_the_shape_key_sees_what_matters(tmp_path: Path) -> None:
    seen = Seen("GET", f"{API_PREFIX}leads", "$select=leadid&$skiptoken=%3Ccookie%20pagenumber=%222%22%20/%3E",
                "odata.maxpagesize=100,odata.include-annotations=\"*\",odata.track-changes", 200)
    assert shape(seen) == f"GET {{entityset}}?$select&$skiptoken | {TRACKED}"
    batch = Seen("GET", f"{API_PREFIX}audits(0E76DC8A-41B5-EC11-983F-0022482BF046)/"
                        "Microsoft.Dynamics.CRM.RetrieveAuditDetails", "", None, 200, in_batch=True)
    assert shape(batch) == "GET audits({id})/Microsoft.Dynamics.CRM.RetrieveAuditDetails (in $batch)"
