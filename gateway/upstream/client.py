"""The one HTTP client every source uses to talk to an upstream.

`UpstreamClient` owns a single pooled `httpx.AsyncClient` (httpx runs under Trio through anyio)
and turns one GET of a provider's JSON endpoint into either the decoded JSON or an exception
from the `UpstreamError` family, with the provider, endpoint and HTTP status attached::

    outcome          what happened                               raised
    ok               HTTP 2xx with a JSON body                   (returns the decoded value)
    rate_limited     HTTP 429, or 418/503 with Retry-After       UpstreamRateLimited(retry_after)
    http_error       any other non-2xx status                    UpstreamError(status=...)
    timeout          no full answer within timeout_seconds       UpstreamError("timed out ...")
    transport_error  refused, reset, DNS failure, bad URL        UpstreamError
    malformed        body not JSON, undecodable, or too large    UpstreamPayloadError

Resource rules: the *whole* exchange (connect, headers, body) runs under a Trio deadline of
`provider.timeout_seconds`, in addition to httpx's per-operation timeouts, so a server that
dribbles bytes cannot hold a collector longer than that. The body is streamed and abandoned as
soon as it passes `max_response_bytes`, so a misbehaving upstream cannot make us buffer an
unbounded response.

Every attempt that reaches an outcome is recorded in `attempts` (a bounded deque, newest last),
counted in `counters[(provider, outcome)]` for metrics, and passed to the optional
`on_attempt` hook (provider health). An attempt cancelled from
outside (shutdown) is not an upstream outcome and is not recorded.

This module makes exactly one attempt per call and never retries: retry, backoff, rate limiting
and circuit breaking belong to callers (see `gateway.sources`) or to a policy that will wrap
`UpstreamClient._attempt_json`. It must never log secrets: request headers are not recorded.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal

import httpx
import trio

from gateway.config import SECONDS, ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import utc_now

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_USER_AGENT",
    "OUTCOMES",
    "Attempt",
    "Outcome",
    "UpstreamClient",
    "parse_retry_after",
]

Outcome = Literal["ok", "http_error", "timeout", "rate_limited", "malformed", "transport_error"]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "ok",
    "http_error",
    "timeout",
    "rate_limited",
    "malformed",
    "transport_error",
)

DEFAULT_USER_AGENT: Final = "crypto-data-hub-gateway/0.1"
DEFAULT_MAX_RESPONSE_BYTES: Final = 5 * 1024 * 1024
ATTEMPTS_KEPT: Final = 1000
CLOSE_TIMEOUT: Final = 5 * SECONDS
# How much of an error response body is quoted in the exception message.
ERROR_SNIPPET_BYTES: Final = 300

# 429 is always a rate limit. 503 means "overloaded, come back later" only when the server says
# when; Binance answers 418 with Retry-After when an IP is banned for ignoring earlier 429s.
_RATE_LIMIT_STATUSES: Final = frozenset({429})
_RATE_LIMIT_IF_RETRY_AFTER: Final = frozenset({418, 503})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to an upstream and how it ended.

    `endpoint` is the path below the provider's base URL, without the query string.
    `error_type` is None for a success, otherwise the outcome name (`timeout`, `http_error`, ...).
    `status` is the HTTP status when one was received.
    """

    provider: str
    endpoint: str
    status: int | None
    latency_ms: float
    error_type: str | None
    at: datetime

    @property
    def ok(self) -> bool:
        return self.error_type is None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a Retry-After header, or None if absent or unreadable.

    RFC 9110 allows either a number of seconds or an HTTP-date; a date in the past means 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 5322 "-0000": treat as UTC, as HTTP-dates always are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utc_now())).total_seconds())


