"""Where a remote Link export lives: an ADLS Gen2, OneLake or emulator URL parsed into account, container and root.

Accepted forms (docs/LINK.md §9 and D1; a bad URL is a ConfigError that lists them):

    abfss://<container>@<account>.dfs.core.windows.net/<path>      ADLS Gen2, the ABFS driver's form
    https://<account>.dfs.core.windows.net/<container>/<path>       (also .blob.; partition locations use it, §1.2)
    abfss://<workspace>@onelake.dfs.fabric.microsoft.com/<item>.Lakehouse/<path>   OneLake (ONELAKE)
    https://onelake.dfs.fabric.microsoft.com/<workspace>/<item>.Lakehouse/<path>
    az://<container>/<path>                                         account and endpoint from the connection string
    https://127.0.0.1:<port>/<account>/<container>/<path>           an emulator (Azurite), path-style

Every form is read through the Blob API: ADLS Gen2 accounts serve it beside the DFS API (multi-protocol access) and
OneLake serves it at onelake.blob.fabric.microsoft.com (ONELAKE: "OneLake supports the same APIs as ADLS Gen2 and
Blob Storage"), which is what adlfs and deltalake's object_store speak. Plain `abfs://` and `http://` are refused:
TLS is never switched off.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from ground.errors import ConfigError

ONELAKE_HOST = "onelake.dfs.fabric.microsoft.com"
ONELAKE_BLOB_HOST = "onelake.blob.fabric.microsoft.com"
FORMS = ("abfss://<container>@<account>.dfs.core.windows.net/<path>, "
         "https://<account>.dfs.core.windows.net/<container>/<path>, "
         "abfss://<workspace>@onelake.dfs.fabric.microsoft.com/<item>.Lakehouse/<path>, "
         "az://<container>/<path> with AZURE_STORAGE_CONNECTION_STRING, "
         "or an emulator's https://127.0.0.1:<port>/<account>/<container>/<path>")

Kind = Literal["adls", "onelake", "emulator", "connection"]


@dataclass(frozen=True)
class Location:
    """`kind` says how the account is reached: its public endpoint (adls, onelake), a path-style emulator endpoint
    (emulator) or the endpoint a connection string names (connection: `az://`, account and endpoint unknown here)."""

    kind: Kind
    container: str
    root: str  # the export root inside the container: no leading or trailing "/"
    account: str = ""
    dfs_host: str = ""  # <account>.dfs.core.windows.net (adls, onelake): the host deltalake's abfss:// URI names
    blob_endpoint: str = ""  # the Blob service URL of the account; "" for kind connection

    def key(self, path: str = "") -> str:
        """container/root/path, the form adlfs addresses blobs by."""
        parts = [self.container, self.root, path.strip("/")]
        return "/".join(p for p in parts if p)


def _bad(url: str, why: str) -> ConfigError:
    parts = urlsplit(url.strip())
    # Never echo a SAS token (query) or a password: both are secrets.
    shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2] if parts.password else parts.netloc,
                        parts.path, "", ""))
    return ConfigError(f"L2C_LINK_URL {shown!r} is not a Link export URL: {why}", hint=f"use one of: {FORMS}")


def _segments(path: str) -> list[str]:
    return [unquote(s) for s in path.split("/") if s]


def _storage_host(host: str) -> tuple[str, str] | None:
    """(account, service) of `<account>.<dfs|blob>.core.<cloud suffix>`, the public and sovereign clouds alike."""
    account, _, rest = host.partition(".")
    service, _, suffix = rest.partition(".")
    if account and service in ("dfs", "blob") and suffix.startswith("core."):
        return account, service
    return None


def _is_emulator_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_link_url(url: str) -> Location:
    """The Location of a remote export URL, or ConfigError naming the accepted forms."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if parts.query or parts.fragment:
        raise _bad(url, "it has a query or fragment (a SAS token belongs in AZURE_STORAGE_CONNECTION_STRING)")
    if parts.password:
        raise _bad(url, "it carries a password")
    segments = _segments(parts.path)
    if scheme in ("abfs", "http"):
        raise _bad(url, f"{scheme}:// is unencrypted; l2c only reads over TLS")
    if scheme == "az" and not parts.username:
        if not host:
            raise _bad(url, "it names no container")
        return Location(kind="connection", container=unquote(parts.netloc), root="/".join(segments))
    if scheme in ("abfss", "az"):
        container = unquote(parts.username or "")
        if not container:
            raise _bad(url, "it names no container before '@'")
        if host == ONELAKE_HOST:
            return _onelake(url, container, segments)
        storage = _storage_host(host)
        if storage is None:
            raise _bad(url, f"{host!r} is not an ADLS Gen2 or OneLake host")
        return _adls(storage[0], host, container, segments)
    if scheme == "https":
        if host in (ONELAKE_HOST, ONELAKE_BLOB_HOST):
            if not segments:
                raise _bad(url, "it names no workspace")
            return _onelake(url, segments[0], segments[1:])
        storage = _storage_host(host)
        if storage is not None:
            if not segments:
                raise _bad(url, "it names no container")
            return _adls(storage[0], host, segments[0], segments[1:])
        if _is_emulator_host(host):
            if len(segments) < 2:
                raise _bad(url, "an emulator URL names the account, then the container")
            account, container = segments[0], segments[1]
            origin = f"https://{parts.netloc}"
            return Location(kind="emulator", account=account, container=container, root="/".join(segments[2:]),
                            blob_endpoint=f"{origin}/{account}")
        raise _bad(url, f"{host!r} is not an ADLS Gen2, OneLake or emulator host")
    raise _bad(url, f"the scheme {scheme + '://' if scheme else '(none)'} is not one l2c reads")


def _adls(account: str, host: str, container: str, segments: list[str]) -> Location:
    suffix = host.partition(".")[2].partition(".")[2]  # core.windows.net, or a sovereign cloud's
    return Location(kind="adls", account=account, container=container, root="/".join(segments),
                    dfs_host=f"{account}.dfs.{suffix}", blob_endpoint=f"https://{account}.blob.{suffix}")


def _onelake(url: str, workspace: str, segments: list[str]) -> Location:
    # OneLake paths start with the item: <item>.<itemtype> or an item GUID (ONELAKE); the workspace is the container.
    if not segments:
        raise _bad(url, "a OneLake URL names the item (<item>.Lakehouse) after the workspace")
    return Location(kind="onelake", account="onelake", container=workspace, root="/".join(segments),
                    dfs_host=ONELAKE_HOST, blob_endpoint=f"https://{ONELAKE_BLOB_HOST}")
