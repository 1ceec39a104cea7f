"""A running sandbox: the simulated org, its HTTPS server, the app registration l2c signs in with.

The org is a pure function of (seed, leads, days advanced), so the only state kept on disk is that triple
(`org.json` in the state directory) plus the CA certificate clients trust. `advance` re-simulates at the
later clock and swaps the store whole, so requests in flight finish on a consistent org and versions
issued before stay valid. `l2c run` without DATAVERSE_URL starts one of these in-process; `l2c sandbox
serve` runs one standalone and prints the environment that points l2c at it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ground.files import atomic_write
from sandbox import corrupt, entra, protection, server, tls
from sandbox.app import SandboxApp
from sandbox.odata import ODataError
from sandbox.orgdata import BASE_CLOCK, OrgData
from sandbox.simulator import simulate
from sandbox.store import Store
from sandbox.webapi import WebApi, WebApiOptions

STATE_FILE = "org.json"
TENANT_ID = "7f3c1b2a-4d5e-4f60-8a9b-0c1d2e3f4a5b"
CLIENT_ID = "2b7d9e4f-1a3c-4e5b-9d7f-6a8b0c2d4e6f"
CERT_CLIENT_ID = "5c8e0f2a-3b4d-4c6e-8f0a-1b2c3d4e5f60"


@dataclass
class OrgState:
    seed: int = 42
    leads: int = 1000
    days: float = 0.0

    @property
    def clock(self):  # noqa: ANN201 - a datetime
        return BASE_CLOCK + timedelta(days=self.days)


def load_state(state_dir: Path, default: OrgState) -> OrgState:
    path = state_dir / STATE_FILE
    if path.exists():
        return OrgState(**json.loads(path.read_text()))
    return default


def save_state(state_dir: Path, state: OrgState) -> None:
    text = json.dumps(asdict(state)).encode()
    atomic_write(state_dir / STATE_FILE, lambda handle: handle.write(text))


@dataclass
class SandboxOptions:
    port: int = 0
    faults: server.Faults = field(default_factory=server.Faults)
    limits: protection.Limits = field(default_factory=protection.Limits)
    throttle_fraction: float = 0.0  # reject this share of Web API requests with 429 (client tests)
    throttle_retry_after: int = 1
    throttle_seed: int | None = None  # a seed makes the refused requests the same on every run
    withdrawn_privileges: set[str] = field(default_factory=set)
    change_tracking_off: set[str] = field(default_factory=set)
    token_lifetime: int = 3599
    # Other environments of the tenant: Entra issues tokens for them too; this org answers such a token 401.
    other_org_urls: tuple[str, ...] = ()
    # A signed-in application user this org still refuses with 403 on every Web API request: no application user
    # for the app in this environment, or the admin restricted Dataverse API access for its application id.
    not_member: bool = False
    api_restricted: bool = False
    expire_change_tracking_days: int = 7
    corrupt: frozenset[str] = frozenset()  # kinds of sandbox/corrupt.py: malformed data for a few records
    # Seconds Entra's clock is ahead of this machine's (negative: behind), read at every request: a client whose
    # clock is off, as Entra sees it. Past the assertion's lifetime (10 minutes, MSAL) a certificate sign-in fails
    # with AADSTS700024.
    clock_skew: float = 0.0

    def __post_init__(self) -> None:
        corrupt.check(self.corrupt)


class Sandbox:
    def __init__(self, state_dir: Path, state: OrgState, options: SandboxOptions | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.state = state
        self.options = options or SandboxOptions()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls.make_tls(self.state_dir)
        self.client_secret = secrets.token_urlsafe(24)
        self.certificate = tls.make_client_certificate(self.state_dir, password=None)
        self._lock = threading.Lock()
        self.org = self._simulate(state)
        self.store = Store(self.org, change_tracking_off=self.options.change_tracking_off)
        self.protection = protection.Protection(
            self.options.limits, throttle_fraction=self.options.throttle_fraction,
            throttle_retry_after=self.options.throttle_retry_after, seed=self.options.throttle_seed,
        )
        self.server: server.SandboxServer | None = None
        self.entra: entra.Entra | None = None
        self.webapi: WebApi | None = None

    def _simulate(self, state: OrgState) -> OrgData:
        started = time.perf_counter()
        org = simulate(state.seed, state.leads, state.clock)
        org.meta.expire_change_tracking_days = self.options.expire_change_tracking_days
        org.stats["simulate_seconds"] = time.perf_counter() - started
        return org

    @property
    def url(self) -> str:
        assert self.server is not None, "sandbox not started"
        return self.server.url

    def start(self) -> Sandbox:
        self.server = server.SandboxServer(
            self._app_placeholder, port=self.options.port, ssl_context=self.tls.server_context,
            faults=self.options.faults,
        )
        self.server.start()
        url = self.server.url
        registry = entra.AppRegistry()
        registry.add(entra.AppRegistration(
            client_id=CLIENT_ID, tenant_id=TENANT_ID, secret=self.client_secret,
            user_id=self.org.meta.app_user_id,
        ))
        registry.add(entra.AppRegistration(
            client_id=CERT_CLIENT_ID, tenant_id=TENANT_ID, certificate=self.certificate.cert_pem,
            user_id=self.org.meta.app_user_id,
        ))
        self.entra = entra.Entra(registry, tenant_id=TENANT_ID, base_url=url,
                                 resources=(url, *self.options.other_org_urls) if self.options.other_org_urls else None,
                                 token_lifetime=self.options.token_lifetime,
                                 clock=lambda: time.time() + self.options.clock_skew)
        self.webapi = WebApi(
            lambda: self.store,
            WebApiOptions(org_url=url, withdrawn_privileges=self.options.withdrawn_privileges,
                          corrupt=self.options.corrupt),
            authenticate=self._authenticate,
            protection=self.protection,
        )
        self.app = SandboxApp(self.entra, self.webapi, self)
        self.server.app = self.app
        return self

    def _app_placeholder(self, request):  # noqa: ANN001, ANN202 - replaced in start()
        raise RuntimeError("sandbox app not wired yet")

    def _authenticate(self, request) -> str:  # noqa: ANN001
        """The application user of a valid token for this org; InvalidToken (401) or ODataError (403)."""
        assert self.entra is not None
        claims = self.entra.verify_access_token(request.headers.get("Authorization"), self.url)
        if self.options.not_member:
            # Real: `{"error":{"code":"0x80072560","message":"The user is not a member of the organization."}}`,
            # "(403) Forbidden" (MicrosoftDocs/dynamics-365-unified-operations-public articles/fin-ops-core/dev-itpro/
            # data-entities/dual-write/dual-write-troubleshooting-live-sync.md): the app has no application user here.
            raise ODataError(403, "0x80072560", "The user is not a member of the organization.")
        if self.options.api_restricted:
            # Real, captured: microsoft/PowerPlatform-DataverseServiceClient#528 (shared payload 18).
            raise ODataError(403, "0x80095ffc", "Access to Dataverse API is restricted for this application Id : "
                             f"'{claims['appid']}'. Please contact your administrator for more information.")
        return str(claims["oid"])

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def advance(self, days: float) -> OrgState:
        """Move the clock forward: new leads arrive, open cases progress; delta tokens stay valid."""
        if days <= 0:
            raise ValueError("days must be positive")
        with self._lock:
            state = OrgState(self.state.seed, self.state.leads, self.state.days + days)
            org = self._simulate(state)
            self.store = Store(org, change_tracking_off=self.options.change_tracking_off)
            self.org, self.state = org, state
            save_state(self.state_dir, state)
        return state

    def advance_clock(self, days: float) -> dict[str, Any]:
        """The admin API's `advance`: the clock moved, as JSON."""
        state = self.advance(days)
        return {"seed": state.seed, "leads": state.leads, "days": state.days, "clock": state.clock.isoformat()}

    def stats(self) -> dict[str, Any]:
        """The admin API's `stats`: request counts and protection violations."""
        assert self.webapi is not None
        return {"counts": dict(self.webapi.counts), "violations": len(self.protection.violations())}

    def env(self, *, certificate: bool = False) -> dict[str, str]:
        """The environment that points l2c (or any MSAL + requests client) at this sandbox."""
        values = {
            "DATAVERSE_URL": self.url,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_AUTHORITY_HOST": self.url,
            "L2C_CA_BUNDLE": str(self.tls.ca_path),
        }
        if certificate:
            values["AZURE_CLIENT_ID"] = CERT_CLIENT_ID
            values["AZURE_CLIENT_CERTIFICATE_PATH"] = str(self.certificate.bundle_path)
        else:
            values["AZURE_CLIENT_ID"] = CLIENT_ID
            values["AZURE_CLIENT_SECRET"] = self.client_secret
        return values


def new_request_id() -> str:
    return str(uuid.uuid4())
