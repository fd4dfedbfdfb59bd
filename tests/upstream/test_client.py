"""UpstreamClient: status mapping, Retry-After, deadlines, size cap, JSON decoding, records.

Most tests use httpx.MockTransport (no network) and `autojump_clock` where time matters; the
tests marked "loopback" talk to a real socket on 127.0.0.1 under the real clock.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any

import httpx
import pytest
import trio

import gateway.upstream as upstream_pkg
from gateway.config import AuthSpec, ProviderConfig, RateLimitWindow
from gateway.errors import (
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.sources.defillama import fetch_protocols
from gateway.upstream import (
    DEFAULT_MAX_RESPONSE_BYTES,
    NO_RETRY,
    OUTCOMES,
    Attempt,
    RetryPolicy,
    UpstreamClient,
    parse_retry_after,
)
from gateway.upstream import client as client_module
from gateway.upstream import decoding as decoding_module
from tests.simulator import shipped_provider, synthetic_protocols_body
from tests.simulator.rest import Fault, run_simulator

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]

PROVIDER = ProviderConfig(
    id="testprov",
    name="Test provider",
    categories=("MARKET_DATA",),
    base_url="https://api.example.test/v1",
    timeout_seconds=5.0,
)


def mock_client(
    handler: Handler, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
) -> UpstreamClient:
    return UpstreamClient(
        transport=httpx.MockTransport(handler), max_response_bytes=max_response_bytes
    )


def respond(
    status: int = 200, body: bytes | str = b"{}", headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    return handler


async def expect_error(
    handler: Handler,
    exc_type: type[UpstreamError],
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> tuple[UpstreamError, UpstreamClient]:
    client = mock_client(handler, max_response_bytes)
    with pytest.raises(exc_type) as info:
        await client.get_json(PROVIDER, "/thing")
    await client.aclose()
    return info.value, client


# -- public surface ----------------------------------------------------------------------------


def test_all_is_explicit_and_importable() -> None:
    for module in (upstream_pkg, client_module):
        for name in module.__all__:
            assert hasattr(module, name), name
    assert "UpstreamClient" in upstream_pkg.__all__
    assert set(OUTCOMES) == {
        "ok",
        "http_error",
        "timeout",
        "rate_limited",
        "malformed",
        "transport_error",
    }


# -- success -----------------------------------------------------------------------------------


async def test_success_builds_url_sends_headers_and_records() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"bitcoin": {"usd": 67187.33}})

    async with UpstreamClient(
        transport=httpx.MockTransport(handler), user_agent="ua-test/1"
    ) as client:
        payload = await client.get_json(
            PROVIDER, "/simple/price", {"ids": "bitcoin", "vs": "usd"}, headers={"x-key": "k"}
        )

    assert payload == {"bitcoin": {"usd": 67187.33}}
    (request,) = seen
    assert str(request.url) == "https://api.example.test/v1/simple/price?ids=bitcoin&vs=usd"
    assert request.headers["user-agent"] == "ua-test/1"
    assert request.headers["x-key"] == "k"
    (attempt,) = client.attempts
    assert isinstance(attempt, Attempt)
    assert attempt.provider == "testprov"
    assert attempt.endpoint == "/simple/price"
    assert attempt.status == 200
    assert attempt.error_type is None and attempt.ok
    assert attempt.latency_ms >= 0
    assert attempt.at.tzinfo is not None
    assert client.counters == {("testprov", "ok"): 1}


async def test_on_attempt_hook_sees_every_outcome() -> None:
    seen: list[Attempt] = []
    client = mock_client(respond(500))
    client.on_attempt = seen.append
    with pytest.raises(UpstreamError):
        await client.get_json(PROVIDER, "/x")
    assert seen == list(client.attempts)
    assert seen[0].error_type == "http_error" and not seen[0].ok
    await client.aclose()


async def test_attempts_are_bounded() -> None:
    client = mock_client(respond())
    assert client.attempts.maxlen == 1000
    for _ in range(5):
        await client.get_json(PROVIDER, "/x")
    assert len(client.attempts) == 5
    assert client.counters[("testprov", "ok")] == 5
    await client.aclose()


# -- HTTP status mapping -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503, 301])
async def test_non_2xx_is_upstream_error_with_status(status: int) -> None:
    error, client = await expect_error(
        respond(status, '{"code":-1121,"msg":"Invalid symbol."}'), UpstreamError
    )
    assert type(error) is UpstreamError
    assert error.status == status
    assert error.provider == "testprov"
    assert error.endpoint == "/thing"
    assert f"HTTP {status}" in str(error)
    assert "Invalid symbol." in str(error)  # the body's start is quoted for the logs
    assert client.attempts[-1].error_type == "http_error"
    assert client.attempts[-1].status == status
    assert client.counters == {("testprov", "http_error"): 1}


async def test_error_snippet_is_bounded() -> None:
    error, _ = await expect_error(respond(500, "x" * 100_000), UpstreamError)
    assert len(str(error)) < 400


async def test_429_is_rate_limited_with_retry_after_seconds() -> None:
    error, client = await expect_error(
        respond(429, "{}", {"Retry-After": "30"}), UpstreamRateLimited
    )
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 30
    assert error.status == 429
    assert error.code == "RATE_LIMITED"
    assert client.attempts[-1].error_type == "rate_limited"
    assert client.counters == {("testprov", "rate_limited"): 1}


async def test_429_with_http_date_retry_after() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    error, _ = await expect_error(
        respond(429, "{}", {"Retry-After": format_datetime(when, usegmt=True)}),
        UpstreamRateLimited,
    )
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after is not None
    assert 100 <= error.retry_after <= 121


async def test_429_without_retry_after() -> None:
    error, _ = await expect_error(respond(429), UpstreamRateLimited)
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [503, 418])
async def test_503_and_418_with_retry_after_are_rate_limits(status: int) -> None:
    error, _ = await expect_error(
        respond(status, "busy", {"Retry-After": "7"}), UpstreamRateLimited
    )
    assert isinstance(error, UpstreamRateLimited)
    assert error.status == status
    assert error.retry_after == 7


async def test_503_without_retry_after_is_a_plain_error() -> None:
    error, client = await expect_error(respond(503, "busy"), UpstreamError)
    assert not isinstance(error, UpstreamRateLimited)
    assert client.attempts[-1].error_type == "http_error"


# -- Retry-After parsing -----------------------------------------------------------------------

NOW = datetime(2024, 3, 25, 8, 45, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("Mon, 25 Mar 2024 08:47:00 GMT", 120.0),
        ("Mon, 25 Mar 2024 08:40:00 GMT", 0.0),  # in the past: retry now
        ("Monday, 25-Mar-24 08:46:00 GMT", 60.0),  # obsolete RFC 850 form
        ("-1", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


# -- body handling -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"<html><body>502 Bad Gateway</body></html>", b'{"bitcoin": {"usd": 6718', b"\xff\xfe{"],
)
async def test_non_json_body_is_payload_error(body: bytes) -> None:
    error, client = await expect_error(respond(200, body), UpstreamPayloadError)
    assert error.status == 200
    assert client.attempts[-1].error_type == "malformed"
    assert client.counters == {("testprov", "malformed"): 1}


async def test_deeply_nested_json_is_payload_error_not_a_crash() -> None:
    await expect_error(respond(200, b"[" * 200_000 + b"]" * 200_000), UpstreamPayloadError)


async def test_declared_oversize_body_is_rejected_before_reading() -> None:
    error, _ = await expect_error(
        respond(200, b"[" + b"1," * 600 + b"1]"), UpstreamPayloadError, max_response_bytes=1000
    )
    assert "exceeds the 1000-byte limit" in str(error)


async def test_streamed_oversize_body_is_aborted() -> None:
    """No Content-Length: the cap is enforced while streaming, and reading stops early."""
    produced = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal produced
        yield b"["
        for _ in range(10_000):
            produced += 1
            yield b"1," * 50

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    error, _ = await expect_error(handler, UpstreamPayloadError, max_response_bytes=1000)
    assert "exceeds the 1000-byte limit" in str(error)
    assert produced < 20


async def test_body_at_the_cap_is_accepted() -> None:
    body = json.dumps(["x" * 90]).encode()
    client = mock_client(respond(200, body), max_response_bytes=len(body))
    assert await client.get_json(PROVIDER, "/x") == ["x" * 90]
    await client.aclose()


# -- time limits -------------------------------------------------------------------------------


async def test_slow_headers_time_out_at_provider_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        return httpx.Response(200, json={})

    start = trio.current_time()
    error, client = await expect_error(handler, UpstreamError)
    assert trio.current_time() - start == pytest.approx(5.0)
    assert str(error) == "testprov: timed out after 5s"
    assert error.status is None
    assert client.attempts[-1].error_type == "timeout"
    assert client.counters == {("testprov", "timeout"): 1}


async def test_dribbling_body_is_bounded_by_the_whole_request_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Each chunk arrives quickly enough for a per-read timeout, but the total is too slow."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            await trio.sleep(1)
            yield b" "

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    start = trio.current_time()
    error, client = await expect_error(handler, UpstreamError)
    assert trio.current_time() - start == pytest.approx(5.0)
    assert "timed out after 5s" in str(error)
    assert client.attempts[-1].status == 200
    assert client.attempts[-1].error_type == "timeout"


async def test_httpx_timeout_maps_to_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    error, client = await expect_error(handler, UpstreamError)
    assert "timed out after 5s" in str(error)
    assert client.attempts[-1].error_type == "timeout"


async def test_transport_error_maps_to_transport_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    error, client = await expect_error(handler, UpstreamError)
    assert type(error) is UpstreamError
    assert "ConnectError" in str(error) and "Connection refused" in str(error)
    assert client.attempts[-1].error_type == "transport_error"
    assert client.counters == {("testprov", "transport_error"): 1}


async def test_cancelled_from_outside_is_not_recorded(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        return httpx.Response(200, json={})

    client = mock_client(handler)
    with trio.move_on_after(1):
        await client.get_json(PROVIDER, "/x")
    assert not client.attempts
    assert not client.counters
    await client.aclose()


async def test_aclose_works_inside_a_cancelled_scope() -> None:
    client = mock_client(respond())
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.aclose()
    with pytest.raises(RuntimeError):  # closed clients refuse new requests
        await client.get_json(PROVIDER, "/x")


def test_max_response_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        UpstreamClient(max_response_bytes=0)


# -- loopback (real sockets, real clock) -------------------------------------------------------


async def test_loopback_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again and nothing listens on it.
    provider = ProviderConfig(
        id="closed", name="closed", categories=("MARKET_DATA",), base_url=f"http://127.0.0.1:{port}"
    )
    with trio.fail_after(5):
        async with UpstreamClient() as client:
            with pytest.raises(UpstreamError) as info:
                await client.get_json(provider, "/ping")
    assert client.attempts[-1].error_type == "transport_error"
    assert info.value.status is None


async def test_loopback_hang_is_bounded_by_timeout() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("binance", Fault.hang())
            provider = sim.provider("binance", timeout_seconds=0.3)
            start = trio.current_time()
            with pytest.raises(UpstreamError, match=r"timed out after 0\.3s"):
                await client.get_json(provider, "/ping")
            assert trio.current_time() - start < 2
            assert client.attempts[-1].error_type == "timeout"


async def test_loopback_429_and_non_json() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("coingecko")
            sim.inject("coingecko", Fault.rate_limit(retry_after=42, times=1))
            sim.inject("coingecko", Fault.malformed(times=1))
            with pytest.raises(UpstreamRateLimited) as info:
                await client.get_json(provider, "/ping")
            assert info.value.retry_after == 42
            with pytest.raises(UpstreamPayloadError):
                await client.get_json(provider, "/ping")
            assert await client.get_json(provider, "/ping") == {"gecko_says": "(V3) To the Moon!"}
            assert [a.error_type for a in client.attempts] == ["rate_limited", "malformed", None]


# -- request_json: auth injection and masking ----------------------------------------------------

SECRET = "s3cr3t-KEY-0123456789"


def keyed(kind: str, **auth: Any) -> ProviderConfig:
    base = "https://api.example.test/v1"
    if kind == "path":
        base = "https://api.example.test/{key}/v1"
    return replace(PROVIDER, base_url=base, auth=AuthSpec(kind=kind, env="TEST_KEY", **auth))


async def send_one(provider: ProviderConfig, key: str | None = SECRET, **kw: Any) -> httpx.Request:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": 1})

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        assert await client.request_json(provider, "/thing", key=key, **kw) == {"ok": 1}
        (attempt,) = client.attempts
        assert SECRET not in attempt.endpoint
    (request,) = seen
    return request


async def test_key_as_query_parameter() -> None:
    request = await send_one(keyed("query", name="apikey"), params={"a": "1"})
    assert request.url.params["apikey"] == SECRET
    assert request.url.params["a"] == "1"


async def test_key_as_header_with_prefix() -> None:
    request = await send_one(keyed("header", name="Authorization", prefix="Bearer "))
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(request.url)


async def test_key_as_path_segment() -> None:
    request = await send_one(keyed("path"))
    assert str(request.url) == f"https://api.example.test/{SECRET}/v1/thing"


async def test_optional_key_falls_back_to_the_default() -> None:
    provider = keyed("query", name="apiKey", required=False, default="freekey")
    request = await send_one(provider, key=None)
    assert request.url.params["apiKey"] == "freekey"
    bare = keyed("header", name="X-Key", required=False)
    request = await send_one(bare, key=None)
    assert "x-key" not in request.headers


@pytest.mark.parametrize(
    "provider",
    [
        keyed("query", name="apikey"),
        keyed("path"),
        replace(PROVIDER, enabled=False),
    ],
    ids=["missing-key", "missing-path-key", "disabled"],
)
async def test_unconfigured_provider_is_never_called(provider: ProviderConfig) -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.Response(200, json={})

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamUnconfigured) as info:
            await client.request_json(provider, "/thing")
        with pytest.raises(UpstreamUnconfigured):
            await client.get_json(provider, "/thing")
    assert sent == 0
    assert not client.attempts
    if provider.enabled:
        assert "TEST_KEY" in str(info.value)  # says which variable to set


@pytest.mark.parametrize(
    "provider",
    [
        keyed("query", name="apikey"),
        keyed("header", name="X-Key"),
        keyed("path"),
    ],
    ids=["query", "header", "path"],
)
async def test_key_is_masked_in_errors_and_attempts(provider: ProviderConfig) -> None:
    async def echoing(request: httpx.Request) -> httpx.Response:
        # A careless upstream quoting the whole request back, key included.
        return httpx.Response(403, text=f"bad key for {request.url} {dict(request.headers)}")

    async def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    for handler in (echoing, unreachable):
        async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
            with pytest.raises(UpstreamError) as info:
                await client.request_json(provider, f"/thing/{SECRET}", key=SECRET, retry=NO_RETRY)
        error = info.value
        assert SECRET not in str(error)
        assert SECRET not in repr(error.extensions())
        assert error.endpoint == "/thing/***"
        assert "***" in str(error)
        assert error.__cause__ is None  # httpx's own exception could quote the URL
        assert all(SECRET not in a.endpoint for a in client.attempts)


# -- request_json: retries ---------------------------------------------------------------------


class MaxJitter(random.Random):
    """Full jitter drawn at its ceiling, so backoff delays are predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


