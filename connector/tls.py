"""The transport adapter of every connection l2c makes (MSAL's and the Web API's): TLS trust in system CAs plus
L2C_CA_BUNDLE, and request targets sent as given.

requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a Session's `verify` (sessions.py,
merge_environment_settings), and our machines set both; a trust setting that silently loses to the
environment is no setting. So the adapter below builds its own SSLContext (verification required, hostname
checked) and ignores any `verify` requests passes down, as `HTTPAdapter.build_connection_pool_key_attributes`
documents for custom contexts. There is deliberately no way to turn verification off. urllib3 upper-cases every
`%xx` escape of a request target (`util/url.py` `_encode_invalid_chars`): an equivalent URI (RFC 3986 6.2.2.1),
but not the link Dataverse wrote, whose deltatoken escapes are lower case (`%2f`, `%3a`: [PD] use-change-
tracking-synchronize-data-external-systems.md, payload 05). Its pools here send a target exactly as requests
gave it whenever that upper-casing would have been urllib3's only change.
"""

from __future__ import annotations

import re
import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPSConnectionPool, PoolManager

from ground.errors import ConfigError


def trust_context(ca_bundle: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot read the CA bundle L2C_CA_BUNDLE={ca_bundle}: {exc}",
                hint="point L2C_CA_BUNDLE at a PEM file of CA certificates",
            ) from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


_GIVEN: ContextVar[str | None] = ContextVar("l2c_request_target", default=None)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class _AsGivenPool(HTTPSConnectionPool):
    """An HTTPS pool that sends the request target as given when urllib3 would only upper-case its escapes."""

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        token = _GIVEN.set(url)
        try:
            return super().urlopen(method, url, *args, **kwargs)
        finally:
            _GIVEN.reset(token)

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        given = _GIVEN.get()
        if given is not None and given != url and _ESCAPE.sub(lambda m: m.group(0).upper(), given) == url:
            url = given
        return super()._make_request(conn, method, url, *args, **kwargs)


def _send_as_given(manager: PoolManager) -> None:
    if manager.pool_classes_by_scheme.get("https") is HTTPSConnectionPool:  # not a SOCKS proxy's own pools
        manager.pool_classes_by_scheme = {**manager.pool_classes_by_scheme, "https": _AsGivenPool}


class TrustingAdapter(HTTPAdapter):
    """An HTTPAdapter whose trust is fixed at construction, whatever `verify` requests passes, and whose pools
    send request targets as given (`_AsGivenPool`)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
        _send_as_given(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _send_as_given(manager)
        return manager

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        pool_kwargs.pop("ca_certs", None)
        pool_kwargs.pop("ca_cert_dir", None)
        pool_kwargs["ssl_context"] = self._context
        pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Trust comes from self._context only; an environment CA bundle must not replace it.
        super().cert_verify(conn, url, True, cert)


def untrusted(exc: BaseException, url: str) -> ConfigError | None:
    """Our error for a foreign exception that is a failed certificate verification (on the sign-in or the Web API
    connection alike), else None: retrying cannot help, trusting the right CA can."""
    if "CERTIFICATE_VERIFY_FAILED" not in str(exc) and "certificate verify failed" not in str(exc):
        return None
    return ConfigError(f"the TLS certificate of {urlsplit(url).netloc} is not trusted",
                       hint="if a corporate proxy (or the sandbox) signs it, point L2C_CA_BUNDLE at its CA "
                       "certificate; verification is never switched off")


def trusting_session(ca_bundle: Path | None, *, pool_size: int = 10) -> requests.Session:
    session = requests.Session()
    adapter = TrustingAdapter(trust_context(ca_bundle), pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    return session
