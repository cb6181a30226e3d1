"""HTTP to helpdesk APIs: one requests session, timeouts, tenacity retries, clear errors.

Short in-call retries ride out a blip (a 502 from a proxy, a 429 with Retry-After of a few
seconds); a longer outage surfaces as a transient HostError so the job is retried later
with backoff instead of holding a worker thread for minutes.

Only idempotent requests are retried within the call (GET, PUT, DELETE…, or a POST/PATCH
its caller marks `idempotent=True`). A POST that creates something goes out once: a timeout
or a proxy's 502/504 may hide a write that was saved, so the job fails and its retry looks
for the result (the connector's marker, the reply's text, the ticket's reference) first.
Every write first checks that the running job still holds its lease (connector.lease).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from connector.hosts.base import HostError, TestEvent
from connector.lease import check_current_lease

log = logging.getLogger("bpsm.http")

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_INLINE_RETRY_AFTER = 5.0  # longer waits go back to the queue


class RetryableResponse(Exception):
    def __init__(self, response: requests.Response):
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            import time

            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryableResponse):
        after = retry_after_seconds(exc.response)
        if after is not None:
            return min(after, MAX_INLINE_RETRY_AFTER)
    return float(wait_exponential(multiplier=0.25, max=2.0)(state))


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RetryableResponse):
        after = retry_after_seconds(exc.response)
        return after is None or after <= MAX_INLINE_RETRY_AFTER
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


ErrorText = Callable[[requests.Response], str]


def default_error_text(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip()
    return str(data)[:300]


def send_test_event(event: TestEvent) -> str:
    """POST setup's harmless event to the connector's hook URL (after `bpsm setup`) and say,
    in one line for the admin, whether it got through."""
    try:
        answer = requests.post(event.url, timeout=10, data=event.body, headers=event.headers)
    except requests.RequestException as exc:
        where = event.url.split("?")[0]
        return f"test event failed: cannot reach {where} ({type(exc).__name__})"
    if answer.status_code == 401:
        return f"test event reached the connector but {event.refused}"
    return f"test event: connector answered {answer.status_code} {answer.text.strip()}"


def read_environment_once(session: requests.Session, base_url: str) -> None:
    """Take the proxy and CA-bundle settings from the environment now, not per request.

    requests re-reads the proxy variables and ~/.netrc for every call (up to ~0.9 ms of CPU
    each, profiled: a sizeable share of a worker's time with 7 calls per ticket). A running
    service's environment does not change. HTTPS_PROXY/NO_PROXY and REQUESTS_CA_BUNDLE keep
    working; ~/.netrc is no longer consulted (every host authenticates explicitly)."""
    if not session.trust_env:
        return
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


class HttpTransport:
    """A requests session bound to one base URL. Tests may pass their own session."""

    def __init__(
        self,
        base_url: str,
        host: str,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        attempts: int = 3,
        error_text: ErrorText = default_error_text,
    ):
        self.base_url = base_url.rstrip("/")
        self.host = host
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "bpsm-connector")
        read_environment_once(self.session, self.base_url)
        self.error_text = error_text
        self.attempts = attempts  # 1: every request goes out once (without_retries)
        self._send = retry(
            retry=retry_if_exception(_retryable),
            wait=_wait,
            stop=stop_after_attempt(attempts),
            reraise=True,
        )(self._send_once)

    def without_retries(self) -> HttpTransport:
        """The same endpoint and session, sending each request once: for writes that are not
        idempotent, whose caller looks for the result before it tries again."""
        return HttpTransport(
            self.base_url,
            self.host,
            timeout=self.timeout,
            session=self.session,
            attempts=1,
            error_text=self.error_text,
        )

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}/{path.lstrip('/')}"

    def _send_once(self, method: str, path: str, kwargs: dict[str, Any]) -> requests.Response:
        response = self.session.request(method, self.url(path), timeout=self.timeout, **kwargs)
        if response.status_code in RETRY_STATUSES:
            raise RetryableResponse(response)
        return response

    def request(
        self,
        method: str,
        path: str,
        ok: tuple[int, ...] = (200, 201, 204, 206),
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send, with in-call retries for idempotent requests (by default: by method);
        non-`ok` answers become HostError (permanent for 4xx)."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        if method not in ("GET", "HEAD", "OPTIONS"):
            check_current_lease()
        send = self._send if idempotent else self._send_once
        try:
            response = send(method, path, kwargs)
        except RetryableResponse as exc:
            response = exc.response
        except requests.Timeout as exc:
            raise HostError(
                f"{self.host}: {method} {path} timed out after {self.timeout}s "
                "(the write may have been saved; the retry checks first)"
            ) from exc
        except requests.ConnectionError as exc:
            raise HostError(
                f"{self.host}: cannot connect to {self.base_url} ({type(exc).__name__})"
            ) from exc
        if response.status_code in ok:
            return response
        status = response.status_code
        detail = self.error_text(response)
        message = f"{self.host}: {method} {path} answered {status}: {detail}"
        if status in RETRY_STATUSES:
            raise HostError(message, retry_after=retry_after_seconds(response))
        raise HostError(message, permanent=True)


class SharedToken:
    """A session or access token shared by a client's threads: fetched on first use, and
    renewed once after a 401 however many threads saw the same stale token."""

    def __init__(self, fetch: Callable[[], str]):
        self._fetch = fetch
        self._value: str | None = None
        self._lock = threading.Lock()

    def current(self) -> str:
        with self._lock:
            if self._value is None:
                self._value = self._fetch()
            return self._value

    def renew(self, stale: str) -> str:
        with self._lock:
            if self._value in (None, stale):
                self._value = self._fetch()
            assert self._value is not None
            return self._value

    def take(self) -> str | None:
        """The token, forgotten (to end the session it names)."""
        with self._lock:
            value, self._value = self._value, None
            return value