def scripted(*statuses: int, log: list[float], headers: dict[str, str] | None = None) -> Handler:
    """Answer with these statuses in turn (then 200), noting when each request arrived."""
    queue = list(statuses)

    async def handler(request: httpx.Request) -> httpx.Response:
        log.append(trio.current_time())
        status = queue.pop(0) if queue else 200
        if status == 200:
            return httpx.Response(200, json={"n": len(log)})
        return httpx.Response(status, content=b"{}", headers=headers)

    return handler


async def test_get_is_retried_twice_with_exponential_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[float] = []
    client = UpstreamClient(
        transport=httpx.MockTransport(scripted(500, 502, log=log)), rng=MaxJitter()
    )
    start = trio.current_time()
    assert await client.request_json(PROVIDER, "/x") == {"n": 3}
    assert [t - start for t in log] == pytest.approx([0.0, 0.25, 0.75])
    assert [a.error_type for a in client.attempts] == ["http_error", "http_error", None]
    await client.aclose()


async def test_at_most_two_retries(autojump_clock: trio.abc.Clock) -> None:
    log: list[float] = []
    client = UpstreamClient(transport=httpx.MockTransport(scripted(500, 500, 500, log=log)))
    with pytest.raises(UpstreamError) as info:
        await client.request_json(PROVIDER, "/x")
    assert info.value.status == 500
    assert len(log) == 3
    await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "expected_requests"),
    [
        ({"method": "POST", "json": {"id": 1}}, 1),
        ({"method": "POST", "json": {"id": 1}, "idempotent": True}, 3),
        ({"method": "GET", "idempotent": False}, 1),
        ({"method": "GET"}, 3),
        ({"method": "GET", "retry": NO_RETRY}, 1),
    ],
    ids=["post", "post-idempotent", "get-not-idempotent", "get", "get-no-retry"],
)
async def test_only_idempotent_requests_are_retried(
    kwargs: dict[str, Any], expected_requests: int, autojump_clock: trio.abc.Clock
) -> None:
    log: list[float] = []
    client = UpstreamClient(transport=httpx.MockTransport(scripted(503, 500, 500, log=log)))
    with pytest.raises(UpstreamError):
        await client.request_json(PROVIDER, "/x", **kwargs)
    assert len(log) == expected_requests
    await client.aclose()


