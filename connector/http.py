"""The one HTTP client for the Dataverse Web API: a pooled session, a bearer token on every request, one status
policy (`validate_response`), retries with tenacity inside a per-request time budget, `$batch` GETs (the wire
format is connector/batch.py) and request counters per kind for the run manifest. Every request waits on the
service-protection gate and limiter of connector/throttle.py, and feeds them each 429 and x-ms-dop-hint it sees.
500/502/503/504, dropped or reset connections, read timeouts and truncated bodies are retried with exponential
backoff and full jitter; a 401 signs in again once; a 403 says what fixes it (a security role with the missing
privilege, or, by error code, an application user missing from the environment or an admin's restriction of the
app's API access). Foreign errors (requests) become ours here and nowhere else, and no message or log line
carries the token or a query string's values.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import requests
import tenacity
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri

from config.settings import Settings
from connector.auth import TokenProvider
from connector.batch import MAX_BATCH, encode_batch, parse_batch  # importable from here too, as before
from connector.throttle import AdaptiveLimiter, RetryAfterGate, retry_after  # likewise
from connector.tls import trusting_session, untrusted
from ground import stop
from ground.errors import AuthError, L2CError, PermissionDenied, RequestRejected, SourceUnavailable

API_PATH = "/api/data/v9.2/"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
# 403s that no security role fixes, by Dataverse error code: (what happened, what to do).
FORBIDDEN = {
    # "The user is not a member of the organization.": the app registration has no application user in this
    # environment (as reported for a service principal in MicrosoftDocs/power-platform#2124).
    "0x80072560": ("the application user is not a member of this environment",
                   "add the app registration as an application user in the environment (Power Platform admin "
                   "center > environment > Settings > Users + permissions > Application users) and give it a "
                   "security role"),
    # "Access to Dataverse API is restricted for this application Id : '<guid>'." (payload 18: an admin
    # restricted API access for that app, microsoft/PowerPlatform-DataverseServiceClient#528)
    "0x80095ffc": ("an administrator restricted Dataverse API access for this application",
                   "ask a Power Platform admin to lift the restriction for this application id ({app}); a "
                   "security role will not help"),
}
STORM_QUIET_S = 60.0  # a retry after this long without one starts a new storm (and one new warning)

log = logging.getLogger("l2c.http")
T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """One answer. `json` is the parsed body (fractions as Decimal, so money stays exact), text for a non-JSON
    body, None when empty; `date` is the server's `Date` (the org's clock, for watermark signposts)."""

    status: int
    headers: CaseInsensitiveDict[str]
    json: Any
    date: datetime | None
    elapsed: float
    url: str


class _Retry(Exception):
    """An attempt failed in a way another attempt may not: what happened, for the final message."""

    def __init__(self, what: str, *, status: int | None = None, code: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what, self.status, self.code, self.retry_after = what, status, code, retry_after


def validate_response(status: int, headers: Mapping[str, str], body: bytes, url: str) -> None:
    """The one status policy: return on 2xx, raise _Retry when another attempt may succeed, else our error."""
    if 200 <= status < 300:
        return
    code, message = error_of(body)
    context: dict[str, Any] = {"status": status, "code": code or None, "url": redact(url),
                               "request_id": headers.get("REQ_ID") or headers.get("x-ms-service-request-id")}
    if status == 429:
        raise _Retry(f"429 {code or 'throttled'}".strip(), status=status, code=code,
                     retry_after=retry_after(headers))
    if status in RETRY_STATUSES:
        raise _Retry(f"{status} {code}".strip(), status=status, code=code)
    if status == 401:
        raise AuthError("Dataverse rejected the access token (HTTP 401), also after signing in again",
                        hint="check that the app registration is an application user in this environment and that "
                        "AZURE_TENANT_ID matches it (server challenge: "
                        f"{one_line(headers.get('WWW-Authenticate', 'none'))})", **context)
    if status == 403:
        if code.lower() in FORBIDDEN:
            what, todo = FORBIDDEN[code.lower()]
            app = re.search(r"Id\s*:\s*'([^']*)'", message)
            raise PermissionDenied(f"permission denied: {what} ({message})",
                                   hint=todo.format(app=app.group(1) if app else "AZURE_CLIENT_ID"), **context)
        privilege = re.search(r"\b(prv\w+)", message)
        if privilege:
            raise PermissionDenied(f"permission denied: the application user lacks the {privilege.group(1)} "
                                   "privilege", hint=f"give the application user a security role with "
                                   f"{privilege.group(1)}", **context)
        raise PermissionDenied(f"permission denied: {message}",
                               hint="give the application user a security role with this privilege", **context)
    if 400 <= status < 500:
        raise RequestRejected(f"Dataverse rejected the request: {message}", status=status, code=code,
                              **{k: v for k, v in context.items() if k not in ("status", "code")})
    raise SourceUnavailable(f"Dataverse answered an unexpected HTTP {status}: {message}",
                            hint="rerun later; report it if it persists", **context)


def error_of(body: bytes) -> tuple[str, str]:
    """(code, message) of Dataverse's `{"error":{"code","message"}}`; ("", "") for any other body."""
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("code") or ""), one_line(str(error.get("message") or ""))
    except (ValueError, AttributeError):
        return "", ""


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(url: str) -> str:
    """The URL with its query's values dropped (names kept): safe for messages and logs."""
    parts = urlsplit(url)
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?" + "&".join(names) if names else "")


