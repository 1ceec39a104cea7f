"""A Link export in Azure storage (ADLS Gen2, OneLake, an emulator), read through fsspec/adlfs: list, ranged read,
and the table URI plus storage options deltalake needs. The one boundary where Azure SDK errors become ours.

Credentials follow the conventions users already have (docs/LINK.md §9): AZURE_STORAGE_CONNECTION_STRING, else
AZURE_STORAGE_ACCOUNT_KEY, else Microsoft Entra: the app of AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET (or
its certificate) when l2c's settings hold one, else azure-identity's DefaultAzureCredential (environment, workload and
managed identity, Azure CLI, ...). OneLake accepts only Entra tokens (ONELAKE), so keys are not offered to it.
TLS: every connection verifies against the system CAs plus L2C_CA_BUNDLE (connector/tls.py `trust_context`); the
transport below ignores any per-request `connection_verify`, so nothing can turn verification off. deltalake's
object_store takes no CA in its storage options; it trusts the file SSL_CERT_FILE names (rustls-native-certs), which
`object_store_trust` points at the system CAs plus L2C_CA_BUNDLE while a Delta table is opened.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from adlfs import AzureBlobFileSystem
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

from config.settings import Settings
from connector.link_storage import Entry
from connector.link_url import Location, parse_link_url
from connector.tls import trust_context, untrusted
from ground.errors import AuthError, ConfigError, L2CError, PermissionDenied, SourceUnavailable

STORAGE_SCOPE = "https://storage.azure.com/.default"  # Entra scope of Azure Storage and OneLake alike (ONELAKE)
GRANT = ("grant the identity the Storage Blob Data Reader role on the storage account or container "
         "(docs/LINK.md §9; in Fabric, a workspace role that can read the lakehouse)")
# Storage error codes of a valid signature without the right (403): a role is missing, not a wrong secret.
_NOT_GRANTED = {"AuthorizationPermissionMismatch", "AuthorizationFailure", "AuthorizationResourceTypeMismatch",
                "InsufficientAccountPermissions"}
# Storage's exponential retry of 5xx, timeouts and resets: gives up within about 45 s (backoffs 1+3, 1+9, 1+27 s).
RETRY: dict[str, Any] = {"initial_backoff": 1, "increment_base": 3, "retry_total": 3, "random_jitter_range": 2}
T = TypeVar("T")


class _TrustingTransport(AioHttpTransport):  # type: ignore[misc]
    """azure-core's aiohttp transport with one fixed SSLContext, whatever `connection_verify` a caller passes."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._context = context

    def _build_ssl_config(self, cert: Any, verify: Any) -> ssl.SSLContext:
        return self._context


class _Retry(ExponentialRetry):  # type: ignore[misc]
    """Storage's exponential retry (5xx, timeouts, resets), minus what retrying cannot mend: an untrusted
    certificate (connector/tls.py `untrusted`) and a sign-in azure-identity could not make."""

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        if error is not None and (untrusted(error, "") is not None or isinstance(error, ClientAuthenticationError)):
            return False
        return bool(super().increment(settings, request, response=response, error=error))


class _BlobFileSystem(AzureBlobFileSystem):  # type: ignore[misc]
    """adlfs's file system over a service client we build (our transport, retry and credential); adlfs's own
    do_connect offers neither a transport nor a CA."""

    def __init__(self, make_client: Callable[[], BlobServiceClient], **kwargs: Any) -> None:
        self._make_client = make_client
        super().__init__(skip_instance_cache=True, **kwargs)

    def do_connect(self) -> None:
        self.service_client = self._make_client()


def _connection_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def _entra_credentials(settings: Settings) -> tuple[Any, Any]:
    """(async credential for adlfs, sync credential for deltalake's token) of the configured Entra identity."""
    from azure.identity import CertificateCredential, ClientSecretCredential, DefaultAzureCredential
    from azure.identity.aio import CertificateCredential as AioCertificateCredential
    from azure.identity.aio import ClientSecretCredential as AioClientSecretCredential
    from azure.identity.aio import DefaultAzureCredential as AioDefaultAzureCredential

    tenant, client = settings.azure_tenant_id, settings.azure_client_id
    authority = settings.azure_authority_host
    if tenant and client and settings.azure_client_secret is not None:
        secret = settings.azure_client_secret.get_secret_value()
        return (AioClientSecretCredential(tenant, client, secret, authority=authority),
                ClientSecretCredential(tenant, client, secret, authority=authority))
    if tenant and client and settings.azure_client_certificate_path is not None:
        path = str(settings.azure_client_certificate_path)
        password = (settings.azure_client_certificate_password.get_secret_value()
                    if settings.azure_client_certificate_password else None)
        return (AioCertificateCredential(tenant, client, path, password=password, authority=authority),
                CertificateCredential(tenant, client, path, password=password, authority=authority))
    return AioDefaultAzureCredential(), DefaultAzureCredential()