async def test_post_sends_the_json_body() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jsonrpc": "2.0", "result": "0x1"})

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        result = await client.request_json(PROVIDER, "", method="post", json=body, idempotent=True)
    assert result["result"] == "0x1"
    assert seen[0].method == "POST"
    assert json.loads(seen[0].content) == body


@pytest.mark.parametrize(
    ("status", "body"), [(404, b"{}"), (400, b"{}"), (200, b"not json")], ids=["404", "400", "bad"]
)
async def test_client_errors_and_bad_bodies_are_not_retried(status: int, body: bytes) -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        return httpx.Response(status, content=body)

    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamError):
            await client.request_json(PROVIDER, "/x")
    assert sent == 1


async def test_retries_stay_within_three_timeouts(autojump_clock: trio.abc.Clock) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3600)
        return httpx.Response(200, json={})

    client = UpstreamClient(transport=httpx.MockTransport(hang), rng=MaxJitter())
    start = trio.current_time()
    with pytest.raises(UpstreamError, match="timed out"):
        await client.request_json(PROVIDER, "/x")  # timeout_seconds=5
    elapsed = trio.current_time() - start
    assert elapsed <= 3 * PROVIDER.timeout_seconds + 1e-6
    # 5 s + 0.25 s backoff + 5 s + 0.5 s backoff + what is left (4.25 s) of the 15 s budget.
    assert [a.error_type for a in client.attempts] == ["timeout"] * 3
    assert elapsed == pytest.approx(15.0)
    await client.aclose()


