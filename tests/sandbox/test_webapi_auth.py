"""Who may call the Web API: bearer tokens from the sandbox's Entra ID, through the real MSAL over HTTPS.

A refused token gets a real org's 401: an empty body and the `WWW-Authenticate: Bearer authorization_uri=...,
resource_id=...` challenge (DATAVERSE.md "Service protection"). Token lifetimes are checked on the Entra
emulator's own clock (`Entra.clock`), which a test replaces: no sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.entra import AppRegistry, Entra
from sandbox.runtime import CLIENT_ID, TENANT_ID, OrgState, Sandbox, SandboxOptions
from tests.sandbox.conftest import ApiClient, StartSandbox, running_sandbox

LIFETIME = 120  # at most 300 s, so MSAL asks for a new token on every call


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def api_auth_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    options = SandboxOptions(token_lifetime=LIFETIME)
    state_dir = tmp_path_factory.mktemp("auth_org")
    with running_sandbox(state_dir, OrgState(seed=42, leads=300), options) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def api_auth_client(api_auth_sandbox: Sandbox) -> ApiClient:
    return ApiClient.connect(api_auth_sandbox)


def who_am_i(client: ApiClient, authorization: str | None) -> tuple[int, str | None, bytes]:
    headers = {"Accept": "application/json"} if authorization is None else {"Authorization": authorization}
    response = client.http.get(f"{client.api}/WhoAmI", headers=headers, timeout=30)
    return response.status_code, response.headers.get("WWW-Authenticate"), response.content


def challenge(sandbox: Sandbox) -> str:
    return f"Bearer authorization_uri={sandbox.url}/{TENANT_ID}/oauth2/authorize, resource_id={sandbox.url}/"


def refused(client: ApiClient, authorization: str | None) -> None:
    assert who_am_i(client, authorization) == (401, challenge(client.sandbox), b"")


def test_a_token_from_msal_is_accepted(api_auth_client: ApiClient, api_auth_sandbox: Sandbox) -> None:
    result = api_auth_client.acquire()
    assert result["token_type"] == "Bearer" and result["expires_in"] == LIFETIME
    assert api_auth_client.ok("WhoAmI")["UserId"] == api_auth_sandbox.org.meta.app_user_id


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer not.a.jwt", "Basic dXNlcjpwYXNzd29yZA==", "Bearer eyJhbGciOiJub25lIn0.e30.",
])
def test_missing_or_malformed_tokens_get_the_challenge(api_auth_client: ApiClient,
                                                       authorization: str | None) -> None:
    refused(api_auth_client, authorization)


def test_a_tampered_token_is_refused(api_auth_client: ApiClient) -> None:
    token = api_auth_client.token()
    claims = jwt.decode(token, options={"verify_signature": False})
    header, _, signature = token.split(".")
    other_payload = jwt.encode({**claims, "oid": str(uuid.uuid4())}, "k" * 32, "HS256").split(".")[1]
    refused(api_auth_client, f"Bearer {header}.{other_payload}.{signature}")


def test_tokens_signed_by_another_key_are_refused(api_auth_client: ApiClient,
                                                  api_auth_sandbox: Sandbox) -> None:
    assert api_auth_sandbox.entra is not None
    app = api_auth_sandbox.entra.registry.get(CLIENT_ID)
    assert app is not None
    impostor = Entra(AppRegistry(), token_lifetime=LIFETIME)  # the same claims, its own signing key
    refused(api_auth_client, f"Bearer {impostor.issue_token(app, api_auth_sandbox.url)}")
    claims = jwt.decode(api_auth_client.token(), options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, key, "RS256", headers={"kid": api_auth_sandbox.entra.key_id})
    refused(api_auth_client, f"Bearer {forged}")


def test_a_token_for_another_resource_is_refused(api_auth_client: ApiClient,
                                                 api_auth_sandbox: Sandbox) -> None:
    assert api_auth_sandbox.entra is not None
    app = api_auth_sandbox.entra.registry.get(CLIENT_ID)
    assert app is not None
    other = api_auth_sandbox.entra.issue_token(app, "https://contoso.crm.dynamics.com")
    refused(api_auth_client, f"Bearer {other}")
    result = api_auth_client.app.acquire_token_for_client(["https://contoso.crm.dynamics.com/.default"])
    assert result["error"] == "invalid_resource" and 500011 in result["error_codes"]


def test_a_token_msal_got_for_another_org_of_the_tenant_gets_the_challenge(api_start: StartSandbox) -> None:
    other = "https://contoso.crm.dynamics.com"
    sandbox = api_start(options=SandboxOptions(other_org_urls=(other,)))
    client = ApiClient.connect(sandbox)
    result = client.app.acquire_token_for_client([f"{other}/.default"])  # the tenant issues it: another env
    assert "access_token" in result, result
    assert jwt.decode(result["access_token"], options={"verify_signature": False})["aud"] == other
    refused(client, f"Bearer {result['access_token']}")  # 401, empty body, the challenge names this org
    assert client.ok("WhoAmI")["UserId"] == sandbox.org.meta.app_user_id  # its own org's token still works


NOT_MEMBER = {"error": {"code": "0x80072560", "message": "The user is not a member of the organization."}}


def restricted(client_id: str) -> dict[str, dict[str, str]]:
    # Shared payload 18 (microsoft/PowerPlatform-DataverseServiceClient#528), with this app's id.
    return {"error": {"code": "0x80095ffc", "message": f"Access to Dataverse API is restricted for this application "
                      f"Id : '{client_id}'. Please contact your administrator for more information."}}


@pytest.mark.parametrize("refusal", ["not_member", "api_restricted"])
def test_a_signed_in_app_the_org_refuses_gets_403_on_every_request(api_start: StartSandbox, refusal: str) -> None:
    sandbox = api_start(options=SandboxOptions(**{refusal: True}))
    client = ApiClient.connect(sandbox)
    expected = NOT_MEMBER if refusal == "not_member" else restricted(CLIENT_ID)
    for target in ("WhoAmI", "leads?$select=leadid", "EntityDefinitions?$select=LogicalName", "audits",
                   "nosuchentities"):
        response = client.get(target)
        assert (response.status_code, response.json()) == (403, expected), target
        assert response.headers["Content-Type"].startswith("application/json") and response.headers["REQ_ID"]
    batch = client.batch(["WhoAmI"])
    assert (batch.status_code, batch.json()) == (403, expected)
    assert sandbox.webapi is not None and sandbox.webapi.counts["requests"] == 0  # refused before admission
    refused(client, "Bearer not.a.jwt")  # a bad token is still a 401: the token is checked first


def test_an_expired_token_is_refused_after_the_clock_skew(api_auth_client: ApiClient,
                                                          api_auth_sandbox: Sandbox,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert api_auth_sandbox.entra is not None
    clock = FakeClock(1_900_000_000.0)
    monkeypatch.setattr(api_auth_sandbox.entra, "clock", clock)
    token = api_auth_client.token()  # issued at the fake now, expires LIFETIME later
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(clock.now) + LIFETIME
    clock.now += LIFETIME + 299  # Microsoft.IdentityModel allows 5 minutes of clock skew
    assert who_am_i(api_auth_client, f"Bearer {token}")[0] == 200
    clock.now += 1
    refused(api_auth_client, f"Bearer {token}")
    assert api_auth_client.ok("WhoAmI")["UserId"]  # MSAL's next token is valid again


def test_msal_with_a_wrong_secret_gets_invalid_client(api_auth_sandbox: Sandbox) -> None:
    result = ApiClient.connect(api_auth_sandbox, secret="not-the-secret").acquire()
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


def test_msal_with_an_unknown_app_gets_unauthorized_client(api_auth_sandbox: Sandbox) -> None:
    stranger = str(uuid.uuid4())
    result = ApiClient.connect(api_auth_sandbox, client_id=stranger).acquire()
    assert result["error"] == "unauthorized_client" and result["error_codes"] == [700016]
    assert f"Application with identifier '{stranger}' was not found" in result["error_description"]
