"""Entra ID emulator: OIDC discovery and the v2.0 token endpoint (client-credentials grant), and the token
check the Web API applies.

`Entra` is an App serving `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET
/{tenant}/discovery/v2.0/keys` and `POST /{tenant}/oauth2/v2.0/token` with every URL on the sandbox's own
origin (`base_url`, else `https://<Host>`). Apps authenticate with a client secret or a JWT assertion signed
by their registered certificate (RS256 + x5t, or PS256 + x5t#S256 as MSAL sends them; [entra-docs]
identity-platform/certificate-credentials.md). Errors have Entra's body (error, error_description with the
Trace ID / Correlation ID / Timestamp lines, error_codes, timestamp, trace_id, correlation_id, error_uri;
[entra-docs] identity-platform/reference-error-codes.md). Access tokens are RS256 JWTs shaped like the v1
tokens Dataverse receives (aud = org URL, iss sts.windows.net/{tid}/, appid, appidacr, oid = application
user). `verify_access_token` raises `InvalidToken`, whose `response` is a real org's 401: the
`WWW-Authenticate: Bearer authorization_uri=..., resource_id=<org>/` challenge and an empty body (real:
microsoft/PowerPlatform-DataverseServiceClient#117 and #162, where the SDK failed parsing that empty body).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.wire import Request, Response

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SCOPE_SUFFIX = "/.default"
CERT_DOC = (
    "Review the documentation at "
    "https://learn.microsoft.com/entra/identity-platform/certificate-credentials"
)
JSON_UTF8 = "application/json; charset=utf-8"
ROUTES = ("v2.0/.well-known/openid-configuration", "oauth2/v2.0/token", "discovery/v2.0/keys")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class AppRegistration:
    client_id: str
    tenant_id: str
    user_id: str  # systemuserid of the application user in Dataverse: the token's `oid`
    secret: str | None = None
    certificate: bytes | None = None  # PEM of the uploaded public certificate
    display_name: str = "l2c"

    def thumbprints(self) -> tuple[str, str] | None:
        """(x5t, x5t#S256) of the registered certificate, base64url, as they appear in a JWT header."""
        if self.certificate is None:
            return None
        cert = x509.load_pem_x509_certificate(self.certificate)
        return _b64url(cert.fingerprint(hashes.SHA1())), _b64url(cert.fingerprint(hashes.SHA256()))


@dataclass
class AppRegistry:
    apps: dict[str, AppRegistration] = field(default_factory=dict)
    tenants: set[str] = field(default_factory=set)  # tenants that exist even with no app registered

    def add(self, app: AppRegistration) -> AppRegistration:
        self.apps[app.client_id.lower()] = app
        self.tenants.add(app.tenant_id.lower())
        return app

    def get(self, client_id: str) -> AppRegistration | None:
        return self.apps.get(client_id.strip().lower())


# AADSTS code -> (HTTP status, OAuth error, description template). Texts are real (quoted from responses in
# public issues) unless marked inferred; invalid_client answers 401, everything else 400.
AADSTS: dict[int, tuple[int, str, str]] = {
    900144: (400, "invalid_request", "The request body must contain the following parameter: '{name}'."),
    900561: (400, "invalid_request",
        "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."),
    90002: (400, "invalid_request",
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into"
        " the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant."),
    70003: (400, "unsupported_grant_type",  # inferred
        "The app requested an unsupported grant type '{grant}'."),
    700016: (400, "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented to"
        " by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
    70011: (400, "invalid_scope",
        "The provided request must include a 'scope' input parameter. The provided value for the input "
        "parameter 'scope' is not valid. The scope {scope} is not valid. .default scope can't be combined "
        "with resource-specific scopes."),
    # Text quoted in MicrosoftDocs/azure-docs#99862; status and error inferred.
    1002012: (400, "invalid_scope",
        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
        "with /.default suffixed to the resource identifier (application ID URI)."),
    500011: (400, "invalid_resource",
        "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen"
        " if the application has not been installed by the administrator of the tenant or consented to by "
        "any user in the tenant. You might have sent your authentication request to the wrong tenant."),
    7000215: (401, "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        "value, not the client secret ID, for a secret added to app '{client_id}'."),
    7000218: (401, "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
    50027: (401, "invalid_client", "JWT token is invalid or malformed."),  # inferred for a client assertion
    700027: (401, "invalid_client", "{detail}"),
    700024: (401, "invalid_client",
        "Client assertion is not within its valid time range. Current time: {now}, assertion valid from "
        "{nbf}, expiry time of assertion {exp}. {doc}"),
    50012: (401, "invalid_client", "Client assertion audience claim does not match Realm issuer."),
    700021: (401, "invalid_client",  # inferred
        "Client assertion application identifier doesn't match 'client_id' parameter. {doc}"),
}
KEY_NOT_FOUND = (
    "The certificate with identifier used to sign the client assertion is not registered on application. "
    "[Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the "
    "Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
)
BAD_SIGNATURE = (
    "Client assertion failed signature validation. [Reason - The provided signature value did not match the "
    "expected signature value., Thumbprint of key used by client: '{thumbprint}']"
)


class TokenError(Exception):
    """An Entra error response: status, OAuth `error`, AADSTS number and its description."""

    def __init__(self, code: int, **params: str) -> None:
        self.status, self.error, template = AADSTS[code]
        self.code = code
        self.description = template.format(**params)
        super().__init__(f"AADSTS{code}: {self.description}")


class InvalidToken(Exception):
    """The Web API refuses the bearer token; `response` is the 401 to send back."""

    def __init__(self, reason: str, response: Response) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response


class Entra:
    def __init__(
        self,
        registry: AppRegistry,
        *,
        tenant_id: str | None = None,
        base_url: str | None = None,
        resources: tuple[str, ...] | None = None,
        token_lifetime: int = 3599,
        clock: Callable[[], float] = time.time,
        clock_skew: int = 300,
    ) -> None:
        self.registry = registry
        # The org's home tenant, named in the 401 challenge; by default the (first) registered tenant.
        self.tenant_id = tenant_id or next(iter(sorted(registry.tenants)), "common")
        if tenant_id:
            registry.tenants.add(tenant_id.lower())
        self.base_url = base_url.rstrip("/") if base_url else None
        # None: the one resource is the sandbox's own origin (the org and Entra share it).
        self.resources = tuple(_norm_resource(r) for r in resources) if resources else None
        self.token_lifetime = token_lifetime
        self.clock = clock
        # Microsoft.IdentityModel's default ClockSkew (5 min): Dataverse validates tokens with it (its
        # "IDX10223: Lifetime validation failed" log lines come from that library).
        self.clock_skew = clock_skew
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = _b64url(hashlib.sha1(der).digest())

    def __call__(self, request: Request) -> Response:
        base = self.base_url or f"https://{request.headers.get('Host', '127.0.0.1')}"
        parts = [unquote(p) for p in request.path.strip("/").split("/")]
        tenant, rest = parts[0], "/".join(parts[1:])
        trace_id = str(uuid.uuid4())
        correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        try:
            if rest not in ROUTES:
                return Response(404, [("Content-Type", "text/plain")], b"Not Found")
            tenant_id = self._tenant(tenant)
            if rest == "oauth2/v2.0/token":
                if request.method != "POST":
                    raise TokenError(900561, method=request.method)
                body = self._token(request, base, tenant, tenant_id)
            elif request.method != "GET":
                return Response(405, [("Content-Type", "text/plain"), ("Allow", "GET")], b"")
            elif rest.startswith("discovery"):
                body = self.jwks()
            else:
                body = self.openid_configuration(base, tenant_id)
        except TokenError as exc:
            return self._error(exc, base, trace_id, correlation_id)
        return _json(200, body, trace_id, correlation_id)

    def openid_configuration(self, base: str, tenant_id: str) -> dict[str, Any]:
        root = f"{base}/{tenant_id}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "cloud_instance_name": "microsoftonline.com",
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.key_id, "n": jwk["n"], "e": jwk["e"]}]}

    def _error(self, exc: TokenError, base: str, trace_id: str, correlation_id: str) -> Response:
        stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{exc.code}: {exc.description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}"
            f"\r\nTimestamp: {stamp}"
        )
        body = {
            "error": exc.error,
            "error_description": description,
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{base}/error?code={exc.code}",
        }
        return _json(exc.status, body, trace_id, correlation_id)

    def _tenant(self, segment: str) -> str:
        if segment.lower() in self.registry.tenants:
            return segment.lower()
        raise TokenError(90002, tenant=segment)

    def _token(self, request: Request, base: str, tenant_segment: str, tenant_id: str) -> dict[str, Any]:
        form = request.form()
        for name in ("grant_type", "client_id"):
            if not form.get(name):
                raise TokenError(900144, name=name)
        if form["grant_type"] != "client_credentials":
            raise TokenError(70003, grant=form["grant_type"])
        if not form.get("scope"):
            raise TokenError(900144, name="scope")
        client_id = form["client_id"]
        app = self.registry.get(client_id)
        if app is None or app.tenant_id.lower() != tenant_id:
            raise TokenError(700016, client_id=client_id, tenant=tenant_segment)
        resource = self._resource(form["scope"], base, tenant_segment)
        if form.get("client_assertion") or form.get("client_assertion_type"):
            self._check_assertion(form, app, base, tenant_segment, tenant_id)
            acr = "2"
        elif form.get("client_secret"):
            # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, once a 500 for a secret
            # typed with an accent); Entra answers any wrong secret the same.
            presented = form["client_secret"].encode("utf-8")
            if app.secret is None or not hmac.compare_digest(presented, app.secret.encode("utf-8")):
                raise TokenError(7000215, client_id=app.client_id)
            acr = "1"
        else:
            raise TokenError(7000218)
        return {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": self.issue_token(app, resource, appidacr=acr),
        }

    def _resource(self, scope: str, base: str, tenant: str) -> str:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith(DEFAULT_SCOPE_SUFFIX):
            if any(s.endswith(DEFAULT_SCOPE_SUFFIX) for s in scopes):
                raise TokenError(70011, scope=scope)
            raise TokenError(1002012, scope=scope)
        resource = _norm_resource(scopes[0][: -len(DEFAULT_SCOPE_SUFFIX)])
        if resource not in (self.resources or (_norm_resource(base),)):
            raise TokenError(500011, resource=resource, tenant=tenant)
        return resource

    def _check_assertion(
        self, form: dict[str, str], app: AppRegistration, base: str, tenant_segment: str, tenant_id: str
    ) -> None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise TokenError(900144, name="client_assertion_type")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise TokenError(50027) from None
        # MSAL pads the base64url thumbprint ('...Qwo='); RFC 7515 does not. Compare unpadded.
        presented = str(header.get("x5t#S256") or header.get("x5t") or "").rstrip("=")
        registered = app.thumbprints()
        if registered is None or presented not in registered:
            detail = KEY_NOT_FOUND.format(thumbprint=presented, client_id=app.client_id)
            raise TokenError(700027, detail=detail)
        assert app.certificate is not None
        public_key = x509.load_pem_x509_certificate(app.certificate).public_key()
        try:
            claims = jwt.decode(
                assertion, public_key, algorithms=["RS256", "PS256"],  # type: ignore[arg-type]
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError:
            raise TokenError(700027, detail=BAD_SIGNATURE.format(thumbprint=presented)) from None
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
            raise TokenError(50027)
        # The window is Entra's clock against the assertion's: a client clock that is off (by more than the
        # assertion's 10 minutes ahead, or the 5 minutes of skew behind) fails here, as MSAL users meet it
        # (AzureAD/microsoft-authentication-library-for-java#984, ...-for-dotnet#4951).
        if exp <= now or nbf > now + self.clock_skew:
            raise TokenError(700024, now=_iso(now), nbf=_iso(nbf), exp=_iso(exp), doc=CERT_DOC)
        audiences = {f"{base}/{t}/oauth2/v2.0/token" for t in (tenant_segment, tenant_id)}
        aud = claims.get("aud")
        listed = isinstance(aud, list) and any(isinstance(a, str) and a in audiences for a in aud)
        if not (isinstance(aud, str) and aud in audiences or listed):
            raise TokenError(50012)
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise TokenError(700021, doc=CERT_DOC)

    def issue_token(self, app: AppRegistration, resource: str, *, appidacr: str = "1") -> str:
        now = int(self.clock())
        issuer = f"https://sts.windows.net/{app.tenant_id}/"
        claims = {
            "aud": _norm_resource(resource),
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": appidacr,
            "idp": issuer,
            "idtyp": "app",
            "oid": app.user_id,
            "sub": app.user_id,
            "tid": app.tenant_id,
            "uti": _b64url(uuid.uuid4().bytes),
            "ver": "1.0",
        }
        headers = {"typ": "JWT", "kid": self.key_id, "x5t": self.key_id}
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)

    def verify_access_token(self, header_value: str | None, resource: str) -> dict[str, Any]:
        """Claims of a valid `Authorization: Bearer ...` for `resource` (the org URL); else InvalidToken."""
        scheme, _, token = (header_value or "").strip().partition(" ")
        if not header_value or not header_value.strip():
            self._reject("missing bearer token", resource)
        if scheme.lower() != "bearer" or not token.strip():
            self._reject("malformed Authorization header", resource)
        try:
            header = jwt.get_unverified_header(token.strip())
            claims = jwt.decode(
                token.strip(), self._key.public_key(), algorithms=["RS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            self._reject(f"invalid token: {exc}", resource)
        if header.get("kid") != self.key_id:
            self._reject("token signed by an unknown key", resource)
        now = self.clock()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] + self.clock_skew <= now:
            self._reject("token expired", resource)
        if claims.get("nbf", 0) - self.clock_skew > now:
            self._reject("token not yet valid", resource)
        if _norm_resource(str(claims.get("aud", ""))) != _norm_resource(resource):
            self._reject(f"token audience {claims.get('aud')!r} is not {resource!r}", resource)
        if claims.get("iss") != f"https://sts.windows.net/{claims.get('tid')}/" or not claims.get("oid"):
            self._reject("token issuer or subject missing", resource)
        return claims

    def authenticate_api_request(self, request: Request, *, resource: str) -> str:
        """The application user's id (`oid`) for a Web API request; raises InvalidToken."""
        return str(self.verify_access_token(request.headers.get("Authorization"), resource)["oid"])

    def challenge(self, resource: str) -> str:
        authority = self.base_url or _origin(resource)
        return (
            f"Bearer authorization_uri={authority}/{self.tenant_id}/oauth2/authorize, "
            f"resource_id={_norm_resource(resource)}/"
        )

    def _reject(self, reason: str, resource: str) -> NoReturn:
        response = Response(401, [("WWW-Authenticate", self.challenge(resource))], b"")
        raise InvalidToken(reason, response)


def _norm_resource(resource: str) -> str:
    return resource.strip().rstrip("/").lower()


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _iso(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    except (TypeError, ValueError, OverflowError, OSError):  # OSError: EOVERFLOW, far outside the platform's range
        return str(ts)


def _json(status: int, body: dict[str, Any], trace_id: str, correlation_id: str) -> Response:
    headers = [
        ("Content-Type", JSON_UTF8),
        ("Cache-Control", "no-store, no-cache"),
        ("Pragma", "no-cache"),
        ("x-ms-request-id", trace_id),
        ("client-request-id", correlation_id),
    ]
    return Response(status, headers, json.dumps(body, separators=(",", ":")).encode("utf-8"))
