"""CoinGecko market data on demand: trending, global overview and OHLC parsers against fixtures,
the fetch functions against the simulator."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.config import load_providers
from gateway.errors import UpstreamPayloadError, UpstreamRateLimited
from gateway.market_models import MarketOverview, TrendingCoin
from gateway.models import utc_now
from gateway.sources.coingecko_market import (
    fetch_candles,
    fetch_global,
    fetch_trending,
    ohlc_days,
    parse_global,
    parse_ohlc,
    parse_trending,
)
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, run_simulator

REPO = Path(__file__).resolve().parents[2]
# The shipped entry's `auth`, an optional demo-key header (the simulator's entry has none).
SHIPPED_AUTH = next(
    p.auth for p in load_providers(REPO / "providers.toml").providers if p.id == "coingecko"
)


# -- trending ----------------------------------------------------------------------------------


def test_parse_trending_fixture() -> None:
    coins = parse_trending(load_fixture("coingecko_trending"))
    assert coins == [
        TrendingCoin(1, "PEPE", "Pepe", "pepe", 32, "PEPE"),
        TrendingCoin(2, "BRETT", "Brett", "brett-based", None, None),  # not in the asset table
        TrendingCoin(3, "SOL", "Solana", "solana", 5, "SOL"),
    ]
    assert parse_trending({"coins": []}) == []


def trending_item(**item: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coingecko_trending"))
    payload["coins"][0]["item"].update(item)
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coingecko_error_rate_limit"), id="error-envelope"),
        pytest.param([], id="array"),
        pytest.param({"nfts": []}, id="no-coins"),
        pytest.param({"coins": [{"id": "pepe"}]}, id="no-item"),
        pytest.param(trending_item(id=None), id="no-id"),
        pytest.param(trending_item(symbol=""), id="empty-symbol"),
        pytest.param(trending_item(name=7), id="name-number"),
    ],
)
def test_bad_trending_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse_trending(payload)
    assert info.value.endpoint == "/search/trending"


# -- global ------------------------------------------------------------------------------------


def test_parse_global_fixture() -> None:
    assert parse_global(load_fixture("coingecko_global")) == MarketOverview(
        total_market_cap_usd=2642002813452.72,
        total_volume_24h_usd=92181230457.12,
        btc_dominance_pct=50.0213,
        market_cap_change_24h_pct=1.7233,
        active_cryptocurrencies=13690,
        updated_at=datetime(2024, 3, 25, 8, 40, 13, tzinfo=UTC),
        provider="coingecko",
    )


def global_data(**fields: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coingecko_global"))
    payload["data"].update(fields)
    return payload


def test_global_optional_fields() -> None:
    overview = parse_global(
        global_data(market_cap_change_percentage_24h_usd=None, active_cryptocurrencies=None)
    )
    assert overview.market_cap_change_24h_pct is None and overview.active_cryptocurrencies is None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coingecko_error_rate_limit"), id="error-envelope"),
        pytest.param({"status": "ok"}, id="no-data"),
        pytest.param(global_data(total_market_cap={"eur": 1.0}), id="no-usd-cap"),
        pytest.param(global_data(total_volume={"usd": "9e10"}), id="volume-string"),
        pytest.param(global_data(total_market_cap={"usd": 0}), id="cap-zero"),
        pytest.param(global_data(market_cap_percentage={"eth": 15.0}), id="no-btc-share"),
        pytest.param(global_data(market_cap_percentage={"btc": 150.0}), id="btc-over-100"),
        pytest.param(global_data(updated_at=None), id="no-updated-at"),
    ],
)
def test_bad_global_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_global(payload)


# -- OHLC --------------------------------------------------------------------------------------

NOW = datetime.fromtimestamp(1711355500, UTC)


def parse(payload: Any, interval: int = 1800) -> Any:
    return parse_ohlc(payload, "BTC", "bitcoin", interval, NOW)


def test_parse_ohlc_fixture_moves_close_times_to_open_times() -> None:
    candles = parse(load_fixture("coingecko_ohlc"))
    assert [int(c.open_time.timestamp()) for c in candles] == [
        1711348200,
        1711350000,
        1711351800,
        1711353600,
    ]
    last = candles[-1]  # stamped 1711355400: the candle that closed then
    assert (last.open, last.high, last.low, last.close) == (67150.0, 67230.5, 67100.3, 67187.3)
    assert last.volume is None and last.complete
    # A row stamped "now" (off the 30-minute grid) is skipped, not moved onto it.
    assert len(parse([*load_fixture("coingecko_ohlc"), [1711355500000, 1.0, 1.0, 1.0, 1.0]])) == 4


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"error": "coin not found"}, id="error"),
        pytest.param({"prices": []}, id="market-chart-shape"),
        pytest.param([[1711350000000, 1.0, 2.0, 0.5]], id="row-short"),
        pytest.param([[1711350000000, "1.0", 2.0, 0.5, 1.5]], id="price-string"),
        pytest.param([[1711350000000, 1.0, 0.9, 0.5, 1.5]], id="high-below-close"),
        pytest.param([["t", 1.0, 2.0, 0.5, 1.5]], id="time-text"),
    ],
)
def test_bad_ohlc_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse(payload)


def test_ohlc_days_picks_the_smallest_documented_span() -> None:
    now = datetime(2024, 3, 25, tzinfo=UTC)
    assert ohlc_days(1800, now - timedelta(hours=3), now) == 1
    assert ohlc_days(1800, now - timedelta(days=5), now) == 1  # 30-minute candles: 1 day only
    assert ohlc_days(14400, now - timedelta(days=3), now) == 7
    assert ohlc_days(14400, now - timedelta(days=20), now) == 30
    assert ohlc_days(14400, now - timedelta(days=200), now) == 30


async def test_fetchers_against_simulator() -> None:
    """Each fetch sends the key it is given in the header the shipped entry's `auth` names."""
    key = "CG-market-key"
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("coingecko", auth=SHIPPED_AUTH)
            trending = await fetch_trending(client, provider, key=key)
            assert next(c.symbol for c in trending) == "PEPE"
            overview = await fetch_global(client, provider, key=key)
            assert overview.btc_dominance_pct == 50.0213
            now = utc_now()
            candles = await fetch_candles(
                client, provider, "eth", 14400, now - timedelta(days=5), now, key=key
            )
            assert 30 <= len(candles) <= 31
            assert all(c.interval_seconds == 14400 and c.symbol == "ETH" for c in candles)
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(candles)}
            assert steps == {timedelta(hours=4)}
            _, path, params, _headers = sim.requests[-1]
            assert path == "/coins/ethereum/ohlc"
            assert params == {"vs_currency": "usd", "days": "7"}
            assert all(r[3]["x-cg-demo-api-key"] == key for r in sim.requests)
            assert sim.hits["coingecko"] == 3


