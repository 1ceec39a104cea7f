"""Change tracking over real HTTPS: the initial sync, delta links after the clock moves, deletions, the errors
and token expiry of [PD] use-change-tracking-synchronize-data-external-systems.md (DATAVERSE.md).

Expected rows are the simulator's: the org's rows at the new clock whose versionnumber is above the token's
version, and the org's deletions after it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pytest
import requests

from sandbox.runtime import OrgState, SandboxOptions
from tests.sandbox.conftest import DATA_ENTITY_SETS, ApiClient, StartSandbox, deltatoken, error_of, page_values

TRACKED = DATA_ENTITY_SETS
PREFER = "odata.track-changes,odata.maxpagesize=17"
EXPIRED = (400, "0x80044352",
           "Version stamp associated with the client has expired. Please perform a full sync.")




def as_json(value: Any) -> Any:
    """A column value as the Web API writes it (DATAVERSE.md, "Values")."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat() if isinstance(value, date) else value


def properties(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if not k.startswith("@")}


def initial_sync(client: ApiClient, entity_set: str) -> tuple[list[dict[str, Any]], str]:
    responses = client.pages(entity_set, prefer=PREFER)
    assert "odata.track-changes" in responses[0].headers["Preference-Applied"]
    assert all("@odata.deltaLink" not in r.json() for r in responses[:-1])
    link = responses[-1].json()["@odata.deltaLink"]
    assert link.startswith(f"{client.api}/{entity_set}?$deltatoken=")
    return page_values(responses), link


def read_delta(client: ApiClient, link: str) -> tuple[list[dict[str, Any]], str, list[requests.Response]]:
    responses = client.pages(link, prefer=PREFER)
    for response in responses:
        assert response.json()["@odata.context"].endswith("/$delta")
    return page_values(responses), responses[-1].json()["@odata.deltaLink"], responses


def test_delta_links_return_exactly_the_changes_and_deletions(api_start: StartSandbox) -> None:
    # A retention of 90 days (organization.expirechangetrackingindays) lets 45 days of changes, deletions
    # included, come through one delta link.
    sandbox = api_start(OrgState(seed=42, leads=300), SandboxOptions(expire_change_tracking_days=90))
    client = ApiClient.connect(sandbox)
    links: dict[str, str] = {}
    for entity_set, (table, pk) in TRACKED.items():
        rows, link = initial_sync(client, entity_set)
        org = {row[pk]: row for row in sandbox.org.rows[table].iter_rows(named=True)}
        assert len(rows) == len(org) == len({row[pk] for row in rows})
        for row in rows:
            assert properties(row) == {k: as_json(v) for k, v in org[row[pk]].items()}
        version, issued = deltatoken(link)
        assert max(row["versionnumber"] for row in rows) <= version <= sandbox.org.max_version
        assert issued == sandbox.org.clock
        values, links[entity_set], _ = read_delta(client, link)
        assert values == [], f"{entity_set}: nothing changed yet"

    sandbox.advance(45)
    counted, pages = {"changed": 0, "deleted": 0}, {}
    for entity_set, (table, pk) in TRACKED.items():
        version, _ = deltatoken(links[entity_set])
        changed = sandbox.org.rows[table].filter(pl.col("versionnumber") > version).sort("versionnumber")
        gone = sandbox.org.deleted.filter((pl.col("table") == table) & (pl.col("version") > version))
        # the delta link with /$count answers the number of changes (plain text)
        count_link = links[entity_set].replace(f"/{entity_set}?", f"/{entity_set}/$count?")
        assert client.get(count_link).text == str(changed.height + gone.height), entity_set
        values, link, responses = read_delta(client, links[entity_set])
        entities = values[: changed.height]  # changed rows first, oldest change first
        assert [e[pk] for e in entities] == changed.get_column(pk).to_list(), entity_set
        for entity, row in zip(entities, changed.iter_rows(named=True), strict=True):
            assert entity["@odata.etag"] == f'W/"{row["versionnumber"]}"'
            assert properties(entity) == {k: as_json(v) for k, v in row.items()}
        deleted_context = f"{client.api}/$metadata#{entity_set}/$deletedEntity"
        assert sorted(values[changed.height:], key=lambda d: d["id"]) == [
            {"@odata.context": deleted_context, "id": gone_id, "reason": "deleted"}
            for gone_id in sorted(gone.get_column("id").to_list())
        ], entity_set
        counted["changed"] += changed.height
        counted["deleted"] += gone.height
        assert deltatoken(link)[0] >= version
        assert read_delta(client, link)[0] == [], f"{entity_set}: the new link starts after these changes"
        pages[entity_set] = len(responses)
    assert counted["changed"] > 17 and counted["deleted"] > 0, f"45 days must change and delete: {counted}"
    assert pages["leads"] > 1, "the delta of leads must page"


