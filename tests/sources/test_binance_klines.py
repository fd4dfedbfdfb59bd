"""Binance klines (candles on demand): the parser against fixtures, the paging fetcher against
the simulator. The Binance price collector has its own tests in test_sources_binance.py."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from gateway.errors import UpstreamPayloadError, UpstreamRateLimited
from gateway.models import utc_now
from gateway.sources.binance import KLINES_LIMIT, fetch_candles, klines_params, parse_klines
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, run_simulator

NOW = datetime.fromtimestamp(1711356200, UTC)  # inside the last fixture kline


def parse(payload: Any) -> Any:
    return parse_klines(payload, "BTC", 60, NOW)


def test_parse_klines_fixture() -> None:
    candles = parse(load_fixture("binance_klines"))
    assert [int(c.open_time.timestamp()) for c in candles] == [1711356060, 1711356120, 1711356180]
    first = candles[0]
    assert (first.open, first.high, first.low, first.close) == (67150.0, 67190.1, 67140.2, 67171.9)
    assert first.volume == 829412.551234  # the quote (USDT) volume, taken as USD
    assert first.provider == "binance" and first.interval_seconds == 60
    assert [c.complete for c in candles] == [True, True, False]
    assert parse([]) == []


ROW = load_fixture("binance_klines")[0]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("binance_error_invalid_symbol"), id="error-object"),
        pytest.param({"klines": []}, id="object"),
        pytest.param([ROW[:7]], id="row-short"),
        pytest.param([{"openTime": 1}], id="row-object"),
        pytest.param([["1711356060000", *ROW[1:]]], id="time-string"),
        pytest.param([[1711356030000, *ROW[1:]]], id="off-grid"),
        pytest.param([[ROW[0], "abc", *ROW[2:]]], id="price-text"),
        pytest.param([[ROW[0], "0", *ROW[2:]]], id="price-zero"),
        pytest.param([[*ROW[:3], "67200.0", *ROW[4:]]], id="low-above-high"),
        pytest.param([[*ROW[:7], "-1", *ROW[8:]]], id="quote-volume-negative"),
    ],
)
def test_bad_klines_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.endpoint == "/klines"


def test_klines_params() -> None:
    start = datetime(2024, 3, 25, 8, 0, tzinfo=UTC)
    assert klines_params("BTCUSDT", 300, start, start + timedelta(minutes=31)) == {
        "symbol": "BTCUSDT",
        "interval": "5m",
        "startTime": "1711353600000",
        "endTime": str(1711353600000 + 31 * 60_000 - 1),
        "limit": "7",  # 6 whole intervals and the one that starts before `end`
    }
    # An interval that opened a fraction of a second before `end` is still asked for.
    fractional = klines_params("BTCUSDT", 60, start, start + timedelta(seconds=60.5))
    assert (fractional["endTime"], fractional["limit"]) == (str(1711353600000 + 60_499), "2")


async def test_fetch_candles_pages_through_long_windows() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            now = utc_now()
            start = now - timedelta(minutes=2500)
            candles = await fetch_candles(client, sim.provider("binance"), "BTC", 60, start, now)
            assert 2500 <= len(candles) <= 2501
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(candles)}
            assert steps == {timedelta(minutes=1)}
            assert not candles[-1].complete and candles[-2].complete
            pages = [r[2] for r in sim.requests if r[1] == "/klines"]
            assert len(pages) == 3
            assert all(int(p["limit"]) <= KLINES_LIMIT and p["interval"] == "1m" for p in pages)
            assert int(pages[1]["startTime"]) == int(pages[0]["endTime"]) + 1  # contiguous


async def test_fetch_candles_refusals_and_a_fault() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("binance"), utc_now()
            hour = timedelta(hours=1)
            assert await fetch_candles(client, provider, "MATIC", 60, now - hour, now) == []
            with pytest.raises(ValueError, match="not 604800"):
                await fetch_candles(client, provider, "BTC", 604800, now - 30 * hour, now)
            with pytest.raises(ValueError, match="timezone-aware"):
                await fetch_candles(client, provider, "BTC", 60, datetime(2024, 1, 1), now)
            assert sim.hits["binance"] == 0
            sim.inject("binance", Fault.rate_limit(retry_after=60, times=1))
            with pytest.raises(UpstreamRateLimited):
                await fetch_candles(client, provider, "BTC", 3600, now - 24 * hour, now)
            assert len(
                await fetch_candles(client, provider, "BTC", 3600, now - 24 * hour, now)
            ) in (
                24,
                25,
            )


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            url = sim.base_url("binance") + "/klines"
            rows = (await http.get(url, params={"symbol": "ETHUSDT", "interval": "1h"})).json()
            assert len(rows) == 500  # the documented default limit
            assert [type(v) for v in rows[0]] == [
                type(v) for v in load_fixture("binance_klines")[0]
            ]
            for bad in (
                {"symbol": "MATICUSDT", "interval": "1m"},
                {"symbol": "BTCUSDT", "interval": "7m"},
                {"symbol": "BTCUSDT", "interval": "1m", "limit": "1001"},
            ):
                response = await http.get(url, params=bad)
                assert response.status_code == 400 and "code" in response.json()