async def test_fetchers_refusals_and_faults() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("coingecko"), utc_now()
            with pytest.raises(ValueError, match="not 3600"):
                await fetch_candles(client, provider, "BTC", 3600, now - timedelta(hours=5), now)
            assert sim.hits["coingecko"] == 0
            sim.inject("coingecko", Fault.rate_limit(retry_after=90, times=1))
            with pytest.raises(UpstreamRateLimited):
                await fetch_global(client, provider)
            sim.inject("coingecko", Fault.wrong_shape(times=1))
            with pytest.raises(UpstreamPayloadError):
                await fetch_trending(client, provider)
            candles = await fetch_candles(
                client, provider, "BTC", 1800, now - timedelta(hours=5), now
            )
            assert 10 <= len(candles) <= 11


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            base = sim.base_url("coingecko")
            rows = (
                await http.get(
                    base + "/coins/bitcoin/ohlc", params={"vs_currency": "usd", "days": "1"}
                )
            ).json()
            assert 48 <= len(rows) <= 49
            assert [type(v) for v in rows[0]] == [
                type(v) for v in load_fixture("coingecko_ohlc")[0]
            ]
            assert all(r[0] % 1_800_000 == 0 for r in rows)
            four_hourly = (
                await http.get(
                    base + "/coins/bitcoin/ohlc", params={"vs_currency": "usd", "days": "7"}
                )
            ).json()
            assert {b[0] - a[0] for a, b in itertools.pairwise(four_hourly)} == {14_400_000}
            missing = await http.get(
                base + "/coins/no-such-coin/ohlc", params={"vs_currency": "usd", "days": "1"}
            )
            assert missing.status_code == 404
            fixture = load_fixture("coingecko_global")
            served = (await http.get(base + "/global")).json()
            # Stamped "now" unless told otherwise, as a current upstream is; otherwise as given.
            assert abs(served["data"]["updated_at"] - utc_now().timestamp()) < 5
            sim.set_market_time("coingecko", fixture["data"]["updated_at"])
            assert (await http.get(base + "/global")).json() == fixture