@pytest.mark.parametrize(("option", "value"), [
    ("$filter", "statecode eq 0"), ("$orderby", "createdon"), ("$top", "5"), ("$expand", "parentaccountid"),
])
def test_track_changes_refuses_other_query_options(api_client: ApiClient, option: str, value: str) -> None:
    response = api_client.get(f"leads?$select=leadid&{option}={value}", prefer="odata.track-changes")
    status, _, message = error_of(response)
    assert (status, message) == (400, f'The "{option}" query parameter isn\'t supported when Change Tracking '
                                      "is enabled.")


def test_a_table_without_change_tracking_says_so(api_start: StartSandbox) -> None:
    sandbox = api_start(options=SandboxOptions(change_tracking_off={"lead"}))
    client = ApiClient.connect(sandbox)
    refused = (400, "0x80072491", "Entity lead isn't enabled for change tracking.")
    assert error_of(client.get("leads?$select=leadid", prefer="odata.track-changes")) == refused
    _, link = initial_sync(client, "opportunities")
    stored = link.replace("/opportunities?", "/leads?")  # a link kept from before tracking was turned off
    assert error_of(client.get(stored, prefer="odata.track-changes")) == refused
    assert len(page_values(client.pages("leads?$select=leadid"))) == sandbox.org.rows["lead"].height
    body = client.ok("EntityDefinitions?$select=LogicalName,ChangeTrackingEnabled")
    enabled = {entity["LogicalName"]: entity["ChangeTrackingEnabled"] for entity in body["value"]}
    assert enabled["lead"] is False
    assert all(enabled[table] for table, _ in TRACKED.values() if table != "lead")


def test_tracking_is_on_for_every_synced_table_by_default(api_client: ApiClient) -> None:
    body = api_client.ok("EntityDefinitions?$select=LogicalName,ChangeTrackingEnabled"
                         "&$filter=ChangeTrackingEnabled eq true")
    assert {table for table, _ in TRACKED.values()} <= {entity["LogicalName"] for entity in body["value"]}


@pytest.mark.parametrize("tracked", [True, False])
def test_audit_change_tracking_is_what_entitydefinitions_says(api_start: StartSandbox, tracked: bool) -> None:
    """The docs list Audit among the system tables with change tracking on ([PD] use-change-tracking-synchronize-
    data-external-systems.md); `change_tracking_off` turns it off as for any table. A tracked read of `audits` is
    documented nowhere: with tracking on the sandbox refuses it as an option it does not emulate (inferred), with
    it off as Dataverse refuses any untracked table. A plain read works either way."""
    sandbox = api_start(options=SandboxOptions(change_tracking_off=set() if tracked else {"audit"}))
    client = ApiClient.connect(sandbox)
    definition = client.ok("EntityDefinitions(LogicalName='audit')?$select=LogicalName,ChangeTrackingEnabled")
    assert definition["ChangeTrackingEnabled"] is tracked
    listed = client.ok("EntityDefinitions?$select=LogicalName&$filter=ChangeTrackingEnabled eq true")
    assert ("audit" in {entity["LogicalName"] for entity in listed["value"]}) is tracked
    refused = ((400, "0x80060888", "Change tracking of audits is not supported by the sandbox.") if tracked else
               (400, "0x80072491", "Entity audit isn't enabled for change tracking."))
    assert error_of(client.get("audits?$select=auditid", prefer="odata.track-changes")) == refused
    assert error_of(client.get("audits/$count?$deltatoken=1%2101%2f01%2f2025%2000%3a00%3a00")) == refused
    assert len(page_values(client.pages("audits?$select=auditid"))) == sandbox.org.audits.height


