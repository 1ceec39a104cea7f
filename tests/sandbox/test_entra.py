"""The Entra ID emulator against the real MSAL over HTTPS, and the Web API's bearer-token check."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import msal
import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sandbox.entra import AppRegistration, AppRegistry, Entra, InvalidToken
from sandbox.server import SandboxServer
from sandbox.tls import ClientCertificate, SandboxTLS, make_client_certificate
from sandbox.wire import Headers, Request, Response, json_response

TENANT = "7f3c1b2a-4d5e-4f60-8a9b-0c1d2e3f4a5b"
SECRET_APP = "2b7d9e4f-1a3c-4e5b-9d7f-6a8b0c2d4e6f"
CERT_APP = "5c8e0f2a-3b4d-4c6e-8f0a-1b2c3d4e5f60"
USER = "9f0e1d2c-3b4a-4958-8776-a5b4c3d2e1f0"
SECRET = "s3cret~value"
ERROR_KEYS = {
    "error",
    "error_description",
    "error_codes",
    "timestamp",
    "trace_id",
    "correlation_id",
    "error_uri",
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class EntraEnv:
    url: str
    entra: Entra
    cert: ClientCertificate
    http: requests.Session

    def app(self, client_id: str, credential: Any, tenant: str = TENANT) -> msal.ClientApplication:
        return msal.ConfidentialClientApplication(
            client_id,
            authority=f"{self.url}/{tenant}",
            client_credential=credential,
            instance_discovery=False,
            http_client=self.http,
        )

    def token_endpoint(self) -> str:
        return f"{self.url}/{TENANT}/oauth2/v2.0/token"


def router(entra: Entra, resource: Callable[[], str]) -> Callable[[Request], Response]:
    """Entra under /{tenant}/..., and a stand-in Web API route that only checks the bearer token."""

    def app(request: Request) -> Response:
        if request.path.startswith("/api/data/"):
            try:
                claims = entra.verify_access_token(request.headers.get("Authorization"), resource())
            except InvalidToken as exc:
                return exc.response
            return json_response(200, {"UserId": claims["oid"]})
        return entra(request)

    return app


@pytest.fixture(scope="module")
def entra_env(tls_material: SandboxTLS) -> Iterator[EntraEnv]:
    cert = make_client_certificate(password="cert-pass")
    registry = AppRegistry()
    registry.add(AppRegistration(SECRET_APP, TENANT, USER, secret=SECRET))
    registry.add(AppRegistration(CERT_APP, TENANT, USER, certificate=cert.cert_pem))
    entra = Entra(registry)
    holder: list[str] = []
    server = SandboxServer(router(entra, lambda: holder[0]), ssl_context=tls_material.server_context).start()
    holder.append(server.url)
    http = requests.Session()
    http.trust_env = False
    http.verify = str(tls_material.ca_path)
    yield EntraEnv(server.url, entra, cert, http)
    http.close()
    server.stop()


def test_secret_credential_gets_a_token_for_the_org(entra_env: EntraEnv) -> None:
    result = entra_env.app(SECRET_APP, SECRET).acquire_token_for_client([f"{entra_env.url}/.default"])
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == result["ext_expires_in"] == 3599
    claims = entra_env.entra.verify_access_token(f"Bearer {result['access_token']}", entra_env.url)
    assert claims["oid"] == USER and claims["tid"] == TENANT and claims["appid"] == SECRET_APP
    assert claims["aud"] == entra_env.url and claims["appidacr"] == "1"
    assert claims["exp"] - claims["iat"] == 3599
    who = entra_env.http.get(
        f"{entra_env.url}/api/data/v9.2/WhoAmI", headers={"Authorization": f"Bearer {result['access_token']}"}
    )
    assert who.json() == {"UserId": USER}


def test_token_response_has_exactly_entras_keys(entra_env: EntraEnv) -> None:
    response = entra_env.http.post(
        entra_env.token_endpoint(),
        data={
            "client_id": SECRET_APP,
            "client_secret": SECRET,
            "grant_type": "client_credentials",
            "scope": f"{entra_env.url}/.default",
        },
    )
    assert response.status_code == 200
    assert list(response.json()) == ["token_type", "expires_in", "ext_expires_in", "access_token"]


@pytest.mark.parametrize("form", ["thumbprint", "public_certificate"])
def test_certificate_credential_gets_a_token(entra_env: EntraEnv, form: str) -> None:
    cert = entra_env.cert
    credential: dict[str, str] = {"private_key": cert.private_key_pem.decode(), "passphrase": "cert-pass"}
    if form == "thumbprint":  # MSAL signs RS256 with x5t (SHA-1)
        credential["thumbprint"] = cert.sha1_thumbprint
    else:  # MSAL signs PS256 with x5t#S256 and x5c
        credential["public_certificate"] = cert.cert_pem.decode()
    result = entra_env.app(CERT_APP, credential).acquire_token_for_client([f"{entra_env.url}/.default"])
    assert "access_token" in result, result
    claims = entra_env.entra.verify_access_token(f"Bearer {result['access_token']}", entra_env.url)
    assert claims["appid"] == CERT_APP and claims["appidacr"] == "2" and claims["oid"] == USER


def assert_entra_error(result: dict[str, Any], error: str, code: int) -> None:
    assert ERROR_KEYS <= set(result), result
    assert result["error"] == error and result["error_codes"] == [code]
    description = result["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    trace, correlation = result["trace_id"], result["correlation_id"]
    assert f"\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\n" in description
    assert description.endswith(f"Timestamp: {result['timestamp']}")
    assert result["error_uri"].endswith(f"/error?code={code}")


def test_wrong_secret_is_invalid_client_7000215(entra_env: EntraEnv) -> None:
    app = entra_env.app(SECRET_APP, "not-the-secret")
    result = app.acquire_token_for_client([f"{entra_env.url}/.default"])
    assert_entra_error(result, "invalid_client", 7000215)
    assert SECRET_APP in result["error_description"]


def test_unknown_app_is_unauthorized_client_700016(entra_env: EntraEnv) -> None:
    stranger = str(uuid.uuid4())
    result = entra_env.app(stranger, SECRET).acquire_token_for_client([f"{entra_env.url}/.default"])
    assert_entra_error(result, "unauthorized_client", 700016)
    assert f"'{stranger}' was not found in the directory '{TENANT}'" in result["error_description"]


def test_unregistered_certificate_is_invalid_client_700027(entra_env: EntraEnv) -> None:
    other = make_client_certificate()
    credential = {"private_key": other.private_key_pem.decode(), "thumbprint": other.sha1_thumbprint}
    result = entra_env.app(CERT_APP, credential).acquire_token_for_client([f"{entra_env.url}/.default"])
    assert_entra_error(result, "invalid_client", 700027)
    assert "The key was not found" in result["error_description"]


def test_unknown_tenant_fails_discovery(entra_env: EntraEnv) -> None:
    response = entra_env.http.get(f"{entra_env.url}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert_entra_error(response.json(), "invalid_request", 90002)
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        entra_env.app(SECRET_APP, SECRET, tenant=str(uuid.uuid4()))


def test_discovery_points_at_the_sandbox(entra_env: EntraEnv) -> None:
    config = entra_env.http.get(f"{entra_env.url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == entra_env.token_endpoint()
    assert config["authorization_endpoint"] == f"{entra_env.url}/{TENANT}/oauth2/v2.0/authorize"
    assert config["issuer"] == f"{entra_env.url}/{TENANT}/v2.0"
    keys = entra_env.http.get(config["jwks_uri"]).json()["keys"]
    assert [k["kid"] for k in keys] == [entra_env.entra.key_id]


def post_token(env: EntraEnv, **form: str) -> requests.Response:
    base = {
        "client_id": SECRET_APP,
        "client_secret": SECRET,
        "grant_type": "client_credentials",
        "scope": f"{env.url}/.default",
    }
    return env.http.post(env.token_endpoint(), data={k: v for k, v in {**base, **form}.items() if v != ""})


@pytest.mark.parametrize(
    ("form", "status", "error", "code"),
    [
        ({"scope": "https://example.crm.dynamics.com/user_impersonation"}, 400, "invalid_scope", 1002012),
        ({"scope": "{url}/.default {url}/user_impersonation"}, 400, "invalid_scope", 70011),
        ({"scope": "https://other.crm.dynamics.com/.default"}, 400, "invalid_resource", 500011),
        ({"scope": ""}, 400, "invalid_request", 900144),
        ({"client_id": ""}, 400, "invalid_request", 900144),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"client_secret": ""}, 401, "invalid_client", 7000218),
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_secret": "wrong-é-ü-€-密码"}, 401, "invalid_client", 7000215),  # was a 500 (compare_digest)
    ],
)
def test_token_endpoint_errors(
    entra_env: EntraEnv, form: dict[str, str], status: int, error: str, code: int
) -> None:
    form = {k: v.replace("{url}", entra_env.url) for k, v in form.items()}
    response = post_token(entra_env, **form)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert_entra_error(response.json(), error, code)


def test_trailing_slash_resource_is_the_same_org(entra_env: EntraEnv) -> None:
    response = post_token(entra_env, scope=f"{entra_env.url}//.default")
    token = response.json()["access_token"]
    assert entra_env.entra.verify_access_token(f"Bearer {token}", entra_env.url + "/")["aud"] == entra_env.url


def assertion(env: EntraEnv, **overrides: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(env.cert.private_key_pem, b"cert-pass")
    now = time.time()
    claims = {
        "aud": env.token_endpoint(),
        "iss": CERT_APP,
        "sub": CERT_APP,
        "exp": now + 600,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="PS256", headers={"x5t#S256": env.cert.x5t_s256})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": time.time() - 60}, 700024),
        ({"aud": "https://login.microsoftonline.com/common/oauth2/v2.0/token"}, 50012),
        ({"iss": SECRET_APP}, 700021),
        ({"tamper": True}, 700027),
    ],
)
def test_bad_client_assertions(entra_env: EntraEnv, overrides: dict[str, Any], code: int) -> None:
    tamper = overrides.pop("tamper", False)
    signed = assertion(entra_env, **overrides)
    if tamper:
        head, body, sig = signed.split(".")
        signed = ".".join([head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    response = post_token(
        entra_env,
        client_id=CERT_APP,
        client_secret="",
        client_assertion_type=ASSERTION_TYPE,
        client_assertion=signed,
    )
    assert response.status_code == 401
    assert_entra_error(response.json(), "invalid_client", code)


# --- the Web API's check ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


ORG = "https://org.crm.dynamics.com"
Clocked = tuple[Entra, Clock, AppRegistration]


@pytest.fixture
def entra_clocked() -> Clocked:
    clock = Clock()
    registry = AppRegistry()
    app = registry.add(AppRegistration(SECRET_APP, TENANT, USER, secret=SECRET))
    return Entra(registry, base_url="https://login.sandbox", token_lifetime=600, clock=clock), clock, app


def rejection(entra: Entra, header: str | None, resource: str = ORG) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        entra.verify_access_token(header, resource)
    response = info.value.response
    assert response.status == 401 and response.body == b""
    assert response.header("WWW-Authenticate") == (
        f"Bearer authorization_uri=https://login.sandbox/{TENANT}/oauth2/authorize, resource_id={resource}/"
    )
    return info.value


def test_missing_and_malformed_tokens_get_the_challenge(entra_clocked: Clocked) -> None:
    entra, _, _ = entra_clocked
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt"):
        rejection(entra, header)


def test_expiry_allows_the_identitymodel_clock_skew(entra_clocked: Clocked) -> None:
    entra, clock, app = entra_clocked
    token = entra.issue_token(app, ORG)
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(clock.now) + 600
    clock.now += 600 + 299
    assert entra.verify_access_token(f"Bearer {token}", ORG)["oid"] == USER
    clock.now += 1
    assert "expired" in rejection(entra, f"Bearer {token}").reason


def test_wrong_audience_is_rejected(entra_clocked: Clocked) -> None:
    entra, _, app = entra_clocked
    token = entra.issue_token(app, "https://other.crm.dynamics.com")
    assert "audience" in rejection(entra, f"Bearer {token}").reason


def test_forged_tokens_are_rejected(entra_clocked: Clocked) -> None:
    entra, clock, app = entra_clocked
    impostor = Entra(AppRegistry(), clock=clock)  # same claims, another signing key
    rejection(entra, f"Bearer {impostor.issue_token(app, ORG)}")
    claims = jwt.decode(entra.issue_token(app, ORG), options={"verify_signature": False})
    guess = "a-guessed-shared-secret-32-bytes!"
    hmac_forgery = jwt.encode(claims, guess, "HS256", headers={"kid": entra.key_id})
    rejection(entra, f"Bearer {hmac_forgery}")
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    rejection(entra, f"Bearer {unsigned}")


def test_challenge_falls_back_to_the_org_origin() -> None:
    registry = AppRegistry()
    registry.add(AppRegistration(SECRET_APP, TENANT, USER, secret=SECRET))
    entra = Entra(registry)
    with pytest.raises(InvalidToken) as info:
        entra.verify_access_token(None, "https://127.0.0.1:8443")
    assert info.value.response.header("WWW-Authenticate") == (
        f"Bearer authorization_uri=https://127.0.0.1:8443/{TENANT}/oauth2/authorize, "
        "resource_id=https://127.0.0.1:8443/"
    )


def test_web_api_answers_401_with_the_challenge_over_https(entra_env: EntraEnv) -> None:
    response = entra_env.http.get(f"{entra_env.url}/api/data/v9.2/WhoAmI")
    assert response.status_code == 401 and response.content == b""
    assert response.headers["WWW-Authenticate"] == (
        f"Bearer authorization_uri={entra_env.url}/{TENANT}/oauth2/authorize, resource_id={entra_env.url}/"
    )


# --- malformed input to the token endpoint: Entra's 400 or 401, never a 500 -----------------------------------

FIELDS = ("grant_type", "client_id", "client_secret", "scope", "client_assertion", "client_assertion_type")
ANY_VALUE = st.one_of(st.text(max_size=40), st.sampled_from(["client_credentials", SECRET_APP, CERT_APP, SECRET,
                                                             ASSERTION_TYPE, "https://org/.default", ""]))
CLAIM = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                  st.lists(st.one_of(st.text(max_size=10), st.integers()), max_size=3),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def token_request(body: bytes) -> Response:
    entra = _FUZZED[0]
    return entra(Request("POST", f"/{TENANT}/oauth2/v2.0/token", "",
                         Headers({"Host": "login.sandbox", "Content-Type": "application/x-www-form-urlencoded"}),
                         body))


def assert_entras_refusal(response: Response) -> None:
    assert response.status in (400, 401), response.body[:300]
    document = json.loads(response.body)
    assert set(document) == ERROR_KEYS and document["error_codes"]


_CERT = make_client_certificate(password=None)
_FUZZED: list[Entra] = []


def fuzzed() -> Entra:
    if not _FUZZED:
        registry = AppRegistry()
        registry.add(AppRegistration(SECRET_APP, TENANT, USER, secret=SECRET))
        registry.add(AppRegistration(CERT_APP, TENANT, USER, certificate=_CERT.cert_pem))
        _FUZZED.append(Entra(registry, base_url="https://login.sandbox"))
    return _FUZZED[0]


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE).map(lambda form: urlencode(form).encode())))
def test_any_malformed_form_is_refused_as_entra_refuses_never_a_500(body: bytes) -> None:
    fuzzed()
    response = token_request(body)
    assert response.status != 500
    if response.status != 200:  # a fuzzed form can be a good one
        assert_entras_refusal(response)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["aud", "iss", "sub", "exp", "nbf", "iat"]), CLAIM, min_size=1))
# Each was a 500: an `exp` far out of the platform's time range, a `nbf` that is no number, an `aud` list of objects.
@example({"exp": -6.776804060974081e16})
@example({"exp": 4_102_444_800, "nbf": "yesterday"})
@example({"exp": 4_102_444_800, "aud": [{"a": 1}]})
def test_an_assertion_with_claims_of_any_type_is_refused_never_a_500(claims: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(_CERT.private_key_pem, None)
    # Signed as bytes: PyJWT's encode refuses some of these claims itself.
    signed = jwt.PyJWS().encode(json.dumps(claims).encode(), key, algorithm="PS256",  # type: ignore[arg-type]
                                headers={"x5t#S256": _CERT.x5t_s256})
    fuzzed()
    response = token_request(urlencode({"grant_type": "client_credentials", "client_id": CERT_APP,
                                        "scope": "https://login.sandbox/.default", "client_assertion": signed,
                                        "client_assertion_type": ASSERTION_TYPE}).encode())
    assert_entras_refusal(response)
