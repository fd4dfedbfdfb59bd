"""UpstreamClient: status mapping, Retry-After, deadlines, size cap, JSON decoding, records.

Most tests use httpx.MockTransport (no network) and `autojump_clock` where time matters; the
tests marked "loopback" talk to a real socket on 127.0.0.1 under the real clock.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trio

import gateway.upstream as upstream_pkg
from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.upstream import (
    DEFAULT_MAX_RESPONSE_BYTES,
    OUTCOMES,
    Attempt,
    UpstreamClient,
    parse_retry_after,
)
from gateway.upstream import client as client_module
from tests.upstream.simulator import Fault, run_simulator

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