def test_a_delta_token_expires_after_the_orgs_retention(api_start: StartSandbox) -> None:
    sandbox = api_start()  # expirechangetrackingindays = 7, the default
    client = ApiClient.connect(sandbox)
    _, first = initial_sync(client, "leads")
    sandbox.advance(6)
    _, second, _ = read_delta(client, first)
    sandbox.advance(2)  # `first` is 8 days old, `second` 2
    assert error_of(client.get(first, prefer="odata.track-changes")) == EXPIRED
    changes, _, _ = read_delta(client, second)
    version, _ = deltatoken(second)
    leads = sandbox.org.rows["lead"]
    expected = leads.filter(pl.col("versionnumber") > version).sort("versionnumber").get_column("leadid")
    assert [row["leadid"] for row in changes] == expected.to_list() != []


def newest(entries: list[dict[str, Any]], pk: str) -> dict[str, int]:
    """What a client holds after applying `entries` in order: each live row's newest versionnumber (a row
    read twice keeps the higher), deletions removed."""
    held: dict[str, int] = {}
    for entry in entries:
        if entry.get("reason") == "deleted":
            held.pop(entry["id"], None)
        else:
            held[entry[pk]] = max(entry["versionnumber"], held.get(entry[pk], 0))
    return held


def org_versions(sandbox: Any, table: str, pk: str) -> dict[str, int]:
    rows = sandbox.org.rows[table].select(pk, "versionnumber")
    return dict(zip(rows.get_column(pk).to_list(), rows.get_column("versionnumber").to_list(), strict=True))


def test_changes_made_while_a_tracking_read_pages_come_in_the_next_delta(api_start: StartSandbox) -> None:
    # A run that reads the first page of a sync, is killed, and resumes at the nextLink days later: the rows of
    # the first page that changed meanwhile must come in the first delta, or the client never sees them.
    sandbox = api_start(OrgState(seed=42, leads=600), SandboxOptions(expire_change_tracking_days=90))
    client = ApiClient.connect(sandbox)
    prefer = "odata.track-changes,odata.maxpagesize=500"  # most leads on the first page: some of them change
    started = (sandbox.org.max_version, sandbox.org.clock)
    first = client.get("leads", prefer=prefer)
    page_one = {row["leadid"] for row in first.json()["value"]}
    sandbox.advance(10)
    rest = client.pages(first.json()["@odata.nextLink"], prefer=prefer)
    link = rest[-1].json()["@odata.deltaLink"]
    # "An empty JSON response is returned if no table changes have occurred after the initial change tracking
    # request was called" ([PD] use-change-tracking-synchronize-data-external-systems.md)
    assert deltatoken(link) == started
    now = org_versions(sandbox, "lead", "leadid")
    changed_meanwhile = {lead for lead in page_one if now.get(lead, 0) > started[0]}
    assert changed_meanwhile, "the days must change a row of the first page, or this proves nothing"
    delta, link, _ = read_delta(client, link)
    assert changed_meanwhile <= {row.get("leadid") for row in delta}
    assert newest([*page_values([first, *rest]), *delta], "leadid") == now

    # A delta that pages across a change: it holds the changes up to its first request, the next delta the rest.
    sandbox.advance(10)
    synced = newest([*page_values([first, *rest]), *delta], "leadid")
    started = (sandbox.org.max_version, sandbox.org.clock)
    small = "odata.track-changes,odata.maxpagesize=5"
    head = client.get(link, prefer=small)
    sandbox.advance(10)
    tail = client.pages(head.json()["@odata.nextLink"], prefer=small)
    link = tail[-1].json()["@odata.deltaLink"]
    assert deltatoken(link) == started
    window = page_values([head, *tail])
    assert all(started[0] >= row["versionnumber"] for row in window if "versionnumber" in row)
    later, _, _ = read_delta(client, link)
    assert later, "the days between the delta's pages must change something"
    held = [{"leadid": lead, "versionnumber": version} for lead, version in synced.items()]
    assert newest([*held, *window, *later], "leadid") == org_versions(sandbox, "lead", "leadid")
