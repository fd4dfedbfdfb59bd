"""Binance source: the pure parser against fixtures and the collector against the simulator."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import PriceTick
from gateway.sources.base import CollectorContext
from gateway.sources.binance import (
    BinanceCollector,
    parse_ticker_24hr,
    ticker_24hr_params,
)
from gateway.upstream import UpstreamClient
from tests.simulator import Published, load_fixture
from tests.simulator.rest import Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")


def parse(payload: Any) -> list[PriceTick]:
    return parse_ticker_24hr(payload, OBSERVED)


def ticker(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = dict(load_fixture("binance_ticker_24hr_single"))
    item.update(fields)
    return {k: v for k, v in item.items() if v is not ...}


# -- parser: happy paths -----------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("binance_ticker_24hr"))
    assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67210.0,  # USDT taken as USD
        provider="binance",
        observed_at=datetime(2024, 3, 25, 8, 44, 59, 999000, tzinfo=UTC),  # closeTime (ms)
        market_cap_usd=None,  # Binance does not know market caps
        volume_24h_usd=2074745240.16083115,  # quoteVolume
        change_24h_pct=3.671,
    )
    assert ticks[6].symbol == "DOGE" and ticks[6].usd == 0.17621


def test_single_symbol_form_is_accepted() -> None:
    (tick,) = parse(load_fixture("binance_ticker_24hr_single"))
    assert tick.symbol == "BTC" and tick.usd == 67210.0


def test_unknown_and_non_usdt_pairs_are_skipped() -> None:
    ticks = parse([ticker(symbol="ETHBTC", lastPrice="0.05140000"), ticker(), {"symbol": "ZZZ"}])
    assert [t.symbol for t in ticks] == ["BTC"]


def test_optional_fields_may_be_absent_or_null() -> None:
    (tick,) = parse(
        [{"symbol": "ETHUSDT", "lastPrice": "3455.12", "quoteVolume": None}]  # MINI-ish
    )
    assert tick.usd == 3455.12
    assert tick.volume_24h_usd is None and tick.change_24h_pct is None
    assert tick.observed_at == OBSERVED


def test_numbers_as_json_numbers_are_accepted() -> None:
    (tick,) = parse([ticker(lastPrice=67210, priceChangePercent=-1.5, quoteVolume=1e9)])
    assert (tick.usd, tick.change_24h_pct, tick.volume_24h_usd) == (67210.0, -1.5, 1e9)


def test_provider_name_is_configurable() -> None:
    (tick,) = parse_ticker_24hr([ticker()], OBSERVED, provider="binance-us")
    assert tick.provider == "binance-us"


# -- parser: everything that must raise --------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("binance_error_invalid_symbol"), id="error-object"),
        pytest.param(load_fixture("binance_ticker_price"), id="ticker-price-shape"),
        pytest.param([], id="empty-list"),
        pytest.param({}, id="empty-object"),
        pytest.param([ticker(symbol="ETHBTC")], id="only-unknown-pairs"),
        pytest.param(None, id="null"),
        pytest.param("BTCUSDT", id="string"),
        pytest.param({"symbols": [ticker()]}, id="wrapped"),
        pytest.param([["BTCUSDT", "67210.0"]], id="array-rows"),
        pytest.param([ticker(symbol=None)], id="symbol-null"),
        pytest.param([ticker(symbol=123)], id="symbol-number"),
        pytest.param([ticker(lastPrice=...)], id="price-missing"),
        pytest.param([ticker(lastPrice="")], id="price-empty"),
        pytest.param([ticker(lastPrice="n/a")], id="price-text"),
        pytest.param([ticker(lastPrice="NaN")], id="price-nan-string"),
        pytest.param([ticker(lastPrice=math.nan)], id="price-nan"),
        pytest.param([ticker(lastPrice="Infinity")], id="price-inf"),
        pytest.param([ticker(lastPrice="-67210.0")], id="price-negative"),
        pytest.param([ticker(lastPrice="0.00000000")], id="price-zero"),
        pytest.param([ticker(lastPrice=True)], id="price-bool"),
        pytest.param([ticker(quoteVolume="-1")], id="volume-negative"),
        pytest.param([ticker(quoteVolume="lots")], id="volume-text"),
        pytest.param([ticker(priceChangePercent="nan")], id="change-nan"),
        pytest.param([ticker(closeTime="1711356299999")], id="close-time-string"),
        pytest.param([ticker(closeTime=0)], id="close-time-zero"),
        pytest.param([ticker(closeTime=10**30)], id="close-time-out-of-range"),
        pytest.param([ticker(), ticker(symbol="ETHUSDT", lastPrice="-1")], id="one-corrupt"),
        pytest.param([ticker(), "ETHUSDT"], id="non-object-element"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "binance"
    assert info.value.endpoint == "/ticker/24hr"


def test_error_object_message_is_kept() -> None:
    with pytest.raises(UpstreamPayloadError, match=r"-1121: Invalid symbol\."):
        parse(load_fixture("binance_error_invalid_symbol"))


# -- request building --------------------------------------------------------------------------


def test_symbols_param_is_compact_json() -> None:
    params = ticker_24hr_params(["BTCUSDT", "ETHUSDT"])
    assert params == {"symbols": '["BTCUSDT","ETHUSDT"]'}
    assert json.loads(params["symbols"]) == ["BTCUSDT", "ETHUSDT"]


# -- collector against the simulator (loopback, real clock) ------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any, client: UpstreamClient, symbols: tuple[str, ...] = DEFAULT_SYMBOLS
) -> BinanceCollector:
    return BinanceCollector(CollectorContext(provider, client, symbols, _ignore))


async def test_poll_against_simulator_then_set_price() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("binance"), client)
            ticks = await collector.poll()
            assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
            assert ticks[1].usd == sim.price("ETH", "binance")
            assert ticks[1].volume_24h_usd and ticks[1].change_24h_pct is not None

            sim.set_price("ETH", 3999.5, provider="binance")
            ticks = await collector.poll()
            assert ticks[1].usd == 3999.5
            assert abs((ticks[1].observed_at - datetime.now(UTC)).total_seconds()) < 5

            _, path, params, _ = sim.requests[-1]
            assert path == "/ticker/24hr"
            expected = '["BTCUSDT","ETHUSDT","SOLUSDT","BNBUSDT","XRPUSDT","ADAUSDT","DOGEUSDT"]'
            assert params == {"symbols": expected}


async def test_symbols_without_a_pair_are_not_requested() -> None:
    """USDT has no USDT pair and MATICUSDT is delisted; asking for either would make Binance
    reject the whole request with -1121, so the collector leaves them out."""
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(
                sim.provider("binance"), client, ("USDT", "MATIC", "POL", "btc")
            ).poll()
            assert [t.symbol for t in ticks] == ["POL", "BTC"]
            assert sim.requests[-1][2] == {"symbols": '["POLUSDT","BTCUSDT"]'}
            assert await make_collector(sim.provider("binance"), client, ("USDT",)).poll() == []
            assert sim.hits["binance"] == 1


@pytest.mark.parametrize(
    ("fault", "error_type", "outcome"),
    [
        (Fault.status(502), UpstreamError, "http_error"),
        (Fault.status(418, retry_after=120), UpstreamRateLimited, "rate_limited"),
        (Fault.rate_limit(retry_after=60), UpstreamRateLimited, "rate_limited"),
        (Fault.hang(), UpstreamError, "timeout"),
        (Fault.malformed(), UpstreamPayloadError, "malformed"),
        (Fault.wrong_shape(), UpstreamPayloadError, None),
    ],
    ids=lambda v: getattr(v, "kind", None) or getattr(v, "__name__", None) or str(v),
)
async def test_poll_under_faults(
    fault: Fault, error_type: type[UpstreamError], outcome: str | None
) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("binance", timeout_seconds=0.3), client)
            sim.inject("binance", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "binance"
            assert client.attempts[-1].error_type == outcome
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)


async def test_run_survives_faults_and_publishes() -> None:
    published = Published()
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            for fault in (Fault.malformed(), Fault.status(500), Fault.wrong_shape()):
                sim.inject("binance", replace(fault, times=1))
            provider = sim.provider("binance", interval_seconds=0.02, timeout_seconds=0.5)
            collector = BinanceCollector(
                CollectorContext(provider, client, ("BTC", "SOL"), published)
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(collector.run)
                await published.wait_until(bool)
                sim.set_price("SOL", 201.25)
                await published.wait_until(lambda batches: batches[-1][1].usd == 201.25)
                nursery.cancel_scope.cancel()
            assert sim.hits["binance"] >= 5
            assert [t.symbol for t in published.batches[0]] == ["BTC", "SOL"]
