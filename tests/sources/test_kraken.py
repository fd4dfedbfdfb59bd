"""Kraken source: the pure parsers against fixtures, the collector and the candle fetcher
against the simulator."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import PriceTick, utc_now
from gateway.sources.base import CollectorContext
from gateway.sources.kraken import (
    KrakenCollector,
    fetch_candles,
    ohlc_params,
    parse_ohlc,
    parse_ticker,
    ticker_params,
)
from gateway.upstream import UpstreamClient
from tests.simulator import Published, load_fixture
from tests.simulator.rest import Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
ON_KRAKEN = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE")  # Kraken does not list BNB


def parse(payload: Any) -> list[PriceTick]:
    return parse_ticker(payload, OBSERVED)


def with_btc(**fields: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("kraken_ticker"))
    payload["result"]["XXBTZUSD"].update(fields)
    return payload


# -- ticker parser -----------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = {t.symbol: t for t in parse(load_fixture("kraken_ticker"))}
    assert set(ticks) == set(ON_KRAKEN)
    assert ticks["BTC"] == PriceTick(
        symbol="BTC",
        usd=67187.3,  # c[0], the last trade, under the key XXBTZUSD
        provider="kraken",
        observed_at=OBSERVED,  # Kraken sends no time with a ticker
        volume_24h_usd=pytest.approx(2862.13059177 * 66762.40351),  # v[1] x p[1]
    )
    assert ticks["BTC"].change_24h_pct is None  # `o` is today's open, not 24 h ago
    assert ticks["DOGE"].usd == 0.17621  # XDGUSD
    assert ticks["SOL"].usd == 184.05  # newer pairs keep their name as the key


def test_request_names_and_warnings() -> None:
    assert ticker_params(["XBTUSD", "ETHUSD"]) == {"pair": "XBTUSD,ETHUSD"}
    payload = {**load_fixture("kraken_ticker"), "error": ["WGeneral:Deprecated"]}
    assert len(parse(payload)) == len(ON_KRAKEN)  # a warning does not fail a response
    minimal = {"error": [], "result": {"XBTUSD": {"c": ["67000.1", "0.1"]}}}
    (tick,) = parse(minimal)  # the request name as a key is recognised too; no volume is fine
    assert tick.symbol == "BTC" and tick.volume_24h_usd is None


def test_error_envelopes() -> None:
    with pytest.raises(UpstreamPayloadError, match="EQuery:Unknown asset pair") as info:
        parse(load_fixture("kraken_error_unknown_pair"))
    assert info.value.provider == "kraken" and info.value.endpoint == "/Ticker"
    with pytest.raises(UpstreamRateLimited, match="Rate limit"):
        parse({"error": ["EAPI:Rate limit exceeded"]})
    with pytest.raises(UpstreamError, match="EService:Unavailable") as unavailable:
        parse({"error": ["EService:Unavailable"]})
    assert type(unavailable.value) is UpstreamError  # transient: retryable, not a bad payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="array"),
        pytest.param({"result": {}}, id="no-error-list"),
        pytest.param({"error": "oops", "result": {}}, id="error-not-list"),
        pytest.param({"error": []}, id="no-result"),
        pytest.param({"error": [], "result": []}, id="result-not-object"),
        pytest.param({"error": [], "result": {}}, id="empty"),
        pytest.param({"error": [], "result": {"FOOUSD": {"c": ["1", "1"]}}}, id="only-unknown"),
        pytest.param(load_fixture("kraken_time"), id="time-answer"),
        pytest.param(with_btc(c=[]), id="c-empty"),
        pytest.param(with_btc(c="67187.3"), id="c-string"),
        pytest.param(with_btc(c=["abc", "1"]), id="price-text"),
        pytest.param(with_btc(c=["0", "1"]), id="price-zero"),
        pytest.param(with_btc(c=["-5", "1"]), id="price-negative"),
        pytest.param(with_btc(c=["nan", "1"]), id="price-nan"),
        pytest.param(with_btc(v=["1"]), id="volume-short"),
        pytest.param(with_btc(v=["1", "-2"]), id="volume-negative"),
        pytest.param(with_btc(p=["1", "x"]), id="vwap-text"),
        pytest.param({"error": [], "result": {"XXBTZUSD": ["67187.3"]}}, id="entry-not-object"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse(payload)


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any, client: UpstreamClient, symbols: tuple[str, ...] = DEFAULT_SYMBOLS
) -> KrakenCollector:
    return KrakenCollector(CollectorContext(provider, client, symbols, _ignore))


async def test_poll_against_simulator_then_set_price() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("kraken"), client)
            ticks = await collector.poll()
            assert {t.symbol for t in ticks} == set(ON_KRAKEN)
            _, path, params, _ = sim.requests[-1]
            assert path == "/Ticker"
            assert params == {"pair": "XBTUSD,ETHUSD,SOLUSD,XRPUSD,ADAUSD,XDGUSD"}

            sim.set_price("BTC", 70123.45, provider="kraken")
            btc = next(t for t in await collector.poll() if t.symbol == "BTC")
            assert btc.usd == 70123.45
            assert btc.volume_24h_usd and btc.volume_24h_usd > 0
            assert await make_collector(sim.provider("kraken"), client, ("BNB",)).poll() == []
            assert sim.hits["kraken"] == 2


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.status(502), UpstreamError),
        (Fault.rate_limit(retry_after=30), UpstreamRateLimited),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),  # /Time's answer: no pair at all
        (Fault.wrong_shape(load_fixture("kraken_error_unknown_pair")), UpstreamPayloadError),
        (Fault.wrong_shape({"error": ["EAPI:Rate limit exceeded"]}), UpstreamRateLimited),
    ],
    ids=["502", "429", "malformed", "wrong-shape", "error-envelope", "rate-limit-envelope"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("kraken"), client)
            sim.inject("kraken", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "kraken"
            assert len(await collector.poll()) == len(ON_KRAKEN)


async def test_run_survives_faults_and_publishes() -> None:
    published = Published()
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("kraken", Fault.status(500, times=2))
            provider = sim.provider("kraken", interval_seconds=0.02, timeout_seconds=0.5)
            collector = KrakenCollector(CollectorContext(provider, client, ("ETH",), published))
            async with trio.open_nursery() as nursery:
                await nursery.start(collector.run)
                await published.wait_until(bool)
                nursery.cancel_scope.cancel()
            assert sim.hits["kraken"] == 3
            assert [t.symbol for t in published.batches[0]] == ["ETH"]


# -- OHLC parser and fetcher -------------------------------------------------------------------

OHLC_NOW = datetime.fromtimestamp(1711356290, UTC)  # inside the last (open) interval


def parse_candles(payload: Any, symbol: str = "BTC") -> Any:
    return parse_ohlc(payload, symbol, 60, OHLC_NOW)


def ohlc_with(rows: list[Any], key: str = "XXBTZUSD") -> dict[str, Any]:
    return {"error": [], "result": {key: rows, "last": 1711356180}}


def test_parse_ohlc_fixture() -> None:
    candles = parse_candles(load_fixture("kraken_ohlc"))
    assert [c.open_time for c in candles] == [
        datetime.fromtimestamp(t, UTC) for t in (1711356060, 1711356120, 1711356180, 1711356240)
    ]
    first = candles[0]
    assert (first.open, first.high, first.low, first.close) == (67150.0, 67190.1, 67140.2, 67171.9)
    assert first.volume == pytest.approx(3.2154 * 67166.4)  # base volume x vwap = USD
    assert first.provider == "kraken" and first.symbol == "BTC" and first.interval_seconds == 60
    assert [c.complete for c in candles] == [True, True, True, False]
    assert ohlc_params("XBTUSD", 300, datetime.fromtimestamp(1711356000, UTC)) == {
        "pair": "XBTUSD",
        "interval": "5",
        "since": "1711355999",
    }


ROW = [1711356060, "67150.0", "67190.1", "67140.2", "67171.9", "67166.4", "3.2154", 112]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("kraken_error_unknown_pair"), id="error-envelope"),
        pytest.param({"error": [], "result": {"last": 1}}, id="no-series"),
        pytest.param(
            {"error": [], "result": {"XXBTZUSD": [ROW], "XETHZUSD": [ROW], "last": 1}},
            id="two-series",
        ),
        pytest.param(ohlc_with([ROW], key="XETHZUSD"), id="other-pair"),
        pytest.param(ohlc_with("rows"), id="rows-not-array"),  # type: ignore[arg-type]
        pytest.param(ohlc_with([ROW[:6]]), id="row-short"),
        pytest.param(ohlc_with([[1711356030, *ROW[1:]]]), id="off-grid"),
        pytest.param(ohlc_with([["t", *ROW[1:]]]), id="time-text"),
        pytest.param(ohlc_with([[*ROW[:2], "67000.0", *ROW[3:]]]), id="high-below-open"),
        pytest.param(ohlc_with([[*ROW[:5], "x", *ROW[6:]]]), id="vwap-text"),
        pytest.param(ohlc_with([[*ROW[:6], "-1", ROW[7]]]), id="volume-negative"),
    ],
)
def test_bad_ohlc_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_candles(payload)


async def test_fetch_candles_against_simulator() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            now = utc_now()
            start = now - timedelta(minutes=30)
            candles = await fetch_candles(client, sim.provider("kraken"), "btc", 60, start, now)
            assert 30 <= len(candles) <= 31
            assert all(c.symbol == "BTC" and c.provider == "kraken" for c in candles)
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(candles)}
            assert steps == {timedelta(minutes=1)}
            assert candles[0].open_time >= start - timedelta(minutes=1)
            assert all(c.complete for c in candles[:-1])
            assert all(c.volume and c.volume > 0 for c in candles)
            _, path, params, _ = sim.requests[-1]
            assert path == "/OHLC" and params["pair"] == "XBTUSD" and params["interval"] == "1"
            assert sim.hits["kraken"] == 1


async def test_fetch_candles_without_a_request() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("kraken"), utc_now()
            hour = timedelta(hours=1)
            assert await fetch_candles(client, provider, "BNB", 60, now - hour, now) == []
            # Older than Kraken's 720 most recent intervals: nothing can be fetched.
            old = now - timedelta(days=2)
            assert await fetch_candles(client, provider, "BTC", 60, old - hour, old) == []
            with pytest.raises(ValueError, match="not 120"):
                await fetch_candles(client, provider, "BTC", 120, now - hour, now)
            assert sim.hits["kraken"] == 0


async def test_fetch_candles_under_a_fault() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.inject("kraken", Fault.wrong_shape(times=1))
            now = utc_now()
            with pytest.raises(UpstreamPayloadError):
                await fetch_candles(
                    client, sim.provider("kraken"), "ETH", 300, now - timedelta(hours=2), now
                )
            candles = await fetch_candles(
                client, sim.provider("kraken"), "ETH", 300, now - timedelta(hours=2), now
            )
            assert len(candles) in (24, 25)


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            base = sim.base_url("kraken")
            ticker = (await http.get(base + "/Ticker", params={"pair": "XBTUSD"})).json()
            assert ticker["error"] == [] and list(ticker["result"]) == ["XXBTZUSD"]
            entry = ticker["result"]["XXBTZUSD"]
            expected = load_fixture("kraken_ticker")["result"]["XXBTZUSD"]
            assert entry.keys() == expected.keys()
            assert all(type(entry[k]) is type(expected[k]) for k in entry)
            unknown = await http.get(base + "/Ticker", params={"pair": "XBTUSD,NOPEUSD"})
            assert unknown.status_code == 200
            assert unknown.json() == load_fixture("kraken_error_unknown_pair")
            ohlc = (await http.get(base + "/OHLC", params={"pair": "XXBTZUSD"})).json()
            rows = ohlc["result"]["XXBTZUSD"]
            assert len(rows) == 720 and isinstance(ohlc["result"]["last"], int)
            fixture_row = load_fixture("kraken_ohlc")["result"]["XXBTZUSD"][0]
            assert [type(v) for v in rows[0]] == [type(v) for v in fixture_row]
            assert (await http.get(base + "/Time")).json()["result"].keys() == {
                "unixtime",
                "rfc1123",
            }
