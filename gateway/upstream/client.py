"""The one HTTP client every source uses to talk to an upstream, and the resilience around it.

`UpstreamClient` owns a single pooled `httpx.AsyncClient` (httpx runs under Trio through anyio).
One *attempt* turns one HTTP exchange with a provider into either the decoded JSON or an
exception from the `UpstreamError` family, with the provider, endpoint and HTTP status attached::

    outcome          what happened                               raised
    ok               HTTP 2xx with a JSON body                   (returns the decoded value)
    rate_limited     HTTP 429, or 418/503 with Retry-After       UpstreamRateLimited(retry_after)
    http_error       any other non-2xx status                    UpstreamError(status=...)
    timeout          no full answer within timeout_seconds       UpstreamError("timed out ...")
    transport_error  refused, reset, DNS failure, bad URL        UpstreamError
    malformed        body not JSON, undecodable, or too large    UpstreamPayloadError

(`gateway.upstream.status_errors` classifies a non-2xx answer; `gateway.upstream.attempts`
holds the outcome names and the `Attempt` record.)

Around each attempt, `request_json` applies the provider's policy, in this order:

1. **Configuration** (`gateway.upstream.request`): a disabled provider, or one whose required
   API key was not given, raises `UpstreamUnconfigured` and is never contacted. The key is
   injected as `provider.auth` says (query parameter, header with prefix, or the `{key}` segment
   of base_url) and is masked as `***` (`gateway.upstream.masking`) in every `Attempt.endpoint`
   and exception message the client produces.
2. **Coalescing** (`gateway.upstream.coalescing`): identical concurrent idempotent requests
   (provider, method, URL, params, body, headers, key) share one upstream exchange; every caller
   gets its result or exception. The shared JSON value must be treated as read-only. If the
   caller doing the work is cancelled, a waiting caller takes over; nobody else sees the
   cancellation.
3. **Circuit breaker** (`gateway.upstream.breaker`): when open, `CircuitOpenError` is raised
   without a request. Each attempt's outcome updates it: timeouts, transport errors, 5xx and
   malformed bodies are failures; 4xx and rate limiting are neutral.
4. **Rate limiter** (`gateway.upstream.ratelimit`): every attempt (retries included) waits for
   budget in all the provider's windows first.
5. **Retries**, for idempotent requests only (GET and HEAD by default; a POST only with
   `idempotent=True`, e.g. JSON-RPC reads): at most `RetryPolicy.max_retries` (2) retries on
   timeouts, transport errors and 5xx, after exponential backoff with full jitter. Attempts and
   backoff share a budget of `timeout_seconds * 3`; a retry that would not fit is not made.
   Waiting for rate-limit budget does not count against it (callers bound that themselves).
   A 429 (or 418/503 with Retry-After) whose Retry-After is at most `retry_after_cap` (30 s) is
   retried once after waiting exactly that long; a longer (or missing) Retry-After raises
   `UpstreamRateLimited` at once so that a pool can fail over to another provider.

Parsers run after a successful exchange. A parser's `UpstreamPayloadError` (JSON of the wrong
shape) is a provider failure too: use `request_parsed` (the parser runs inside the attempt) or
call `report_payload_error` after parsing a `request_json`/`get_json` result.

`get_json` is the original single-attempt call kept for existing callers: the same pipeline with
no retries (collectors have their own backoff loop). `request_raw` is the same pipeline returning
the undecoded body and its validators, for conditional GET (`gateway.upstream.conditional`): a
304 is then an answer, not an error.

Resource rules: the *whole* exchange (connect, headers, body) runs under a Trio deadline of
`provider.timeout_seconds`, in addition to httpx's per-operation timeouts, so a server that
dribbles bytes cannot hold a caller longer than that. The body is streamed and abandoned as
soon as it passes the cap — the provider's `max_response_bytes` (providers.toml) or else the
client's (5 MiB by default) — so a misbehaving upstream cannot make us buffer an unbounded
response. A body of `LARGE_BODY_BYTES` or more is decoded, and then parsed, in a worker thread,
not on the event loop (`gateway.upstream.decoding` says why and how).

Every attempt that reaches an outcome is recorded in `attempts` (a bounded deque of
`gateway.upstream.attempts.Attempt`, newest last), counted in `counters[(provider, outcome)]`
for metrics, and passed to the optional `on_attempt` hook (provider health). An attempt
cancelled from outside (shutdown) is not an upstream outcome and is not recorded.

This module must never log or record secrets: request headers are not recorded, and the key is
masked wherever a URL or an upstream's error text is quoted.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import trio

from gateway.config import SECONDS, ProviderConfig
from gateway.errors import (
    CircuitOpenError,
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
)
from gateway.histogram import Histogram
from gateway.upstream.attempts import ATTEMPTS_KEPT, Attempt, AttemptCall, Outcome
from gateway.upstream.breaker import BreakerState, CircuitBreaker
from gateway.upstream.coalescing import Coalescer
from gateway.upstream.conditional import NOT_MODIFIED, RawResponse, kept_headers
from gateway.upstream.decoding import (
    DEFAULT_MAX_RESPONSE_BYTES,
    LARGE_BODY_BYTES,
    decode_json_body,
    read_capped,
)
from gateway.upstream.ratelimit import RateLimiter, ThresholdCallback
from gateway.upstream.request import UpstreamRequest, build_request
from gateway.upstream.status_errors import status_error

__all__ = [
    "DEFAULT_USER_AGENT",
    "NO_RETRY",
    "BreakerChangeCallback",
    "RetryPolicy",
    "UpstreamClient",
]

T = TypeVar("T")

DEFAULT_USER_AGENT: Final = "crypto-data-hub-gateway/0.1"
CLOSE_TIMEOUT: Final = 5 * SECONDS

BreakerChangeCallback = Callable[[str, BreakerState, BreakerState], None]
"""`on_breaker_change(provider_id, old, new)`."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How `request_json` retries an idempotent request (see the module docstring).

    Backoff before retry n (0-based) is uniform in [0, min(backoff_max, backoff_initial * 2**n)]
    ("full jitter", so a crowd of clients does not retry in lockstep).
    """

    max_retries: int = 2
    backoff_initial: float = 0.25 * SECONDS
    backoff_max: float = 4 * SECONDS
    retry_after_cap: float = 30 * SECONDS
    # Attempts plus backoff never take longer than this many times the provider's timeout.
    budget_factor: float = 3.0


NO_RETRY: Final = RetryPolicy(max_retries=0)


class _Budget:
    """The time a request may spend in attempts and backoff (not in rate-limit waits)."""

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def spend(self, seconds: float) -> None:
        self.left -= max(0.0, seconds)


def _retryable(error: UpstreamError) -> bool:
    """Timeouts, transport errors and 5xx; never payload errors, 4xx or rate limits."""
    if type(error) is not UpstreamError:
        return False
    return error.status is None or error.status >= 500


class UpstreamClient:
    """A shared, pooled HTTP client for upstream JSON APIs; see the module docstring.

    One instance serves every provider and holds each provider's `RateLimiter` and
    `CircuitBreaker` (created on first use from its `ProviderConfig`, or up front for the
    `providers` given). Close it with `aclose()` (or use `async with`). `transport` replaces the
    network, for tests (`httpx.MockTransport`); `rng` drives backoff jitter.

    Hooks, each called synchronously; they must be quick and must not raise (an exception would
    replace the request's own outcome):

    * `on_attempt(attempt)`: every recorded `Attempt`;
    * `on_breaker_change(provider_id, old, new)`: every breaker transition;
    * `on_rate_threshold(provider_id, window_name, used, limit)`: a window crossed 80 %.
    """

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        providers: Iterable[ProviderConfig] = (),
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        limiters: Callable[..., RateLimiter] = RateLimiter,
        breakers: Callable[..., CircuitBreaker] = CircuitBreaker,
    ) -> None:
        # `limiters`/`breakers` make each provider's limiter and breaker: with several replicas,
        # ones shared through Redis (gateway/broker/limits.py), same interface.
        self._make_limiter, self._make_breaker = limiters, breakers
        if max_response_bytes < 1:
            raise ValueError("max_response_bytes must be at least 1")
        self.max_response_bytes = max_response_bytes
        self.retry = retry or RetryPolicy()
        self.attempts: collections.deque[Attempt] = collections.deque(maxlen=ATTEMPTS_KEPT)
        self.counters: collections.Counter[tuple[str, Outcome]] = collections.Counter()
        # Each provider's request latency, in seconds (Prometheus histogram).
        self.latency: dict[str, Histogram] = {}
        # Requests answered by another caller's identical in-flight exchange, per provider.
        self.coalesced: collections.Counter[str] = collections.Counter()
        # Parser rejections reported after a successful exchange, per provider.
        self.payload_errors: collections.Counter[str] = collections.Counter()
        self.on_attempt: Callable[[Attempt], None] | None = None
        self.on_breaker_change: BreakerChangeCallback | None = None
        self.on_rate_threshold: ThresholdCallback | None = None
        self._rng = rng or random.Random()
        self._limiters: dict[str, RateLimiter] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._coalescer = Coalescer()
        for provider in providers:
            self.limiter_for(provider)
            self.breaker_for(provider)
        self._http = httpx.AsyncClient(
            # HTTP/2 is negotiated by ALPN where the upstream offers it (one connection carries
            # concurrent requests); plain http:// and HTTP/1.1-only hosts are unaffected.
            http2=True,
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

    # -- per-provider limiters and breakers -------------------------------------------------

    def limiter(self, provider_id: str) -> RateLimiter | None:
        """The provider's rate limiter, if it has been used (or registered) yet."""
        return self._limiters.get(provider_id)

    def breaker(self, provider_id: str) -> CircuitBreaker | None:
        """The provider's circuit breaker, if it has been used (or registered) yet."""
        return self._breakers.get(provider_id)

    def limiter_for(self, provider: ProviderConfig) -> RateLimiter:
        """The provider's rate limiter, created from `provider.rate_limits` on first use."""
        limiter = self._limiters.get(provider.id)
        if limiter is None:
            limiter = self._make_limiter(
                provider.id, provider.rate_limits, on_threshold=self._rate_threshold
            )
            self._limiters[provider.id] = limiter
        return limiter

    def breaker_for(self, provider: ProviderConfig) -> CircuitBreaker:
        """The provider's circuit breaker, created from `provider.breaker` on first use."""
        breaker = self._breakers.get(provider.id)
        if breaker is None:
            provider_id = provider.id

            def changed(old: BreakerState, new: BreakerState) -> None:
                if self.on_breaker_change is not None:
                    self.on_breaker_change(provider_id, old, new)

            breaker = self._make_breaker(
                provider.breaker, provider_id=provider.id, on_change=changed
            )
            self._breakers[provider.id] = breaker
        return breaker

    def _rate_threshold(self, provider_id: str, window: str, used: int, limit: int) -> None:
        if self.on_rate_threshold is not None:
            self.on_rate_threshold(provider_id, window, used, limit)

    def report_payload_error(
        self, provider: ProviderConfig | str, error: UpstreamPayloadError
    ) -> None:
        """A parser rejected a body that `request_json`/`get_json` returned: count it as a
        provider failure in the breaker (revoking the success the exchange recorded)."""
        provider_id = provider if isinstance(provider, str) else provider.id
        breaker = (
            self._breakers.get(provider_id)
            if isinstance(provider, str)
            else self.breaker_for(provider)
        )
        self.payload_errors[provider_id] += 1
        if breaker is not None:
            breaker.record_payload_failure()

    # -- requests ---------------------------------------------------------------------------

    async def get_json(
        self,
        provider: ProviderConfig,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Any:
        """GET `provider.base_url + path` once and return the decoded JSON body.

        `headers` are added to this request only. Rate limiter, breaker, auth and coalescing
        apply as in `request_json`, but there is no retry. Raises `UpstreamRateLimited`,
        `UpstreamPayloadError`, `CircuitOpenError`, `UpstreamUnconfigured` or `UpstreamError`.
        """
        return await self.request_json(
            provider, path, params=params, headers=headers, key=key, retry=NO_RETRY
        )

    async def request_json(
        self,
        provider: ProviderConfig,
        path: str,
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Send `method provider.base_url + path` with the full policy; return decoded JSON.

        `json` is sent as the request body. `idempotent` defaults to True for GET/HEAD/OPTIONS
        and False otherwise; only idempotent requests are retried or coalesced. `key` is the
        provider's API key (None: `provider.auth.default`, if any). `retry` overrides the
        client's policy for this call. See the module docstring for everything that can be
        raised.
        """
        request = build_request(provider, path, method, params, json, headers, idempotent, key)
        return await self._perform(request, retry or self.retry, None)

    async def request_text(
        self,
        provider: ProviderConfig,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> str:
        """GET with the full policy, returning the body as text (for RSS/Atom feeds and other
        non-JSON endpoints); undecodable bytes are replaced, never fatal."""
        request = build_request(provider, path, "GET", params, None, headers, None, key)
        request = replace(request, text=True)
        result: str = await self._perform(request, retry or self.retry, None)
        return result

    async def request_raw(
        self,
        provider: ProviderConfig,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> RawResponse:
        """GET with the full policy, returning the undecoded body and its validators
        (`gateway.upstream.conditional`). With `If-None-Match`/`If-Modified-Since` in `headers`,
        a 304 is an answer (`not_modified`, empty body) and a success for the breaker."""
        request = build_request(provider, path, "GET", params, None, headers, None, key)
        result: RawResponse = await self._perform(
            replace(request, raw=True), retry or self.retry, None
        )
        return result

    async def request_parsed(
        self,
        provider: ProviderConfig,
        path: str,
        parse: Callable[[Any], T],
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> T:
        """`request_json`, then `parse(payload)` inside the same attempt, so that a parser's
        `UpstreamPayloadError` counts as that attempt's failure in the breaker (it is not
        retried). Identical concurrent calls coalesce only when `parse` is the same object."""
        request = build_request(provider, path, method, params, json, headers, idempotent, key)
        result: T = await self._perform(request, retry or self.retry, parse)
        return result

    async def _perform(
        self, request: UpstreamRequest, policy: RetryPolicy, parse: Callable[[Any], Any] | None
    ) -> Any:
        if not request.idempotent:
            return await self._with_retries(request, policy, parse)
        provider_id = request.provider.id

        def shared() -> None:
            self.coalesced[provider_id] += 1

        return await self._coalescer.run(
            request.coalesce_key(parse),
            lambda: self._with_retries(request, policy, parse),
            shared,
        )

    async def _with_retries(
        self, request: UpstreamRequest, policy: RetryPolicy, parse: Callable[[Any], Any] | None
    ) -> Any:
        timeout = request.provider.timeout_seconds
        budget = _Budget(timeout * policy.budget_factor)
        retries_left = policy.max_retries if request.idempotent else 0
        backoffs = 0
        waited_retry_after = False
        last_error: UpstreamError | None = None
        while True:
            try:
                time_limit = min(timeout, budget.left)
                return await self._guarded_attempt(request, time_limit, budget, parse)
            except CircuitOpenError:
                # The breaker opened between our attempts: the real failure says more.
                if last_error is not None:
                    raise last_error from None
                raise
            except UpstreamRateLimited as exc:
                retry_after = exc.retry_after
                if (
                    retries_left <= 0
                    or waited_retry_after
                    or retry_after is None
                    or retry_after > policy.retry_after_cap
                ):
                    raise
                waited_retry_after = True
                retries_left -= 1
                last_error = exc
                await trio.sleep(retry_after)
            except UpstreamError as exc:
                if retries_left <= 0 or not _retryable(exc):
                    raise
                ceiling = min(policy.backoff_max, policy.backoff_initial * 2**backoffs)
                delay = self._rng.uniform(0, ceiling)
                # The next attempt must have a real chance: at least half a timeout left.
                if budget.left - delay < timeout / 2:
                    raise
                budget.spend(delay)
                retries_left -= 1
                backoffs += 1
                last_error = exc
                await trio.sleep(delay)

    async def _guarded_attempt(
        self,
        request: UpstreamRequest,
        time_limit: float,
        budget: _Budget,
        parse: Callable[[Any], Any] | None,
    ) -> Any:
        """Breaker, then rate limiter, then exactly one recorded attempt (and the parser)."""
        provider = request.provider
        breaker = self.breaker_for(provider)
        if not breaker.allow():
            raise CircuitOpenError(
                provider=provider.id, endpoint=request.endpoint, retry_in=breaker.retry_in()
            )
        failed: bool | None = None  # the breaker's verdict: None means neither way
        try:
            await self.limiter_for(provider).acquire()
            call = AttemptCall(provider, request.endpoint, request.secrets)
            started = trio.current_time()
            try:
                payload = await self._attempt(call, request, time_limit)
            finally:
                budget.spend(trio.current_time() - started)
                failed = call.counts_against_breaker()
            if parse is None:
                return payload
            try:
                if call.size >= LARGE_BODY_BYTES:
                    return await trio.to_thread.run_sync(parse, payload)
                return parse(payload)
            except UpstreamPayloadError:
                failed = True
                self.payload_errors[provider.id] += 1
                raise
            except BaseException:
                failed = None  # a bug in the parser, or a cancellation: no verdict
                raise
        finally:
            if failed is True:
                breaker.record_failure()
            elif failed is False:
                breaker.record_success()
            else:
                breaker.release()

    async def _attempt_json(
        self,
        provider: ProviderConfig,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> Any:
        """Exactly one GET, recorded; no auth, limiter, breaker or retry."""
        request = UpstreamRequest(
            provider=provider,
            method="GET",
            url=provider.base_url + path,
            endpoint=path,
            params=tuple((params or {}).items()),
            body=None,
            headers=tuple((headers or {}).items()),
            secrets=(),
            idempotent=True,
        )
        return await self._attempt(AttemptCall(provider, path), request, provider.timeout_seconds)

    async def _attempt(self, call: AttemptCall, request: UpstreamRequest, time_limit: float) -> Any:
        """Exactly one request, recorded. The retry policy is a loop around this method."""
        try:
            body, headers = await self._exchange(call, request, time_limit)
            call.size = len(body)
            if request.raw:
                call.outcome = "ok"
                return RawResponse(call.status or 0, body, kept_headers(headers))
            if request.text:
                call.outcome = "ok"
                return body.decode("utf-8", errors="replace")
            try:
                payload = await decode_json_body(body)
            except (ValueError, RecursionError):
                raise call.fail("malformed", "response body is not valid JSON") from None
            call.outcome = "ok"
            return payload
        finally:
            if call.outcome is not None:
                self._record(call)

    async def _exchange(
        self, call: AttemptCall, request: UpstreamRequest, time_limit: float
    ) -> tuple[bytes, httpx.Headers]:
        """Send the request and return the raw 2xx body (for a `raw` request, a 304's empty
        one) and the response headers, under the attempt's deadline."""
        timeout = time_limit
        body = b""
        headers = httpx.Headers()
        # A chained httpx exception can quote the URL; with a secret in play it is dropped.
        hide = bool(request.secrets)
        with trio.move_on_after(timeout) as deadline:
            try:
                async with self._http.stream(
                    request.method,
                    request.url,
                    params=request.params or None,
                    headers=dict(request.headers) if request.headers else None,
                    json=request.body,
                    timeout=httpx.Timeout(timeout),
                ) as response:
                    call.status = response.status_code
                    headers = response.headers
                    if request.raw and response.status_code == NOT_MODIFIED:
                        # Read the (empty) body, so the connection goes back to the pool clean.
                        return await read_capped(call, response, 0), headers
                    if not response.is_success:
                        raise await status_error(call, response)
                    limit = call.provider.max_response_bytes or self.max_response_bytes
                    body = await read_capped(call, response, limit)
            except httpx.TimeoutException as exc:
                error = call.fail("timeout", f"timed out after {timeout:g}s")
                raise error from (None if hide else exc)
            except httpx.DecodingError as exc:
                error = call.fail("malformed", f"undecodable response body: {exc}")
                raise error from (None if hide else exc)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                detail = str(exc) or "no detail"
                url = call.provider.base_url + call.endpoint  # base_url still holds "{key}"
                error = call.fail(
                    "transport_error", f"{type(exc).__name__} requesting {url}: {detail}"
                )
                raise error from (None if hide else exc)
        if deadline.cancelled_caught:
            raise call.fail("timeout", f"timed out after {timeout:g}s")
        return body, headers

    def _record(self, call: AttemptCall) -> None:
        assert call.outcome is not None
        attempt = call.to_attempt()
        self.attempts.append(attempt)
        self.counters[(call.provider.id, call.outcome)] += 1
        latency = self.latency.get(call.provider.id)
        if latency is None:
            latency = self.latency[call.provider.id] = Histogram()
        latency.observe(attempt.latency_ms / 1000.0)
        if self.on_attempt is not None:
            self.on_attempt(attempt)
