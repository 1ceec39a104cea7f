"""Service protection over real HTTPS ([PD] api-limits.md, DATAVERSE.md "Service protection").

The sandbox's protection clock is replaced by a fake one, so windows and Retry-After are exact and a client
"waits" by moving that clock: no sleeps. Whether a client honoured Retry-After is read from the sandbox's own
record of requests that arrived inside a Retry-After window (`protection.violations()`).
"""

from __future__ import annotations

import re

import pytest
import requests

from sandbox.protection import Limits
from sandbox.runtime import Sandbox, SandboxOptions
from tests.sandbox.conftest import ApiClient, FakeClock, StartSandbox, batch_parts, error_of

BURST = "x-ms-ratelimit-burst-remaining-xrm-requests"
TIME_LEFT = "x-ms-ratelimit-time-remaining-xrm-requests"




def limited(api_start: StartSandbox, options: SandboxOptions) -> tuple[Sandbox, ApiClient, FakeClock]:
    sandbox = api_start(options=options)
    clock = FakeClock()
    sandbox.protection.clock = sandbox.protection.execution_clock = clock
    return sandbox, ApiClient.connect(sandbox), clock


def test_the_request_over_the_limit_is_429_with_the_documented_body(api_start: StartSandbox) -> None:
    sandbox, client, clock = limited(api_start, SandboxOptions(limits=Limits(requests=20)))
    for sent in range(1, 21):
        response = client.get("WhoAmI")
        assert response.status_code == 200
        assert response.headers[BURST] == str(20 - sent)
        assert response.headers[TIME_LEFT] == "1,200.00"  # execution seconds left, as real orgs write them
        assert re.fullmatch(r"\d+", response.headers["x-ms-dop-hint"])
        clock.advance(1)
    refused = client.get("WhoAmI")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "280"  # the first request leaves the 300 s window then
    assert refused.json() == {"error": {"code": "0x80072322", "message": (
        "Number of requests exceeded the limit of 20 over time window of 300 seconds.")}}
    clock.advance(280)
    assert client.get("WhoAmI").status_code == 200
    assert sandbox.protection.violations() == []


def test_a_batch_counts_as_one_request(api_start: StartSandbox) -> None:
    sandbox, client, _ = limited(api_start, SandboxOptions(limits=Limits(requests=20)))
    assert client.get("WhoAmI").headers[BURST] == "19"
    ids = sandbox.org.rows["lead"].get_column("leadid").head(50).to_list()
    response = client.batch([f"leads({lead})?$select=leadid" for lead in ids])
    assert response.status_code == 200 and response.headers[BURST] == "18"
    parts = batch_parts(response)
    assert [body["leadid"] for _, body in parts] == ids


def read_leads(client: ApiClient, clock: FakeClock, *, patient: bool) -> tuple[list[str], int]:
    """Page through leads; on a 429 wait Retry-After (on the fake clock). An impatient client first retries
    at once, as a naive retry loop does. Returns the ids and the number of 429s."""
    url: str | None = "leads?$select=leadid"
    ids: list[str] = []
    throttled = 0
    last: requests.Response | None = None
    while url is not None:
        response = client.get(url, prefer="odata.maxpagesize=20")
        if response.status_code == 429:
            throttled += 1
            assert error_of(response)[1] == "0x80072322"
            if patient or (last is not None and last.status_code == 429):
                clock.advance(int(response.headers["Retry-After"]))
        else:
            assert response.status_code == 200, response.text
            body = response.json()
            ids += [row["leadid"] for row in body["value"]]
            url = body.get("@odata.nextLink")
        last = response
    return ids, throttled


@pytest.mark.parametrize("patient", [True, False])
def test_throttled_clients_get_every_row_and_only_impatient_ones_violate(api_start: StartSandbox,
                                                                         patient: bool) -> None:
    options = SandboxOptions(throttle_fraction=0.3, throttle_retry_after=2, throttle_seed=7)
    sandbox, client, clock = limited(api_start, options)
    ids, throttled = read_leads(client, clock, patient=patient)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(sandbox.org.rows["lead"].get_column("leadid").to_list())
    assert throttled > 0 and len(sandbox.protection.throttle_events()) == throttled
    violations = sandbox.protection.violations()
    assert (violations == []) is patient, violations