async def test_transport_errors_and_timeouts_are_retried(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        if calls == 2:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"ok": True})

    async with UpstreamClient(transport=httpx.MockTransport(flaky)) as client:
        assert await client.request_json(PROVIDER, "/x") == {"ok": True}
    assert [a.error_type for a in client.attempts] == ["transport_error", "timeout", None]


# -- request_json: Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_waited_then_retried_once(
    status: int, autojump_clock: trio.abc.Clock
) -> None:
    log: list[float] = []
    handler = scripted(status, log=log, headers={"Retry-After": "7"})
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        assert await client.request_json(PROVIDER, "/x") == {"n": 2}
    assert log[1] - log[0] >= 7.0
    assert log[1] - log[0] == pytest.approx(7.0)


async def test_a_second_rate_limit_is_raised(autojump_clock: trio.abc.Clock) -> None:
    log: list[float] = []
    handler = scripted(429, 429, log=log, headers={"Retry-After": "2"})
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamRateLimited) as info:
            await client.request_json(PROVIDER, "/x")
    assert info.value.retry_after == 2
    assert len(log) == 2


@pytest.mark.parametrize(
    "headers", [{"Retry-After": "31"}, {"Retry-After": "3600"}, None], ids=["31s", "1h", "none"]
)
async def test_long_or_missing_retry_after_raises_at_once(
    headers: dict[str, str] | None, autojump_clock: trio.abc.Clock
) -> None:
    log: list[float] = []
    handler = scripted(429, log=log, headers=headers)
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        start = trio.current_time()
        with pytest.raises(UpstreamRateLimited):
            await client.request_json(PROVIDER, "/x")
        assert trio.current_time() == start  # no waiting: a pool can fail over now
    assert len(log) == 1