def server_date(values: Sequence[str]) -> datetime | None:
    for value in reversed(values):  # one Date is the rule (RFC 9110); if a proxy added one, the origin's is last
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return None


class DataverseClient:
    def __init__(self, settings: Settings, *, read_timeout: float | None = None, connect_timeout: float = 10.0,
                 budget_s: float | None = None, backoff_base_s: float = 1.0, backoff_max_s: float = 60.0,
                 max_batch: int = MAX_BATCH) -> None:
        assert settings.dataverse_url, "DATAVERSE_URL must be resolved before the client is built"
        self.origin = settings.dataverse_url.rstrip("/")
        self.base = self.origin + API_PATH
        self.session = trusting_session(settings.ca_bundle, pool_size=max(10, settings.max_concurrency + 2))
        self.session.headers.update({"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0",
                                     "Accept-Encoding": "gzip", "User-Agent": "l2c"})
        self.tokens = TokenProvider(settings, self.session)
        self.timeout = (connect_timeout, settings.http_timeout if read_timeout is None else read_timeout)
        self.budget_s = settings.retry_budget if budget_s is None else budget_s
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self.limiter = AdaptiveLimiter(settings.max_concurrency, check=stop.check)
        self.gate = RetryAfterGate(sleep=stop.sleep)  # a stop request ends every wait (ground/stop.py)
        self._jitter = tenacity.wait_random_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self._exponential = tenacity.wait_exponential(multiplier=backoff_base_s, max=backoff_max_s)
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._last_retry = -STORM_QUIET_S

    # --- public API --------------------------------------------------------------------------------------

    def get(self, path_or_url: str, *, prefer: Sequence[str] = (), kind: str = "other") -> Reply:
        """GET a path relative to the Web API root, or a nextLink/deltaLink (absolute, or its path and query as
        state keeps it: connector/odata.py `stored_link`) sent verbatim."""
        url, verbatim = self._resolve(path_or_url)
        headers = {"Prefer": ",".join(prefer)} if prefer else {}

        def attempt() -> Reply:
            response, elapsed = self._send("GET", url, verbatim=verbatim, headers=headers, kind=kind)
            validate_response(response.status_code, response.headers, response.content, url)
            return Reply(response.status_code, response.headers, _decode(response.headers, response.content),
                         server_date(_header_values(response, "Date")), elapsed, url)

        return self._call(kind, url, attempt)

    def batch_get(self, relative_urls: Sequence[str], *, prefer: Sequence[str] = (),
                  kind: str = "batch") -> list[Reply]:
        """GETs in `$batch` requests of at most 1000; one Reply per URL, in order. A part that failed for good
        (4xx) is returned with its status. 429/5xx parts alone are sent again: GETs are idempotent, and service
        protection charges a batch its whole execution time ([PD] api-limits.md), so re-running answered parts
        would spend the very budget that got us throttled."""
        replies: list[Reply] = []
        for start in range(0, len(relative_urls), self.max_batch):
            replies += self._batch(list(relative_urls[start:start + self.max_batch]), prefer, kind)
        return replies

    def stats(self) -> dict[str, dict[str, float]]:
        """Counters per request kind (requests, retries, 429s, 5xx, resets, timeouts, reauths, parts, seconds)."""
        with self._lock:
            return {kind: {**{k: 0 for k in ("requests", "retries", "429s", "5xx", "resets")}, **counts,
                           "seconds": round(self._seconds[kind], 3)} for kind, counts in self._counts.items()}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> DataverseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sign_in(self) -> None:
        """Get a token now, retried like any request: a refused credential is one error before any table
        starts, not one per table."""
        def attempt() -> None:
            try:
                self.tokens.token()
            except SourceUnavailable as exc:  # the authority could not be reached or failed: transient
                raise _Retry(f"sign-in failed ({exc.message})") from None

        self._call("sign-in", self.tokens.authority, attempt)

    # --- the retry loop ----------------------------------------------------------------------------------

    def _call(self, kind: str, url: str, attempt: Callable[[], T]) -> T:
        started, attempts = time.monotonic(), 0

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            return attempt()

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Retry), wait=self._wait, sleep=stop.sleep,
                                     stop=tenacity.stop_before_delay(self.budget_s),
                                     before_sleep=lambda rs: self._before_sleep(kind, url, rs), reraise=True)
        try:
            return retrying(counted)
        except _Retry as exc:
            seconds = time.monotonic() - started
            raise SourceUnavailable(
                f"Dataverse kept failing: {exc.what} after {attempts} attempts in {seconds:.0f} s",
                hint="rerun later (the run resumes where it stopped); check the org's health in the Power Platform "
                "admin center if it persists", url=redact(url), kind=kind) from None
        finally:
            self._count(kind, seconds=time.monotonic() - started)

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, _Retry) and exc.status == 429:
            if exc.retry_after is None:  # no Retry-After: exponential, and still for every thread
                self.gate.block(self._exponential(rs))
            return self.gate.remaining()
        return float(self._jitter(rs))

    def _before_sleep(self, kind: str, url: str, rs: tenacity.RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        what = exc.what if isinstance(exc, _Retry) else type(exc).__name__
        self._count(kind, retries=1)
        with self._lock:
            now = time.monotonic()
            storm, self._last_retry = now - self._last_retry > STORM_QUIET_S, now
        if storm:
            log.warning("retrying Dataverse requests after %s (this storm's further retries are logged at debug)", what)
        log.debug("retry %d of %s %s in %.2f s after %s", rs.attempt_number, kind, redact(url), rs.upcoming_sleep,
                  what)

    # --- one exchange ------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, verbatim: bool, headers: dict[str, str], kind: str,
              data: bytes | None = None) -> tuple[requests.Response, float]:
        """One request, signed in again once on a 401. Raises _Retry for a transport failure."""
        for fresh in (False, True):
            response, elapsed = self._exchange(method, url, verbatim=verbatim, headers=headers, data=data, kind=kind)
            if response.status_code != 401 or fresh:
                break
            log.debug("401 from Dataverse: signing in again")
            self._count(kind, reauths=1)
            self.tokens.invalidate()
        return response, elapsed

    def _exchange(self, method: str, url: str, *, verbatim: bool, headers: dict[str, str], data: bytes | None,
                  kind: str) -> tuple[requests.Response, float]:
        with self.limiter.slot():
            try:
                token = self.tokens.token()
            except SourceUnavailable as exc:  # the authority could not be reached: as transient as a reset
                raise _Retry(f"sign-in failed ({exc.message})") from None
            prepared = self.session.prepare_request(requests.Request(
                method, url, headers={**headers, "Authorization": f"Bearer {token}"}, data=data))
            if verbatim:
                prepared.url = url  # a next/delta link is followed untouched ([PD] page-results.md)
            env = self.session.merge_environment_settings(prepared.url or url, {}, None, None, None)
            self.gate.wait()  # last thing before the wire: a 429 that lands while we wait still counts
            stop.check()  # a run asked to stop sends nothing more
            self._count(kind, requests=1)
            started = time.monotonic()
            try:
                response = self.session.send(prepared, timeout=self.timeout, allow_redirects=False, **env)
            except requests.exceptions.SSLError as exc:
                distrust = untrusted(exc, url)
                if distrust is not None:
                    raise distrust from None
                self._count(kind, resets=1)
                raise _Retry(f"TLS error ({type(exc).__name__})") from None
            except requests.Timeout as exc:
                self._count(kind, timeouts=1)
                raise _Retry(f"no answer in time ({type(exc).__name__})") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                self._count(kind, resets=1)
                raise _Retry(f"connection lost ({type(exc).__name__})") from None
        elapsed = time.monotonic() - started
        self._observe(kind, response.status_code, response.headers)
        if 200 <= response.status_code < 300:
            self.limiter.succeeded()
        return response, elapsed

    def _observe(self, kind: str, status: int, headers: Mapping[str, str]) -> None:
        hint = headers.get("x-ms-dop-hint")
        if hint and hint.strip().isdigit():
            self.limiter.hint(int(hint))
        if status == 429:
            self._count(kind, **{"429s": 1})
            seconds = retry_after(headers)
            if seconds is not None:
                self.gate.block(seconds)  # from receipt, so never earlier than the server's window ends
            self.limiter.throttled(seconds or 1.0)
        elif status >= 500:
            self._count(kind, **{"5xx": 1})

    def _count(self, kind: str, seconds: float = 0.0, **counts: int) -> None:
        with self._lock:
            self._counts[kind].update(counts)
            self._seconds[kind] += seconds

    def _resolve(self, path_or_url: str) -> tuple[str, bool]:
        if _is_absolute(path_or_url):
            if _origin(path_or_url) != _origin(self.origin):
                raise L2CError(f"refusing to send the access token to {_origin(path_or_url)}: links must stay on "
                               f"{self.origin}", url=redact(path_or_url))
            return path_or_url, True
        if path_or_url.startswith("/"):  # a stored link: as served, so never re-encoded (its escapes' case kept)
            return self.origin + path_or_url, True
        return self.base + path_or_url, False

    # --- $batch ------------------------------------------------------------------------------------------

    def _batch(self, urls: list[str], prefer: Sequence[str], kind: str) -> list[Reply]:
        targets = [self._target(u) for u in urls]
        results: list[Reply | None] = [None] * len(targets)
        endpoint = self.base + "$batch"

        def attempt() -> list[Reply]:
            while True:
                pending = [i for i, r in enumerate(results) if r is None]
                if not pending or not send(pending):
                    return [r for r in results if r is not None]

        def send(pending: list[int]) -> bool:
            """One $batch of the pending parts; True when the org stopped at a part that failed for good and the
            parts after it, never run, are to be sent at once. Raises _Retry when an attempt may succeed."""
            boundary = f"batch_{uuid.uuid4()}"
            # continue-on-error: without it Dataverse stops at the first failing part (4xx included).
            headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"', "Prefer": "odata.continue-on-error"}
            body = encode_batch(boundary, [targets[i] for i in pending], prefer)
            response, elapsed = self._send("POST", endpoint, verbatim=False, headers=headers, data=body, kind=kind)
            content_type = response.headers.get("Content-Type", "")
            if not content_type.lower().startswith("multipart/mixed"):
                validate_response(response.status_code, response.headers, response.content, endpoint)
                raise _Retry(f"a $batch answer of type {content_type or 'none'!r}", status=response.status_code)
            # A multipart answer is read part by part whatever its outer status: a batch that stopped at a failing
            # part answers with that part's status ([PD] webapi/execute-batch-operations-using-web-api.md,
            # "Handling errors": "The batch error represents the error of the first failing request").
            try:
                parts = parse_batch(content_type, response.content)
            except ValueError as exc:
                raise _Retry(f"an unreadable $batch answer ({exc})") from None
            if len(parts) > len(pending):
                raise SourceUnavailable(f"Dataverse answered {len(parts)} parts to a $batch of {len(pending)}",
                                        hint="report this; the batch cannot be matched to its requests",
                                        url=redact(endpoint))
            self._count(kind, parts=len(parts))
            date = server_date(_header_values(response, "Date"))
            failure: _Retry | None = None
            for index, (status, part_headers, part_body) in zip(pending, parts, strict=False):
                self._observe(kind, status, part_headers)
                url = self.origin + targets[index]
                try:
                    validate_response(status, part_headers, part_body, url)
                except _Retry as exc:  # only this part goes again; its neighbours' answers stand
                    failure = exc if failure is None or exc.status == 429 else failure
                    continue
                except L2CError:
                    pass  # a part's 4xx is the caller's to judge
                results[index] = Reply(status, part_headers, _decode(part_headers, part_body),
                                       server_date([part_headers["Date"]]) if "Date" in part_headers else date,
                                       elapsed, url)
            if failure is not None:
                raise failure
            if len(parts) == len(pending):
                return False
            last = results[pending[len(parts) - 1]] if parts else None
            if last is not None and last.status >= 400:
                # The org stopped at that part (continue-on-error not honoured): the rest never ran, which is no
                # fault to back off from.
                return True
            raise _Retry(f"a $batch answer with {len(parts)} of {len(pending)} parts")

        return self._call(kind, endpoint, attempt)

    def _target(self, url: str) -> str:
        """The request target of a batch part: the path and query from the host on."""
        if _is_absolute(url):
            absolute, _ = self._resolve(url)
            parts = urlsplit(absolute)
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return requote_uri(url if url.startswith("/") else API_PATH + url)


def _decode(headers: Mapping[str, str], body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        if "json" in headers.get("Content-Type", "").lower():
            return json.loads(body, parse_float=Decimal)
        text = body.decode("utf-8")
    except ValueError:
        raise _Retry("a truncated or malformed body") from None
    try:
        return json.loads(text, parse_float=Decimal)  # `/$count` answers a bare number as text/plain
    except ValueError:
        return text


def _header_values(response: requests.Response, name: str) -> list[str]:
    raw = getattr(response.raw, "headers", None)
    if raw is not None and hasattr(raw, "getlist"):
        return list(raw.getlist(name))
    value = response.headers.get(name)
    return [value] if value else []


def _is_absolute(url: str) -> bool:
    return url[:8].lower().startswith(("https://", "http://"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"
