"""Access tokens for Dataverse from Entra ID through MSAL's confidential client (secret or certificate).

MSAL keeps the token in its in-memory cache and returns it until it nears expiry, so `token()` is cheap
to call before every request. MSAL talks to the authority through the same trusting requests session as
the Web API (connector/tls.py). MSAL's error dicts and exceptions become AuthError / SourceUnavailable
(ConfigError for an untrusted certificate, as on the Web API) here and nowhere else; messages name the AADSTS
code and say what to change, and never contain a secret.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import msal
import msal.exceptions
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from config.settings import Settings
from connector.tls import untrusted
from ground.errors import AuthError, ConfigError, SourceUnavailable

# What to do about the Entra errors a data engineer meets first (AADSTS codes from error_codes).
AADSTS_HINTS = {
    7000215: ("the client secret is wrong", "copy the secret's Value (not its ID) into AZURE_CLIENT_SECRET, or "
              "create a new one under Certificates & secrets"),
    7000222: ("the client secret has expired", "create a new secret and update AZURE_CLIENT_SECRET"),
    700016: ("the application was not found in the tenant", "check AZURE_CLIENT_ID and AZURE_TENANT_ID, and that "
             "the app registration exists in that tenant"),
    700027: ("the certificate assertion was rejected", "upload the certificate of AZURE_CLIENT_CERTIFICATE_PATH "
             "to the app registration"),
    # The signed assertion is valid 10 minutes from this machine's clock: Entra refuses it when that clock is off.
    700024: ("the certificate assertion is outside its valid time range", "check this machine's clock (it must be "
             "right within 5 minutes: e.g. `timedatectl` shows 'System clock synchronized: yes')"),
    90002: ("the tenant was not found", "check AZURE_TENANT_ID"),
    70011: ("the scope is invalid", "check DATAVERSE_URL: the scope is <DATAVERSE_URL>/.default"),
    500011: ("the Dataverse resource was not found in the tenant", "check DATAVERSE_URL"),
}


def _credential(settings: Settings) -> str | dict[str, str]:
    if settings.azure_client_secret is not None:
        return settings.azure_client_secret.get_secret_value()
    path = settings.azure_client_certificate_path
    if path is None:
        raise ConfigError(
            "no credential configured",
            hint="set AZURE_CLIENT_SECRET, or AZURE_CLIENT_CERTIFICATE_PATH (+ AZURE_CLIENT_CERTIFICATE_PASSWORD)",
        )
    password = settings.azure_client_certificate_password
    return certificate_credential(path, password.get_secret_value() if password else None)


def certificate_credential(path: Path, password: str | None) -> dict[str, str]:
    """MSAL's certificate credential from a PEM (key + certificate) or a PFX/P12 file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read AZURE_CLIENT_CERTIFICATE_PATH={path}: {exc.strerror}",
                          hint="point it at a PEM or PFX file holding the private key and certificate") from None
    secret = password.encode() if password else None
    try:
        if data.lstrip().startswith(b"-----"):
            key = serialization.load_pem_private_key(_pem_block(data, b"PRIVATE KEY"), password=secret)
            cert = x509.load_pem_x509_certificate(_pem_block(data, b"CERTIFICATE"))
        else:
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)  # type: ignore[assignment]
            if key is None or cert is None:
                raise ValueError("the PFX holds no private key or no certificate")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load the certificate in {path}: {exc}",
                          hint="check the file and AZURE_CLIENT_CERTIFICATE_PASSWORD") from None
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324 - x5t
    return {"private_key": key_pem, "thumbprint": thumbprint, "public_certificate": cert_pem}


def _pem_block(data: bytes, kind: bytes) -> bytes:
    lines, inside, out = data.splitlines(keepends=True), False, []
    for line in lines:
        if line.startswith(b"-----BEGIN") and kind in line:
            inside = True
        if inside:
            out.append(line)
        if line.startswith(b"-----END") and kind in line and inside:
            return b"".join(out)
    raise ValueError(f"no {kind.decode()} block in the PEM file")


