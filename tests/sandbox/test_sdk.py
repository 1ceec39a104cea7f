"""Microsoft's Python SDK (PowerPlatform-Dataverse-Client) reads every table of the sandbox through its own
paging: it resolves the entity set from EntityDefinitions, sends `Prefer: odata.maxpagesize` and follows
@odata.nextLink (PowerPlatform/Dataverse/data/_odata.py, `_get_multiple`).

The SDK makes its own requests.Session, whose trust comes from REQUESTS_CA_BUNDLE; for these tests only, that
names a bundle of certifi's CAs plus the sandbox's CA. Verification stays on, as the refusal test shows.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.config import DataverseConfig

from sandbox.runtime import Sandbox
from tests.sandbox.conftest import ApiClient

TABLES = {
    "lead": "leadid", "opportunity": "opportunityid", "quote": "quoteid", "salesorder": "salesorderid",
    "invoice": "invoiceid", "account": "accountid", "systemuser": "systemuserid",
    "transactioncurrency": "transactioncurrencyid",
}
PAGE = 53


class MsalCredential:
    """An azure-core TokenCredential that gets its tokens from MSAL's confidential client."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        result = self.client.app.acquire_token_for_client(list(scopes))
        if "access_token" not in result:
            raise ClientAuthenticationError(message=str(result.get("error_description")))
        return AccessToken(result["access_token"], int(time.time()) + int(result["expires_in"]))


def trust(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(bundle))


@pytest.fixture
def api_sdk_trust(api_sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + api_sandbox.tls.ca_path.read_bytes())
    trust(monkeypatch, bundle)
    return bundle


@pytest.mark.usefixtures("api_sdk_trust")
@pytest.mark.parametrize("table", TABLES)
def test_the_sdk_lists_every_row_of_each_table(api_sandbox: Sandbox, api_client: ApiClient,
                                               table: str) -> None:
    pk = TABLES[table]
    expected = api_sandbox.org.rows[table].get_column(pk).to_list()
    credential = MsalCredential(api_client)
    with DataverseClient(api_sandbox.url, credential) as client:
        pages = list(client.records.list_pages(table, select=[pk], page_size=PAGE))
    ids = [record[pk] for page in pages for record in page]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected)
    assert len(pages) == math.ceil(len(expected) / PAGE)
    assert set(credential.scopes) == {(f"{api_sandbox.url}/.default",)}


def test_the_sdk_refuses_the_sandbox_without_its_ca(api_sandbox: Sandbox, api_client: ApiClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    trust(monkeypatch, Path(certifi.where()))
    config = DataverseConfig(http_retries=1)  # one attempt: no backoff sleeps inside the SDK
    with DataverseClient(api_sandbox.url, MsalCredential(api_client), config) as client:
        with pytest.raises(requests.exceptions.SSLError):
            client.records.list("lead", select=["leadid"], page_size=PAGE)
