"""CoinPaprika source: ticker and OHLCV parsers against fixtures; the one-request collector and
the daily candle fetcher against the simulator."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.models import PriceTick, utc_now
from gateway.sources.base import CollectorContext
from gateway.sources.coinpaprika import (
    CoinPaprikaCollector,
    fetch_candles,
    fetch_global,
    ohlcv_params,
    parse_global,
    parse_ohlcv,
    parse_tickers,
)
from gateway.upstream import NO_RETRY, UpstreamClient
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")


def parse(payload: Any) -> list[PriceTick]:
    return parse_tickers(payload, OBSERVED)


def btc(**quote: Any) -> list[dict[str, Any]]:
    entry = copy.deepcopy(load_fixture("coinpaprika_tickers")[0])
    entry["quotes"]["USD"].update(quote)
    return [entry]


# -- ticker parser -----------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("coinpaprika_tickers"))
    assert [t.symbol for t in ticks] == ["BTC", "ETH", "SOL"]  # hex-hex is not in the table
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.82163415,
        provider="coinpaprika",
        observed_at=datetime(2024, 3, 25, 8, 45, 2, tzinfo=UTC),  # last_updated
        market_cap_usd=1321574516001,
        volume_24h_usd=31260929299.52,
        change_24h_pct=3.64,
    )
    assert ticks[2].market_cap_usd is None  # CoinPaprika's 0 means "supply unknown"


def test_single_ticker_form_and_optional_fields() -> None:
    (tick,) = parse(load_fixture("coinpaprika_tickers")[1])  # /tickers/{id}: one object
    assert tick.symbol == "ETH"
    entry = btc(volume_24h=None, market_cap=None, percent_change_24h=None)[0]
    del entry["last_updated"]
    (tick,) = parse([entry])
    assert (tick.volume_24h_usd, tick.market_cap_usd, tick.change_24h_pct) == (None, None, None)
    assert tick.observed_at == OBSERVED


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coinpaprika_error"), id="error-envelope"),
        pytest.param(load_fixture("coinpaprika_global"), id="global-answer"),
        pytest.param(None, id="null"),
        pytest.param("btc", id="string"),
        pytest.param([], id="empty"),
        pytest.param([load_fixture("coinpaprika_tickers")[2]], id="only-unknown"),
        pytest.param([{"name": "Bitcoin"}], id="no-id"),
        pytest.param(["btc-bitcoin"], id="element-not-object"),
        pytest.param([{"id": "btc-bitcoin", "quotes": {}}], id="no-usd-quote"),
        pytest.param([{"id": "btc-bitcoin", "quotes": {"USD": 67187.8}}], id="usd-not-object"),
        pytest.param(btc(price="67187.8"), id="price-string"),
        pytest.param(btc(price=0), id="price-zero"),
        pytest.param(btc(price=None), id="price-null"),
        pytest.param(btc(price=math.inf), id="price-inf"),
        pytest.param(btc(volume_24h=-1), id="volume-negative"),
        pytest.param(btc(market_cap="1e12"), id="cap-string"),
        pytest.param(btc(percent_change_24h=math.nan), id="change-nan"),
        pytest.param([{**btc()[0], "last_updated": "yesterday"}], id="updated-text"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "coinpaprika"


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any, client: UpstreamClient, symbols: tuple[str, ...] = DEFAULT_SYMBOLS
) -> CoinPaprikaCollector:
    return CoinPaprikaCollector(CollectorContext(provider, client, symbols, _ignore))


async def test_one_request_serves_every_symbol() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coinpaprika"), client)
            ticks = await collector.poll()
            assert {t.symbol for t in ticks} == set(DEFAULT_SYMBOLS)
            assert sim.requests[-1][1:3] == ("/tickers", {"quotes": "USD"})
            btc = next(t for t in ticks if t.symbol == "BTC")
            assert btc.usd == sim.price("BTC", "coinpaprika") and btc.market_cap_usd

            sim.set_price("btc", 68000.5, provider="coinpaprika")
            only_btc = await make_collector(sim.provider("coinpaprika"), client, ("BTC",)).poll()
            assert [(t.symbol, t.usd) for t in only_btc] == [("BTC", 68000.5)]
            # No CoinPaprika id for these: nothing to ask for.
            assert await make_collector(sim.provider("coinpaprika"), client, ("HYPE",)).poll() == []
            assert sim.hits["coinpaprika"] == 2


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.status(500), UpstreamError),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),
        (Fault.wrong_shape(load_fixture("coinpaprika_error")), UpstreamPayloadError),
    ],
    ids=["500", "malformed", "wrong-shape", "error-envelope"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coinpaprika"), client)
            sim.inject("coinpaprika", replace(fault, times=1))
            with pytest.raises(error_type):
                await collector.poll()
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)


# -- daily candles -----------------------------------------------------------------------------

NOW = datetime(2024, 3, 25, 9, 0, tzinfo=UTC)


def parse_candles(payload: Any) -> Any:
    return parse_ohlcv(payload, "BTC", "btc-bitcoin", NOW)


def test_parse_ohlcv_fixture() -> None:
    yesterday, today = parse_candles(load_fixture("coinpaprika_ohlcv_historical"))
    assert yesterday.open_time == datetime(2024, 3, 24, tzinfo=UTC)
    assert (yesterday.open, yesterday.high, yesterday.low, yesterday.close) == (
        64037.51,
        67594.82,
        63807.63,
        67211.42,
    )
    assert yesterday.volume == 24115032189  # already USD
    assert yesterday.interval_seconds == 86400 and yesterday.provider == "coinpaprika"
    assert yesterday.complete and not today.complete  # today's candle still moves


ROW = load_fixture("coinpaprika_ohlcv_historical")[0]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coinpaprika_error"), id="error-envelope"),
        pytest.param({"rows": []}, id="object"),
        pytest.param([[1]], id="row-array"),
        pytest.param([{**ROW, "time_open": "2024-03-24T12:00:00Z"}], id="off-grid"),
        pytest.param([{**ROW, "time_open": None}], id="no-time"),
        pytest.param([{**ROW, "close": "67211.42"}], id="price-string"),
        pytest.param([{**ROW, "low": 70000.0}], id="low-above-high"),
        pytest.param([{**ROW, "volume": -3}], id="volume-negative"),
    ],
)
def test_bad_ohlcv_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_candles(payload)


def test_ohlcv_params_always_send_a_limit() -> None:
    start = datetime(2024, 3, 20, tzinfo=UTC)
    assert ohlcv_params(start, start + timedelta(days=5)) == {
        "start": "1710892800",
        "end": str(1710892800 + 5 * 86400 - 1),
        "limit": "5",  # the upstream default is 1 row
        "interval": "24h",
        "quote": "usd",
    }


async def test_fetch_candles_against_simulator() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("coinpaprika"), utc_now()
            candles = await fetch_candles(
                client, provider, "BTC", 86400, now - timedelta(days=3), now
            )
            assert len(candles) == 4  # three whole days and today's
            assert [c.complete for c in candles] == [True, True, True, False]
            assert sim.requests[-1][1] == "/coins/btc-bitcoin/ohlcv/historical"
            with pytest.raises(ValueError, match="not 3600"):
                await fetch_candles(client, provider, "BTC", 3600, now - timedelta(days=1), now)
            assert (
                await fetch_candles(client, provider, "HYPE", 86400, now - timedelta(2), now) == []
            )
            sim.inject("coinpaprika", Fault.wrong_shape(times=1))
            with pytest.raises(UpstreamPayloadError):
                await fetch_candles(client, provider, "ETH", 86400, now - timedelta(days=1), now)
            assert sim.hits["coinpaprika"] == 2


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            base = sim.base_url("coinpaprika")
            tickers = (await http.get(base + "/tickers")).json()
            expected = load_fixture("coinpaprika_tickers")[0]
            assert tickers[0].keys() == expected.keys()
            assert tickers[0]["quotes"]["USD"].keys() == expected["quotes"]["USD"].keys()
            one = (await http.get(base + "/tickers/eth-eth" + "ereum")).json()
            assert one["id"] == "eth-ethereum"
            missing = await http.get(base + "/tickers/nope-nope")
            assert missing.status_code == 404
            assert missing.json() == load_fixture("coinpaprika_error")
            rows = (
                await http.get(
                    base + "/coins/btc-bitcoin/ohlcv/historical",
                    params={"start": "2024-03-24", "end": "2024-03-25", "limit": "5"},
                )
            ).json()
            assert [r["time_open"] for r in rows] == [
                "2024-03-24T00:00:00Z",
                "2024-03-25T00:00:00Z",
            ]
            assert rows[0].keys() == load_fixture("coinpaprika_ohlcv_historical")[0].keys()
            default_limit = await http.get(
                base + "/coins/btc-bitcoin/ohlcv/historical", params={"start": "2024-03-20"}
            )
            assert len(default_limit.json()) == 1  # the documented default limit
            assert "market_cap_usd" in (await http.get(base + "/global")).json()


# -- market overview: GET /global (on demand) -------------------------------------------------


def test_parse_global_fixture() -> None:
    overview = parse_global(load_fixture("coinpaprika_global"))
    assert overview.provider == "coinpaprika"
    assert overview.total_market_cap_usd == 2641998120344
    assert overview.total_volume_24h_usd == 92181230457
    assert overview.btc_dominance_pct == 50.02
    assert overview.market_cap_change_24h_pct == 1.72
    assert overview.active_cryptocurrencies == 10412
    assert overview.updated_at == datetime.fromtimestamp(1711356302, UTC)


def test_parse_global_optional_fields() -> None:
    payload = copy.deepcopy(load_fixture("coinpaprika_global"))
    del payload["market_cap_change_24h"], payload["cryptocurrencies_number"]
    overview = parse_global(payload)
    assert overview.market_cap_change_24h_pct is None and overview.active_cryptocurrencies is None


def _global(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coinpaprika_global"))
    payload.update(changes)
    return dict(payload)


@pytest.mark.parametrize(
    "payload",
    [
        load_fixture("coinpaprika_error"),
        [load_fixture("coinpaprika_global")],
        _global(market_cap_usd=0),
        _global(market_cap_usd=None),
        _global(volume_24h_usd="92181230457"),
        _global(bitcoin_dominance_percentage=101),
        _global(last_updated=None),
        _global(last_updated="2024-03-25T08:45:02Z"),
        _global(market_cap_change_24h=math.nan),
    ],
)
def test_bad_global_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_global(payload)


async def test_fetch_global_against_simulator() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("coinpaprika")
            overview = await fetch_global(client, provider)
            assert overview.provider == "coinpaprika" and overview.total_market_cap_usd > 0
            assert abs((utc_now() - overview.updated_at).total_seconds()) < 5
            assert sim.requests[-1][1] == "/global"
            sim.inject("coinpaprika", Fault.status(500))
            with pytest.raises(UpstreamError):
                await fetch_global(client, provider, retry=NO_RETRY)
            assert sim.hits["coinpaprika"] == 2  # NO_RETRY: one request, no retry