class TokenProvider:
    """One MSAL confidential client per run; thread-safe."""

    def __init__(self, settings: Settings, session: requests.Session) -> None:
        if not settings.dataverse_url:
            raise ConfigError("DATAVERSE_URL is not set")
        missing = [name for name, value in (("AZURE_TENANT_ID", settings.azure_tenant_id),
                                            ("AZURE_CLIENT_ID", settings.azure_client_id)) if not value]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} not set", hint="set them to the app registration's values")
        self.scope = f"{settings.dataverse_url}/.default"
        self.authority = f"{settings.azure_authority_host}/{settings.azure_tenant_id}"
        self._lock = threading.Lock()
        self._client_id, self._session = settings.azure_client_id, session
        self._credential = _credential(settings)  # now: an unreadable certificate is a ConfigError, not retried
        self._app: msal.ConfidentialClientApplication | None = None

    @property
    def app(self) -> msal.ConfidentialClientApplication:
        """The MSAL client, built on first use: building it reads the authority's discovery document, which can
        fail like any request, and so is retried with the sign-in (DataverseClient.sign_in)."""
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id,
                    authority=self.authority,
                    client_credential=self._credential,
                    # Instance discovery asks login.microsoftonline.com about the authority host; off for sovereign
                    # clouds and the sandbox, whose hosts it does not know (DATAVERSE.md, MSAL 1.39).
                    instance_discovery=False,
                    http_client=self._session,
                )
            except ValueError as exc:  # MSAL raises ValueError when the authority's discovery document fails
                raise SourceUnavailable(f"cannot read the sign-in authority's configuration: {exc}",
                                        hint="check AZURE_AUTHORITY_HOST and AZURE_TENANT_ID",
                                        url=self.authority) from None
            except requests.RequestException as exc:
                raise untrusted(exc, self.authority) or SourceUnavailable(
                    f"cannot reach the sign-in authority: {type(exc).__name__}",
                    hint="check the network and AZURE_AUTHORITY_HOST", url=self.authority) from None
            except msal.exceptions.MsalServiceError as exc:  # MSAL's raise_for_status: a 5xx or 429 from Entra
                raise SourceUnavailable(f"the sign-in authority failed: {exc}", hint="rerun later",
                                        url=self.authority) from None
        return self._app

    def token(self) -> str:
        with self._lock:
            try:
                result: dict[str, Any] = self.app.acquire_token_for_client(scopes=[self.scope])
            except requests.RequestException as exc:
                raise untrusted(exc, self.authority) or SourceUnavailable(
                    f"cannot reach the sign-in authority: {type(exc).__name__}",
                    hint="check the network and AZURE_AUTHORITY_HOST", url=self.authority) from None
            except msal.exceptions.MsalServiceError as exc:  # MSAL's own raise_for_status: a 5xx or 429 from Entra
                raise SourceUnavailable(f"the sign-in authority failed: {exc}", hint="rerun later",
                                        url=self.authority) from None
        if "access_token" in result:
            return str(result["access_token"])
        raise auth_error(result)

    def invalidate(self) -> None:
        """Forget cached tokens (after a 401), so the next call signs in again."""
        with self._lock:
            if self._app is None:
                return
            # A list: removing entries while MSAL's search generator walks the cache would break it.
            for token in list(self.app.token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                self.app.token_cache.remove_at(token)


def auth_error(result: dict[str, Any]) -> AuthError:
    codes = result.get("error_codes") or []
    error = result.get("error", "unknown_error")
    for code in codes:
        if code in AADSTS_HINTS:
            what, hint = AADSTS_HINTS[code]
            return AuthError(f"sign-in failed: {what} (AADSTS{code}, {error})", hint=hint)
    first_line = str(result.get("error_description", "")).splitlines()[0] if result.get("error_description") else ""
    return AuthError(f"sign-in failed: {error}: {first_line}".rstrip(": "),
                     hint="check AZURE_TENANT_ID, AZURE_CLIENT_ID and the credential")
