"""Resilience end to end, against the loopback simulator (real sockets, real clock).

Rate limits counted where they matter (requests arriving at the simulator), Retry-After
measured, coalescing, key injection, unconfigured providers, pool failover timing and payload
errors opening circuits. Every test is under a time limit and takes at most a few seconds.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from gateway.config import AuthSpec, BreakerSpec, ProviderConfig, RateLimitWindow
from gateway.errors import CircuitOpenError, UpstreamPayloadError, UpstreamUnconfigured
from gateway.models import PriceTick, utc_now
from gateway.sources.coingecko import ENDPOINT, parse_simple_price, simple_price_params
from gateway.upstream import Attempt, Pool, RotationEvent, RotationStrategy, UpstreamClient
from gateway.upstream.breaker import BreakerState
from tests.simulator.rest import Fault, Simulator, run_simulator


class StampingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, noting when each request was handed to it and answered."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        self.answered: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(trio.current_time())
        response = await super().handle_async_request(request)
        self.answered.append(trio.current_time())
        return response


@asynccontextmanager
async def arrivals(sim: Simulator, provider_id: str, expected: int) -> AsyncIterator[list[float]]:
    """Stamp (trio clock) each request as the simulator receives it, up to `expected`."""
    stamps: list[float] = []

    async def watch() -> None:
        for n in range(1, expected + 1):
            await sim.wait_for_hits(provider_id, n)
            stamps.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        yield stamps
        nursery.cancel_scope.cancel()


def most_in_any_window(times: list[float], seconds: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times)), default=0)


# -- rate limits, counted at the simulator -----------------------------------------------------


async def test_a_burst_of_200_never_exceeds_any_window_at_the_simulator() -> None:
    """200 concurrent distinct requests through the client, limited to 5 per 0.1 s and 50 per
    second: counted where they are granted (exactly) and where they arrive (the simulator).

    Arrivals lag their grants by a variable amount (connections, one busy event loop serving
    both ends). If every lag lies in [lo, hi], any `seconds - (hi - lo)` span of arrivals holds
    only requests granted within one `seconds` span, so the simulator's hits are counted in
    windows shortened by the measured spread (typically a few tens of milliseconds; on a badly
    overloaded machine it can exceed the 0.1 s window, which is then checked at the limiter
    only).
    """
    windows = (RateLimitWindow(5, 0.1, "tenth-second"), RateLimitWindow(50, 1.0, "second"))
    granted: dict[int, float] = {}
    request_of_task: dict[trio.lowlevel.Task, int] = {}
    with trio.fail_after(15):
        async with run_simulator() as sim, UpstreamClient() as client:
            # A generous timeout: on a busy machine a slow answer must not turn into a retry.
            provider = sim.provider("coingecko", rate_limits=windows, timeout_seconds=10)
            limiter = client.limiter_for(provider)
            acquire = limiter.acquire

            async def noting_acquire() -> float:
                at = await acquire()  # the exact time the limiter counted
                granted[request_of_task[trio.lowlevel.current_task()]] = at
                return at

            limiter.acquire = noting_acquire  # type: ignore[method-assign]

            async def get(n: int) -> None:
                request_of_task[trio.lowlevel.current_task()] = n
                await client.request_json(provider, "/ping", params={"n": str(n)})

            async with arrivals(sim, "coingecko", 200) as stamps:
                async with trio.open_nursery() as nursery:
                    for n in range(200):  # distinct requests: nothing is coalesced
                        nursery.start_soon(get, n)
                await sim.wait_for_hits("coingecko", 200)
    assert sim.hits["coingecko"] == 200
    assert client.counters[("coingecko", "ok")] == 200
    grant_times = sorted(granted.values())
    arrival_of = {int(query["n"]): stamps[i] for i, (_, _, query, _) in enumerate(sim.requests)}
    lags = [arrival_of[n] - granted[n] for n in range(200)]
    spread = max(lags) - min(lags)
    assert min(lags) >= 0  # nothing arrived before it was granted
    for window in windows:
        assert most_in_any_window(grant_times, window.seconds) <= window.limit
        if window.seconds > spread:
            assert most_in_any_window(stamps, window.seconds - spread) <= window.limit
    # It waited rather than failed: 200 requests at 50/s need a little over 3 s.
    assert grant_times[-1] - grant_times[0] >= 3.0


# -- Retry-After ---------------------------------------------------------------------------------


async def test_retry_after_is_respected_before_the_second_attempt() -> None:
    transport = StampingTransport()
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient(transport=transport) as client:
            sim.inject("coingecko", Fault.rate_limit(retry_after=1, times=1))
            provider = sim.provider("coingecko")
            async with arrivals(sim, "coingecko", 2) as stamps:
                result = await client.request_json(provider, "/ping")
    assert result == {"gecko_says": "(V3) To the Moon!"}
    assert sim.hits["coingecko"] == 2
    assert [a.error_type for a in client.attempts] == ["rate_limited", None]
    # Measured at the client: the second request left a full second after the 429 arrived.
    assert transport.sent[1] - transport.answered[0] >= 1.0
    # And at the simulator (stamps can be a scheduling tick late; the gap includes a round trip).
    assert stamps[1] - stamps[0] >= 0.99


async def test_a_long_retry_after_is_not_waited_for() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coingecko", Fault.rate_limit(retry_after=120, times=1))
            start = trio.current_time()
            with pytest.raises(Exception, match="rate limited") as info:
                await client.request_json(sim.provider("coingecko"), "/ping")
            assert trio.current_time() - start < 1
    assert getattr(info.value, "retry_after", None) == 120
    assert sim.hits["coingecko"] == 1


# -- coalescing, keys, unconfigured providers ----------------------------------------------------


async def test_twenty_identical_concurrent_gets_make_one_upstream_request() -> None:
    results: list[Any] = []
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coingecko", Fault.latency(0.2, times=1))
            provider = sim.provider("coingecko")
            params = simple_price_params(["bitcoin", "ethereum"])

            async def get() -> None:
                results.append(await client.request_json(provider, ENDPOINT, params=params))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(get)
    assert sim.hits["coingecko"] == 1
    assert len(results) == 20
    assert all(r == results[0] for r in results) and "bitcoin" in results[0]
    assert client.coalesced["coingecko"] == 19


@pytest.mark.parametrize(
    ("auth", "where"),
    [
        (AuthSpec(kind="query", name="x_cg_pro_api_key", env="CG_KEY"), "query"),
        (AuthSpec(kind="header", name="X-Cg-Demo-Api-Key", env="CG_KEY"), "header"),
        (AuthSpec(kind="header", name="Authorization", prefix="Bearer ", env="CG_KEY"), "header"),
    ],
)
async def test_keys_reach_the_simulator_but_not_the_records(auth: AuthSpec, where: str) -> None:
    key = "CG-abcdef0123456789"
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("coingecko", auth=auth)
            await client.request_json(provider, "/ping", key=key)
            sim.inject("coingecko", Fault.status(500))
            with pytest.raises(Exception) as info:
                await client.request_json(provider, "/ping", key=key)
    (_, path, query, headers) = sim.requests[0]
    assert path == "/ping"
    if where == "query":
        assert query[auth.name or ""] == key
    else:
        assert headers[(auth.name or "").lower()] == auth.prefix + key
    assert key not in str(info.value)
    assert all(key not in a.endpoint for a in client.attempts)


async def test_unconfigured_provider_is_never_called() -> None:
    needs_key = AuthSpec(kind="query", name="x_cg_pro_api_key", env="CG_KEY")
    keys: dict[str, str] = {}
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            coingecko = sim.provider("coingecko", auth=needs_key, priority=1)
            binance = sim.provider("binance", priority=2)
            pool = Pool(
                "prices",
                "Prices",
                "MARKET_DATA",
                RotationStrategy.PRIORITY,
                [coingecko, binance],
                guards=client,
                is_configured=lambda p: not p.requires_key or p.id in keys,
            )
            for _ in range(3):
                assert await pool.call(lambda p: client.request_json(p, "/ping")) == {}
            # Even called directly, the client refuses to send it.
            with pytest.raises(UpstreamUnconfigured, match="CG_KEY"):
                await client.request_json(coingecko, "/ping")
    assert sim.hits["coingecko"] == 0
    assert sim.hits["binance"] == 3


# -- pool failover -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.hang(), Fault.status(500)], ids=["hang", "500"])
async def test_pool_fails_over_within_a_second_of_the_primary_failing(fault: Fault) -> None:
    events: list[RotationEvent] = []
    primary_attempts: list[float] = []

    def on_attempt(attempt: Attempt) -> None:
        if attempt.provider == "coingecko":
            primary_attempts.append(trio.current_time())

    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            client.on_attempt = on_attempt
            primary = sim.provider("coingecko", timeout_seconds=0.4)
            secondary = sim.provider("binance", priority=2)
            pool = Pool(
                "prices",
                "Prices",
                "MARKET_DATA",
                RotationStrategy.PRIORITY,
                [primary, secondary],
                guards=client,
                on_rotation=events.append,
            )

            async def ping(p: ProviderConfig) -> Any:
                return await client.request_json(p, "/ping")

            assert "gecko_says" in await pool.call(ping)
            sim.inject("coingecko", fault)
            start = trio.current_time()
            assert await pool.call(ping) == {}  # binance's answer
            done = trio.current_time()
    assert done - primary_attempts[-1] < 1.0  # failover, once the primary had failed
    assert done - start < 3 * 0.4 + 1.0  # the primary's retries are bounded too
    assert sim.hits["binance"] == 1
    assert [(e.from_provider, e.to_provider, e.reason) for e in events] == [
        ("coingecko", "binance", "failure")
    ]


# -- payload errors open circuits ----------------------------------------------------------------


def parse_prices(payload: Any) -> list[PriceTick]:
    return parse_simple_price(payload, utc_now(), provider="coingecko")


async def test_malformed_and_wrong_shape_bodies_open_the_circuit() -> None:
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            client.on_breaker_change = lambda *change: changes.append(change)
            provider = sim.provider(
                "coingecko", breaker=BreakerSpec(failure_threshold=3, cooldown_seconds=0.3)
            )
            params = simple_price_params(["bitcoin"])
            sim.inject("coingecko", Fault.malformed(times=1))
            sim.inject("coingecko", Fault.wrong_shape(times=1))
            sim.inject("coingecko", Fault.wrong_shape({"bitcoin": {"usd": -3}}, times=1))
            for _ in range(2):
                with pytest.raises(UpstreamPayloadError):
                    await client.request_parsed(provider, ENDPOINT, parse_prices, params=params)
            # The collectors' way: get_json, parse, report.
            payload = await client.get_json(provider, ENDPOINT, params)
            with pytest.raises(UpstreamPayloadError) as info:
                parse_prices(payload)
            client.report_payload_error(provider, info.value)
            assert changes == [("coingecko", BreakerState.CLOSED, BreakerState.OPEN)]
            with pytest.raises(CircuitOpenError):
                await client.request_parsed(provider, ENDPOINT, parse_prices, params=params)
            assert sim.hits["coingecko"] == 3  # refused without a request
            await trio.sleep(0.3)  # the probe succeeds and closes the circuit
            ticks = await client.request_parsed(provider, ENDPOINT, parse_prices, params=params)
            assert [t.symbol for t in ticks] == ["BTC"]
    assert changes[-2:] == [
        ("coingecko", BreakerState.OPEN, BreakerState.HALF_OPEN),
        ("coingecko", BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert sim.hits["coingecko"] == 4