class RemoteStore:
    """An export root in Azure storage. `list`, `read` and `delta_location` raise only L2CErrors."""

    def __init__(self, url: str, location: Location, settings: Settings) -> None:
        self.url = url
        self.location = location
        self._settings = settings
        self._sync_credential: Any = None
        connection = settings.azure_storage_connection_string
        key = settings.azure_storage_account_key
        transport_options = {"connection_timeout": 20, "read_timeout": settings.http_timeout}
        context = trust_context(settings.ca_bundle)
        retry = _Retry(**RETRY)

        def client_options() -> dict[str, Any]:
            return {"transport": _TrustingTransport(context, **transport_options), "retry_policy": retry}

        fs_options: dict[str, Any]
        if connection is not None and location.kind != "onelake":
            text = connection.get_secret_value()
            self._check_account(_connection_fields(text).get("accountname", ""))

            def make() -> BlobServiceClient:
                try:
                    return BlobServiceClient.from_connection_string(text, **client_options())
                except ValueError:
                    raise ConfigError("AZURE_STORAGE_CONNECTION_STRING is not a storage connection string",
                                      hint="copy it from the storage account's Access keys page") from None

            fs_options = {"connection_string": text}
        elif location.kind == "connection":
            raise ConfigError(f"{url} names no storage account",
                              hint="set AZURE_STORAGE_CONNECTION_STRING, or use "
                                   "abfss://<container>@<account>.dfs.core.windows.net/<path>")
        elif key is not None and location.kind != "onelake":
            named = AzureNamedKeyCredential(location.account, key.get_secret_value())

            def make() -> BlobServiceClient:
                return BlobServiceClient(location.blob_endpoint, credential=named, **client_options())

            fs_options = {"account_name": location.account, "credential": named}
        else:
            credential, self._sync_credential = _entra_credentials(settings)

            def make() -> BlobServiceClient:
                return BlobServiceClient(location.blob_endpoint, credential=credential, **client_options())

            fs_options = {"account_name": location.account, "credential": credential}
        self._fs = self._guarded("connect", lambda: _BlobFileSystem(make, **fs_options))

    def _check_account(self, named: str) -> None:
        if named and self.location.account and named.lower() != self.location.account.lower():
            raise ConfigError(f"AZURE_STORAGE_CONNECTION_STRING is for account {named}, but {self.url} names "
                              f"account {self.location.account}",
                              hint="use the connection string of the account the export is in")

    def _guarded(self, doing: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except L2CError:
            raise
        except Exception as exc:  # the one boundary: every Azure SDK / adlfs error becomes ours here
            ours = translate(exc, self.url, doing)
            if ours is None:
                raise
            raise ours from None

    def check(self) -> None:
        """SourceUnavailable unless the export root holds at least one file."""
        found = self._guarded("list", lambda: self._fs.find(self.location.key(), maxdepth=1, withdirs=True))
        if not found:
            raise _no_export(self.url)

    def list(self, prefix: str = "") -> list[Entry]:
        base = self.location.key()
        found: dict[str, dict[str, Any]] = self._guarded(
            "list", lambda: self._fs.find(self.location.key(prefix), detail=True))
        entries = []
        for name, info in sorted(found.items()):
            if info.get("type") != "file":
                continue
            relative = name[len(base):].lstrip("/") if name.startswith(base) else name
            etag = str(info.get("etag") or "").strip('"')
            entries.append(Entry(path=relative, size=int(info.get("size") or 0),
                                 version=etag or str(info.get("last_modified") or "")))
        return entries

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        data: bytes = self._guarded(f"read {path}",
                                    lambda: self._fs.cat_file(self.location.key(path), start=start, end=end))
        return data

    def trusted(self) -> AbstractContextManager[None]:
        return object_store_trust(self._settings)

    def delta_location(self, path: str) -> tuple[str, dict[str, str]]:
        """The table URI and deltalake storage options (object_store's Azure keys: docs.rs object_store
        `AzureConfigKey`) of the Delta table at `path`. The endpoint key, not `use_emulator`, points at an emulator:
        object_store ignores the endpoint when `use_emulator` is set and goes to http://127.0.0.1:10000."""
        where = self.location
        key = "/".join(p for p in (where.root, path.strip("/")) if p)
        options: dict[str, str] = {}
        connection = self._settings.azure_storage_connection_string
        # object_store parses abfss:// only for the public cloud and OneLake; elsewhere the endpoint option says where.
        public = where.dfs_host.endswith((".dfs.core.windows.net", ".dfs.fabric.microsoft.com"))
        uri = f"abfss://{where.container}@{where.dfs_host}/{key}" if public else f"az://{where.container}/{key}"
        if where.kind in ("emulator", "adls") and not public:
            options["endpoint"] = where.blob_endpoint
        if where.kind != "onelake" and connection is not None:
            fields = _connection_fields(connection.get_secret_value())
            options["account_name"] = fields.get("accountname", where.account)
            if fields.get("accountkey"):
                options["account_key"] = fields["accountkey"]
            elif fields.get("sharedaccesssignature"):
                options["sas_key"] = fields["sharedaccesssignature"]
            if fields.get("blobendpoint"):
                options["endpoint"] = fields["blobendpoint"].rstrip("/")
            elif fields.get("endpointsuffix") and where.kind == "connection":
                options["endpoint"] = f"https://{options['account_name']}.blob.{fields['endpointsuffix']}"
            return uri, options
        options["account_name"] = where.account
        key_secret = self._settings.azure_storage_account_key
        if where.kind != "onelake" and key_secret is not None:
            options["account_key"] = key_secret.get_secret_value()
        else:
            # object_store cannot run azure-identity's chain; it takes the token that chain issues (valid ~1 h).
            if self._sync_credential is None:
                self._sync_credential = _entra_credentials(self._settings)[1]
            credential = self._sync_credential
            token = self._guarded("sign in", lambda: credential.get_token(STORAGE_SCOPE).token)
            options["bearer_token"] = token
        return uri, options


def open_remote(url: str, settings: Settings) -> RemoteStore:
    """The RemoteStore of `url`, checked to hold an export (SourceUnavailable "no export at URL" otherwise)."""
    store = RemoteStore(url, parse_link_url(url), settings)
    store.check()
    return store


def _no_export(url: str) -> SourceUnavailable:
    return SourceUnavailable(f"no export at {url}",
                             hint="check L2C_LINK_URL: Synapse Link writes into the container "
                                  "dataverse-<environment>-<org> (docs/LINK.md §1.1)")


def translate(exc: BaseException, url: str, doing: str) -> L2CError | None:
    """Our error for an Azure SDK, adlfs or network exception, else None (a bug, re-raised). Never the foreign
    text: a storage 403's detail quotes the request's signature."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = str(code.value if hasattr(code, "value") else code) if code else None
    if isinstance(exc, ClientAuthenticationError):
        if status is None:  # azure-identity: no credential, or Entra refused it
            return AuthError(f"cannot sign in to Azure storage for {url}: {type(exc).__name__}",
                             hint="set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY, or "
                                  "AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET of an app; then " + GRANT)
        if code in _NOT_GRANTED:
            return PermissionDenied(f"the storage account refused to let this identity {doing} {url}",
                                    hint=GRANT, status=status, code=code)
        return AuthError(f"the storage account rejected the credential for {url}",
                         hint="check AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_CONNECTION_STRING (a rotated key?), "
                              "or the Entra app; and " + GRANT, status=status, code=code)
    if isinstance(exc, ResourceNotFoundError | FileNotFoundError):
        if doing.startswith("read "):
            return SourceUnavailable(f"cannot {doing} at {url}: it is gone",
                                     hint="the export changed while it was read; run again", code=code)
        return _no_export(url)
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"the storage account refused to let this identity {doing} {url}", hint=GRANT)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError | TimeoutError | OSError):
        ours = untrusted(exc, url)
        if ours is not None:
            return ours
        return SourceUnavailable(f"cannot reach the storage of {url} to {doing} after retries",
                                 hint="check the URL, the network and the account's firewall; then run again")
    if isinstance(exc, HttpResponseError):
        if status in (401, 403):
            return AuthError(f"the storage account rejected the request for {url}", hint=GRANT,
                             status=status, code=code)
        if status == 400:
            return ConfigError(f"the storage account rejected {url} as a path", status=status, code=code,
                               hint="check the container and path names in L2C_LINK_URL")
        return SourceUnavailable(f"the storage of {url} kept failing to {doing}", status=status, code=code,
                                 hint="Azure storage is unavailable; run again later")
    return None


_TRUST_LOCK = threading.Lock()


@contextmanager
def object_store_trust(settings: Settings) -> Iterator[None]:
    """While a deltalake table is opened: SSL_CERT_FILE names the system CAs plus L2C_CA_BUNDLE. object_store's
    client (reqwest + rustls-native-certs) reads that variable when it is built and offers no storage option for a
    CA; with no L2C_CA_BUNDLE nothing changes. Serialised: the variable is the process's."""
    if settings.ca_bundle is None:
        yield
        return
    try:
        extra = Path(settings.ca_bundle).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA bundle L2C_CA_BUNDLE={settings.ca_bundle}: {exc.strerror}",
                          hint="point L2C_CA_BUNDLE at a PEM file of CA certificates") from None
    system = ssl.get_default_verify_paths()
    base = b""
    for candidate in (os.environ.get("SSL_CERT_FILE"), system.cafile, system.openssl_cafile):
        if candidate and Path(candidate).is_file():
            base = Path(candidate).read_bytes()
            break
    with _TRUST_LOCK, tempfile.TemporaryDirectory(prefix="l2c-ca-") as folder:
        bundle = Path(folder) / "ca.pem"
        bundle.write_bytes(base + b"\n" + extra)
        before = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(bundle)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = before
