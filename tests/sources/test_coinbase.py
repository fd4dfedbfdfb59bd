"""Coinbase Exchange source: ticker and candle parsers against fixtures; the per-product
collector and the paging candle fetcher against the simulator."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import PriceTick, utc_now
from gateway.sources.base import CollectorContext
from gateway.sources.coinbase import (
    CoinbaseCollector,
    candles_params,
    fetch_candles,
    parse_candles,
    parse_ticker,
)
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, run_simulator

DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
ON_COINBASE = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE")  # no BNB-USD product


def ticker(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = dict(load_fixture("coinbase_ticker"))
    payload.update(fields)
    return {k: v for k, v in payload.items() if v is not ...}


# -- ticker parser -----------------------------------------------------------------------------


def test_parse_ticker_fixture() -> None:
    tick = parse_ticker(load_fixture("coinbase_ticker"), "BTC", "BTC-USD")
    assert tick == PriceTick(
        symbol="BTC",
        usd=67187.99,
        provider="coinbase",
        observed_at=datetime(2024, 3, 25, 8, 44, 59, 512345, tzinfo=UTC),
    )
    # Only base-asset volume is reported: no USD volume is made up from it.
    assert tick.volume_24h_usd is None and tick.change_24h_pct is None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"message": "NotFound"}, id="error-message"),
        pytest.param(None, id="null"),
        pytest.param([load_fixture("coinbase_ticker")], id="wrapped-in-list"),
        pytest.param(load_fixture("coinbase_time"), id="time-answer"),
        pytest.param(ticker(price=...), id="price-missing"),
        pytest.param(ticker(price="abc"), id="price-text"),
        pytest.param(ticker(price="0"), id="price-zero"),
        pytest.param(ticker(price="-1.5"), id="price-negative"),
        pytest.param(ticker(time=...), id="time-missing"),
        pytest.param(ticker(time="2024-03-25T08:44:59"), id="time-without-offset"),
        pytest.param(ticker(time=1711356299), id="time-number"),
    ],
)
def test_bad_tickers_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse_ticker(payload, "BTC", "BTC-USD")
    assert info.value.provider == "coinbase"
    assert info.value.endpoint == "/products/BTC-USD/ticker"


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any, client: UpstreamClient, symbols: tuple[str, ...] = DEFAULT_SYMBOLS
) -> CoinbaseCollector:
    return CoinbaseCollector(CollectorContext(provider, client, symbols, _ignore))


async def test_poll_asks_each_product_once() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coinbase"), client)
            ticks = await collector.poll()
            assert [t.symbol for t in ticks] == list(ON_COINBASE)  # the configured order
            assert ticks[0].usd == sim.price("BTC", "coinbase")
            assert abs((ticks[0].observed_at - datetime.now(UTC)).total_seconds()) < 5
            paths = sorted(path for _, path, _, _ in sim.requests)
            assert paths == sorted(f"/products/{s}-USD/ticker" for s in ON_COINBASE)

            sim.set_price("SOL", 201.5, provider="coinbase")
            sol = next(t for t in await collector.poll() if t.symbol == "SOL")
            assert sol.usd == 201.5
            assert await make_collector(sim.provider("coinbase"), client, ("BNB",)).poll() == []
            assert sim.hits["coinbase"] == 2 * len(ON_COINBASE)


async def test_one_failing_product_does_not_hide_the_others() -> None:
    with trio.fail_after(10), structlog.testing.capture_logs() as logs:
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coinbase", Fault.status(500, times=1))
            ticks = await make_collector(sim.provider("coinbase"), client).poll()
            assert len(ticks) == len(ON_COINBASE) - 1
    failures = [e for e in logs if e["event"] == "collector.product_failed"]
    assert len(failures) == 1 and failures[0]["provider"] == "coinbase"
    assert failures[0]["endpoint"].startswith("/products/")


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.status(503), UpstreamError),
        (Fault.rate_limit(retry_after=45), UpstreamRateLimited),
        (Fault.wrong_shape(), UpstreamPayloadError),
    ],
    ids=["503", "429", "wrong-shape"],
)
async def test_every_product_failing_raises(fault: Fault, error_type: type[Exception]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("coinbase", fault)  # until cleared: every product fails
            collector = make_collector(sim.provider("coinbase"), client, ("BTC", "ETH"))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "coinbase"  # type: ignore[attr-defined]
            if isinstance(info.value, UpstreamRateLimited):
                assert info.value.retry_after == 45
            sim.clear_faults()
            assert len(await collector.poll()) == 2


# -- candles -----------------------------------------------------------------------------------

NOW = datetime.fromtimestamp(1711356290, UTC)


def parse(payload: Any) -> Any:
    return parse_candles(payload, "BTC", "BTC-USD", 60, NOW)


def test_parse_candles_fixture() -> None:
    candles = parse(load_fixture("coinbase_candles"))  # newest first upstream
    assert [int(c.open_time.timestamp()) for c in candles] == [
        1711356060,
        1711356120,
        1711356180,
        1711356240,
    ]
    first = candles[0]  # [time, low, high, open, close, volume]
    assert (first.open, first.high, first.low, first.close) == (67150.0, 67190.1, 67140.2, 67171.9)
    assert first.volume is None  # base-asset volume only
    assert [c.complete for c in candles] == [True, True, True, False]
    assert parse([]) == []


ROW = [1711356060, 67140.2, 67190.1, 67150.0, 67171.9, 3.2154]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"message": "Unsupported granularity"}, id="error-message"),
        pytest.param({"candles": []}, id="object"),
        pytest.param([ROW[:5]], id="row-short"),
        pytest.param([{"time": 1}], id="row-object"),
        pytest.param([[ROW[0], "67140.2", *ROW[2:]]], id="price-string"),
        pytest.param([[ROW[0], 67200.0, *ROW[2:]]], id="low-above-high"),
        pytest.param([[1711356030, *ROW[1:]]], id="off-grid"),
        pytest.param([[*ROW[:5], -1]], id="volume-negative"),
    ],
)
def test_bad_candles_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse(payload)


async def test_fetch_candles_pages_without_gaps() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            now = utc_now()
            start = now - timedelta(minutes=700)
            candles = await fetch_candles(client, sim.provider("coinbase"), "eth", 60, start, now)
            assert 700 <= len(candles) <= 701
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(candles)}
            assert steps == {timedelta(minutes=1)}
            assert not candles[-1].complete and all(c.complete for c in candles[:-1])
            requests = [r for r in sim.requests if r[1] == "/products/ETH-USD/candles"]
            assert len(requests) == 3  # at most 300 rows a request
            for _, _, params, _ in requests:
                assert params["granularity"] == "60"
                span = datetime.fromisoformat(params["end"]) - datetime.fromisoformat(
                    params["start"]
                )
                assert span < timedelta(minutes=300)


async def test_fetch_candles_refusals_and_a_fault() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("coinbase"), utc_now()
            day = timedelta(days=1)
            assert await fetch_candles(client, provider, "BNB", 3600, now - day, now) == []
            with pytest.raises(ValueError, match="not 120"):
                await fetch_candles(client, provider, "BTC", 120, now - day, now)
            assert sim.hits["coinbase"] == 0
            sim.inject("coinbase", Fault.rate_limit(retry_after=120, times=1))
            with pytest.raises(UpstreamRateLimited):
                await fetch_candles(client, provider, "BTC", 3600, now - day, now)
            assert len(await fetch_candles(client, provider, "BTC", 3600, now - day, now)) in (
                24,
                25,
            )


def test_candles_params() -> None:
    start = datetime(2024, 3, 25, 8, 0, tzinfo=UTC)
    assert candles_params(300, start, start + timedelta(hours=1)) == {
        "granularity": "300",
        "start": "2024-03-25T08:00:00Z",
        "end": "2024-03-25T09:00:00Z",
    }


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            base = sim.base_url("coinbase")
            ticker = (await http.get(base + "/products/BTC-USD/ticker")).json()
            expected = load_fixture("coinbase_ticker")
            assert list(ticker) == list(expected)
            assert all(type(ticker[k]) is type(expected[k]) for k in ticker)
            missing = await http.get(base + "/products/BNB-USD/ticker")
            assert missing.status_code == 404 and missing.json() == {"message": "NotFound"}
            rows = (await http.get(base + "/products/BTC-USD/candles")).json()
            assert len(rows) == 300 and rows[0][0] > rows[-1][0]  # newest first
            assert [type(v) for v in rows[0]] == [
                type(v) for v in load_fixture("coinbase_candles")[0]
            ]
            too_many = await http.get(
                base + "/products/BTC-USD/candles",
                params={"granularity": "60", "start": "1711300000", "end": "1711356000"},
            )
            assert too_many.status_code == 400
            assert (await http.get(base + "/time")).json().keys() == {"iso", "epoch"}