class _Call:
    """Mutable bookkeeping for one attempt while it is in flight."""

    __slots__ = ("endpoint", "outcome", "provider", "started", "status")

    def __init__(self, provider: ProviderConfig, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.status: int | None = None
        self.outcome: Outcome | None = None

    def fail(self, outcome: Outcome, message: str) -> UpstreamError:
        """Note the outcome and build the matching error (the caller raises it)."""
        self.outcome = outcome
        cls = UpstreamPayloadError if outcome == "malformed" else UpstreamError
        return cls(message, provider=self.provider.id, endpoint=self.endpoint, status=self.status)


class UpstreamClient:
    """A shared, pooled HTTP client for upstream JSON APIs; see the module docstring.

    One instance serves every provider. Close it with `aclose()` (or use `async with`).
    `transport` replaces the network, for tests (`httpx.MockTransport`).

    `on_attempt`, if set, is called synchronously with every recorded `Attempt`; it must be
    quick and must not raise (an exception would replace the request's own outcome).
    """

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self.max_response_bytes = max_response_bytes
        self.attempts: collections.deque[Attempt] = collections.deque(maxlen=ATTEMPTS_KEPT)
        self.counters: collections.Counter[tuple[str, Outcome]] = collections.Counter()
        self.on_attempt: Callable[[Attempt], None] | None = None
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections; bounded, and shielded so it also works while cancelled."""
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await self._http.aclose()

    async def get_json(
        self,
        provider: ProviderConfig,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET `provider.base_url + path` and return the decoded JSON body.

        `headers` are added to this request only (API keys). Raises `UpstreamRateLimited`,
        `UpstreamPayloadError` or `UpstreamError` as tabled in the module docstring.
        """
        return await self._attempt_json(provider, path, params, headers)

    async def _attempt_json(
        self,
        provider: ProviderConfig,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> Any:
        """Exactly one request, recorded. A retry policy is a loop around this method."""
        call = _Call(provider, path)
        try:
            body = await self._exchange(call, params, headers)
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                raise call.fail("malformed", "response body is not valid JSON") from None
            call.outcome = "ok"
            return payload
        finally:
            if call.outcome is not None:
                self._record(call)

    async def _exchange(
        self,
        call: _Call,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        """Send the request and return the raw 2xx body, under the provider's deadline."""
        timeout = call.provider.timeout_seconds
        url = call.provider.base_url + call.endpoint
        body = b""
        with trio.move_on_after(timeout) as deadline:
            try:
                async with self._http.stream(
                    "GET",
                    url,
                    params=dict(params) if params else None,
                    headers=dict(headers) if headers else None,
                    timeout=httpx.Timeout(timeout),
                ) as response:
                    call.status = response.status_code
                    if not response.is_success:
                        raise await self._status_error(call, response)
                    body = await self._read_capped(call, response)
            except httpx.TimeoutException as exc:
                raise call.fail("timeout", f"timed out after {timeout:g}s") from exc
            except httpx.DecodingError as exc:
                raise call.fail("malformed", f"undecodable response body: {exc}") from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                detail = str(exc) or "no detail"
                raise call.fail(
                    "transport_error", f"{type(exc).__name__} requesting {url}: {detail}"
                ) from exc
        if deadline.cancelled_caught:
            raise call.fail("timeout", f"timed out after {timeout:g}s")
        return body

    async def _status_error(self, call: _Call, response: httpx.Response) -> UpstreamError:
        status = response.status_code
        retry_after_header = response.headers.get("retry-after")
        if status in _RATE_LIMIT_STATUSES or (
            status in _RATE_LIMIT_IF_RETRY_AFTER and retry_after_header is not None
        ):
            call.outcome = "rate_limited"
            retry_after = parse_retry_after(retry_after_header)
            hint = f", retry after {retry_after:g}s" if retry_after is not None else ""
            return UpstreamRateLimited(
                f"rate limited (HTTP {status}{hint})",
                provider=call.provider.id,
                endpoint=call.endpoint,
                status=status,
                retry_after=retry_after,
            )
        snippet = await _read_snippet(response)
        return call.fail("http_error", f"HTTP {status}" + (f": {snippet}" if snippet else ""))

    async def _read_capped(self, call: _Call, response: httpx.Response) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise call.fail(
                "malformed", f"response of {declared} bytes exceeds the {limit}-byte limit"
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise call.fail("malformed", f"response exceeds the {limit}-byte limit")
        return bytes(body)

    def _record(self, call: _Call) -> None:
        assert call.outcome is not None
        attempt = Attempt(
            provider=call.provider.id,
            endpoint=call.endpoint,
            status=call.status,
            latency_ms=(time.perf_counter() - call.started) * 1000.0,
            error_type=None if call.outcome == "ok" else call.outcome,
            at=utc_now(),
        )
        self.attempts.append(attempt)
        self.counters[(call.provider.id, call.outcome)] += 1
        if self.on_attempt is not None:
            self.on_attempt(attempt)


async def _read_snippet(response: httpx.Response) -> str:
    """The start of an error body, on one line, for the exception message."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_SNIPPET_BYTES:
            break
    text = bytes(data[:ERROR_SNIPPET_BYTES]).decode("utf-8", errors="replace")
    return " ".join(text.split())