async def test_retry_after_cap_is_configurable(autojump_clock: trio.abc.Clock) -> None:
    log: list[float] = []
    handler = scripted(429, log=log, headers={"Retry-After": "60"})
    policy = RetryPolicy(retry_after_cap=120)
    async with UpstreamClient(transport=httpx.MockTransport(handler), retry=policy) as client:
        assert await client.request_json(PROVIDER, "/x") == {"n": 2}
    assert log[1] - log[0] == pytest.approx(60.0)


async def test_non_idempotent_requests_are_not_retried_after_a_rate_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[float] = []
    handler = scripted(429, log=log, headers={"Retry-After": "1"})
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamRateLimited):
            await client.request_json(PROVIDER, "/x", method="POST", json={})
    assert len(log) == 1


# -- request_json: coalescing ------------------------------------------------------------------


async def test_identical_concurrent_requests_share_one_exchange(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        await trio.sleep(1)
        return httpx.Response(200, json={"url": str(request.url)})

    results: list[Any] = []
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:

        async def get(params: dict[str, str]) -> None:
            results.append(await client.request_json(PROVIDER, "/p", params=params))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(get, {"a": "1", "b": "2"})
            nursery.start_soon(get, {"b": "2", "a": "1"})  # same params, another order
            nursery.start_soon(get, {"a": "2"})  # a different request
        assert client.coalesced["testprov"] == 20
    assert len(sent) == 2
    assert len(results) == 22
    assert len(client.attempts) == 2


async def test_coalesced_callers_all_get_the_error() -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(0.05)
        return httpx.Response(404, text="nope")

    errors: list[BaseException] = []
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:

        async def get() -> None:
            try:
                await client.request_json(PROVIDER, "/p")
            except UpstreamError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(get)
    assert sent == 1
    assert len(errors) == 5
    assert all(isinstance(e, UpstreamError) and e.status == 404 for e in errors)


async def test_non_idempotent_requests_are_not_coalesced() -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(0.05)
        return httpx.Response(200, json={})

    async with (
        UpstreamClient(transport=httpx.MockTransport(handler)) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(3):
            nursery.start_soon(partial(client.request_json, PROVIDER, "/p", method="POST"))
    assert sent == 3


async def test_a_cancelled_leader_hands_over_to_a_follower(autojump_clock: trio.abc.Clock) -> None:
    sent = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        await trio.sleep(2)
        return httpx.Response(200, json={"n": sent})

    results: list[Any] = []
    async with UpstreamClient(transport=httpx.MockTransport(handler)) as client:

        async def leader() -> None:
            with trio.move_on_after(1):
                await client.request_json(PROVIDER, "/p")

        async def follower() -> None:
            results.append(await client.request_json(PROVIDER, "/p"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await trio.sleep(0.1)
            nursery.start_soon(follower)
            nursery.start_soon(follower)
    assert results == [{"n": 2}, {"n": 2}]  # one new exchange for both, nobody cancelled
    assert sent == 2


# -- request_json: rate limiter, accessors, hooks ----------------------------------------------


async def test_every_attempt_waits_for_rate_limit_budget(autojump_clock: trio.abc.Clock) -> None:
    log: list[float] = []
    provider = replace(PROVIDER, rate_limits=(RateLimitWindow(2, 10.0, "ten-seconds"),))
    thresholds: list[tuple[str, str, int, int]] = []
    handler = scripted(500, log=log)
    async with UpstreamClient(transport=httpx.MockTransport(handler), rng=MaxJitter()) as client:
        client.on_rate_threshold = lambda *args: thresholds.append(args)
        assert client.limiter("testprov") is None
        start = trio.current_time()
        await client.request_json(provider, "/a")  # 500, then a retry: both count
        await client.request_json(provider, "/b")  # waits for the window
        limiter = client.limiter("testprov")
        assert limiter is not None and limiter is client.limiter_for(provider)
        assert [u.used for u in limiter.usage()] == [2]
    assert [t - start for t in log] == pytest.approx([0.0, 0.25, 10.0])
    # A window of 2 requests is used up by design, never a rate_limit_80 alert (issue 13; the
    # crossing itself is tested in tests/upstream/test_ratelimit.py).
    assert thresholds == []


async def test_the_client_reports_a_window_crossing_80_percent() -> None:
    provider = replace(PROVIDER, rate_limits=(RateLimitWindow(5, 60.0, "minute"),))
    thresholds: list[tuple[str, str, int, int]] = []
    async with UpstreamClient(transport=httpx.MockTransport(respond(200, b"{}"))) as client:
        client.on_rate_threshold = lambda *args: thresholds.append(args)
        for _ in range(4):
            await client.request_json(provider, "/a")
    assert thresholds == [("testprov", "minute", 4, 5)]


async def test_limiters_and_breakers_can_be_created_up_front() -> None:
    provider = replace(PROVIDER, rate_limits=(RateLimitWindow(30, 60.0, "minute"),))
    async with UpstreamClient(providers=[provider]) as client:
        limiter = client.limiter("testprov")
        breaker = client.breaker("testprov")
        assert limiter is not None and limiter.windows == provider.rate_limits
        assert breaker is not None and breaker.spec == provider.breaker
        assert client.limiter("other") is None and client.breaker("other") is None


async def test_request_parsed_returns_the_parsed_value() -> None:
    async with UpstreamClient(transport=httpx.MockTransport(respond(200, b"[1,2,3]"))) as client:
        assert await client.request_parsed(PROVIDER, "/x", sum) == 6


# -- per-provider response caps and large bodies ------------------------------------------------

MIB = 1024 * 1024


def _strings(total_bytes: int) -> bytes:
    """A JSON array of 1 KB strings, about `total_bytes` long."""
    return json.dumps(["x" * 1000] * (total_bytes // 1004)).encode()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_a_providers_own_cap_admits_a_body_over_the_default_and_still_bounds_it(
    declared: bool,
) -> None:
    big = replace(PROVIDER, id="big", max_response_bytes=8 * MIB)

    def handler_for(body: bytes) -> Handler:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        async def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body if declared else chunks())

        return handler

    six = _strings(6 * MIB)
    assert DEFAULT_MAX_RESPONSE_BYTES < len(six) < 8 * MIB
    async with mock_client(handler_for(six)) as client:
        assert len(await client.get_json(big, "/protocols")) == len(six) // 1004
        with pytest.raises(UpstreamPayloadError, match=f"{DEFAULT_MAX_RESPONSE_BYTES}-byte limit"):
            await client.get_json(PROVIDER, "/protocols")  # no cap of its own: the default
    nine = _strings(9 * MIB)
    async with mock_client(handler_for(nine)) as client:
        with pytest.raises(UpstreamPayloadError, match=f"exceeds the {8 * MIB}-byte limit"):
            await client.get_json(big, "/protocols")
        assert client.attempts[-1].error_type == "malformed"


async def test_a_large_body_is_decoded_and_parsed_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    loop_thread = threading.get_ident()
    decoded_in: list[int] = []
    real = decoding_module.decode_in_pieces

    def spy(body: bytes) -> Any:
        decoded_in.append(threading.get_ident())
        return real(body)

    monkeypatch.setattr(decoding_module, "decode_in_pieces", spy)
    parsed_in: list[int] = []

    def parse(payload: Any) -> int:
        parsed_in.append(threading.get_ident())
        return len(payload)

    large = _strings(decoding_module.LARGE_BODY_BYTES + 10_000)
    async with mock_client(respond(200, large)) as client:
        assert await client.request_parsed(PROVIDER, "/large", parse) == len(large) // 1004
        assert decoded_in and parsed_in and loop_thread not in decoded_in + parsed_in
        decoded_in.clear()
        parsed_in.clear()
    async with mock_client(respond(200, b'["small"]')) as client:
        assert await client.request_parsed(PROVIDER, "/small", parse) == 1
        assert decoded_in == [] and parsed_in == [loop_thread]  # small bodies stay inline
    broken = large[:-1] + b",]"
    async with mock_client(respond(200, broken)) as client:
        with pytest.raises(UpstreamPayloadError, match="not valid JSON"):
            await client.get_json(PROVIDER, "/broken")


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b" [ ]\n",
        b'[1, {"a": [1, 2]}, "x" , null, true, 1.5e3]',
        b'{"a": [1, 2]}',
        b'"just a string"',
        b"[[1], [2]]",
        b"[NaN, Infinity]",
        "[1, 2]".encode("utf-8-sig"),
        '["é"]'.encode("utf-16"),
    ],
)
def test_decoding_in_pieces_gives_what_json_loads_gives(body: bytes) -> None:
    decoded = decoding_module.decode_in_pieces(body)
    assert json.dumps(decoded) == json.dumps(json.loads(body))


@pytest.mark.parametrize(
    "body", [b"[1,]", b"[1 2]", b"[1", b"[1] x", b"", b"[", b"\xff[]", b"[,1]", b"[1,\n]"]
)
def test_decoding_in_pieces_refuses_what_json_loads_refuses(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        decoding_module.decode_in_pieces(body)


async def test_a_realistic_defillama_protocols_list_fits_the_shipped_cap() -> None:
    """About 6,000 protocols shaped like DefiLlama's (over 5 MiB), through the shipped entry."""
    body = synthetic_protocols_body(6_000)
    assert len(body) > DEFAULT_MAX_RESPONSE_BYTES
    shipped = shipped_provider("defillama")
    assert shipped.max_response_bytes == 32 * MIB
    defillama = replace(shipped, base_url="https://api.llama.test")
    async with mock_client(respond(200, body)) as client:
        with trio.fail_after(10):
            parsed = await fetch_protocols(client, defillama)
    assert len(parsed) == 6_000 and parsed[5_999].slug == "protocol-5999"
