"""CryptoCompare source (tier B, key required): the `/pricemultifull` and `/v2/histo*` parsers
against fixtures, the collector and the candle fetcher against the simulator (key sent as
`authorization: Apikey …`, never called without one), and their fault cases.

Shapes: https://min-api.cryptocompare.com/documentation (Price > multipleSymbolsFullPriceEndpoint,
Historical > dataHistohour), now CoinDesk's "legacy" pages; the RAW/DISPLAY and histo v2 shapes
were checked against recorded answers (see fixtures/SOURCES.md).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from gateway.errors import (
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.models import PriceTick, utc_now
from gateway.providers.upstream_keys import Secrets
from gateway.sources.base import CollectorContext
from gateway.sources.cryptocompare import (
    CANDLE_INTERVALS,
    FSYMS_MAX_CHARS,
    HISTO_LIMIT,
    CryptoCompareCollector,
    fetch_candles,
    fsyms_batches,
    histo_params,
    parse_histo,
    parse_pricemultifull,
    pricemultifull_params,
)
from gateway.sources.registry import candle_source_for, collector_for
from gateway.symbols import all_assets
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture, shipped_provider
from tests.simulator.rest import API_KEYS, Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
KEY = API_KEYS["cryptocompare"]


SHIPPED = shipped_provider("cryptocompare")


def parse(payload: Any) -> list[PriceTick]:
    return parse_pricemultifull(payload, OBSERVED)


def btc(**raw: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("cryptocompare_pricemultifull"))
    payload["RAW"] = {"BTC": payload["RAW"]["BTC"]}
    payload["RAW"]["BTC"]["USD"].update(raw)
    return dict(payload)


# -- price parser ------------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("cryptocompare_pricemultifull"))
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]  # HEX is not in the asset table
    raw = load_fixture("cryptocompare_pricemultifull")["RAW"]["BTC"]["USD"]
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.34,
        provider="cryptocompare",
        observed_at=datetime(2024, 3, 25, 8, 45, tzinfo=UTC),  # LASTUPDATE
        market_cap_usd=raw["CIRCULATINGSUPPLYMKTCAP"],
        volume_24h_usd=31260929299.52,  # TOTALVOLUME24HTO: every pair, in USD
        change_24h_pct=raw["CHANGEPCT24HOUR"],
    )
    assert ticks[0].volume_24h_usd != raw["VOLUME24HOURTO"]  # not the USD pairs alone


def test_unknown_supply_and_missing_fields_are_unknown() -> None:
    payload = btc(CIRCULATINGSUPPLYMKTCAP=0, CHANGEPCT24HOUR=None)
    for key in ("TOTALVOLUME24HTO", "LASTUPDATE"):
        del payload["RAW"]["BTC"]["USD"][key]
    (tick,) = parse(payload)
    assert (tick.market_cap_usd, tick.volume_24h_usd, tick.change_24h_pct) == (None, None, None)
    assert tick.observed_at == OBSERVED


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("cryptocompare_error_rate_limit"), id="error-envelope"),
        pytest.param({"USD": 67187.34}, id="price-answer"),
        pytest.param(None, id="null"),
        pytest.param({"RAW": []}, id="raw-array"),
        pytest.param({"RAW": {}, "DISPLAY": {}}, id="empty"),
        pytest.param(
            {"RAW": {"HEX": load_fixture("cryptocompare_pricemultifull")["RAW"]["HEX"]}},
            id="only-unknown",
        ),
        pytest.param({"RAW": {"BTC": {"EUR": {"PRICE": 1.0}}}}, id="no-usd"),
        pytest.param({"RAW": {"BTC": 67187.34}}, id="entry-not-object"),
        pytest.param(btc(PRICE="67187.34"), id="price-string"),
        pytest.param(btc(PRICE=0), id="price-zero"),
        pytest.param(btc(TOTALVOLUME24HTO=-1), id="volume-negative"),
        pytest.param(btc(CHANGEPCT24HOUR=float("inf")), id="change-inf"),
        pytest.param(btc(LASTUPDATE="now"), id="updated-text"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "cryptocompare" and info.value.endpoint == "/pricemultifull"


def test_error_envelope_message_is_kept() -> None:
    with pytest.raises(UpstreamPayloadError, match="over your rate limit"):
        parse(load_fixture("cryptocompare_error_rate_limit"))


def test_fsyms_batches_respect_the_length_limit() -> None:
    assert fsyms_batches([]) == []
    assert fsyms_batches(["BTC", "ETH"]) == [["BTC", "ETH"]]
    many = [f"S{i:04d}" for i in range(200)]  # 5 characters each, 6 with the comma
    batches = fsyms_batches(many)
    assert [s for batch in batches for s in batch] == many
    assert all(len(",".join(batch)) <= FSYMS_MAX_CHARS for batch in batches)
    assert len(",".join(batches[0])) + 6 > FSYMS_MAX_CHARS  # each batch is as full as it gets
    assert pricemultifull_params(["BTC", "ETH"]) == {"fsyms": "BTC,ETH", "tsyms": "USD"}


def test_the_shipped_entry_runs_this_collector_and_needs_the_key() -> None:
    assert collector_for(SHIPPED) is CryptoCompareCollector
    assert (SHIPPED.auth.name, SHIPPED.auth.prefix) == ("authorization", "Apikey ")
    assert not Secrets({}).is_configured(SHIPPED)
    source = candle_source_for(SHIPPED)
    assert source is not None and source.fetch is fetch_candles
    assert source.intervals == CANDLE_INTERVALS == frozenset({60, 3600, 86400})


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any,
    client: UpstreamClient,
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
    key: str | None = KEY,
) -> CryptoCompareCollector:
    """A collector given `key` in its context, as the supervisor gives it the configured one."""
    return CryptoCompareCollector(CollectorContext(provider, client, symbols, _ignore, key=key))


async def test_one_request_with_the_key_header() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(sim.provider("cryptocompare"), client).poll()
            assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
            assert ticks[0].usd == sim.price("BTC", "cryptocompare")
            assert ticks[0].market_cap_usd and ticks[0].volume_24h_usd
            _, path, params, headers = sim.requests[-1]
            assert path == "/pricemultifull"
            assert params == {"fsyms": "BTC,ETH,SOL,BNB,XRP,ADA,DOGE", "tsyms": "USD"}
            assert headers["authorization"] == f"Apikey {KEY}"
            assert sim.hits["cryptocompare"] == 1
            assert (
                await make_collector(sim.provider("cryptocompare"), client, ("NOPE",)).poll() == []
            )
            assert sim.hits["cryptocompare"] == 1  # nothing known: no request


async def test_a_long_symbol_list_is_asked_for_in_batches() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            every = tuple(a.symbol for a in all_assets())
            assert len(",".join(every)) > FSYMS_MAX_CHARS
            ticks = await make_collector(sim.provider("cryptocompare"), client, every).poll()
            assert {t.symbol for t in ticks} == set(every)  # the simulator lists them all
            requests = [r for r in sim.requests if r[1] == "/pricemultifull"]
            assert len(requests) == len(fsyms_batches(every)) >= 2
            assert all(len(r[2]["fsyms"]) <= FSYMS_MAX_CHARS for r in requests)


async def test_without_a_key_nothing_is_sent() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            with pytest.raises(UpstreamUnconfigured, match="CRYPTOCOMPARE_API_KEY"):
                await make_collector(sim.provider("cryptocompare"), client, key=None).poll()
            now = utc_now()
            with pytest.raises(UpstreamUnconfigured):
                await fetch_candles(
                    client, sim.provider("cryptocompare"), "BTC", 3600, now - timedelta(1), now
                )
            assert sim.hits["cryptocompare"] == 0


async def test_a_wrong_key_gets_the_error_envelope() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.api_keys["cryptocompare"] = "another-key"
            with pytest.raises(UpstreamPayloadError, match="valid auth key or api key"):
                await make_collector(sim.provider("cryptocompare"), client).poll()


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.rate_limit(retry_after=120), UpstreamRateLimited),
        (Fault.status(502), UpstreamError),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),
        (Fault.wrong_shape(load_fixture("cryptocompare_error_rate_limit")), UpstreamPayloadError),
    ],
    ids=["429", "502", "malformed", "wrong-shape", "error-envelope-200"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("cryptocompare"), client)
            sim.inject("cryptocompare", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "cryptocompare"
            if isinstance(info.value, UpstreamRateLimited):
                assert info.value.retry_after == 120
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            base = sim.base_url("cryptocompare")
            keyed = {"authorization": f"Apikey {KEY}"}
            body = (
                await http.get(
                    base + "/pricemultifull",
                    params={"fsyms": "BTC,NOPE", "tsyms": "USD"},
                    headers=keyed,
                )
            ).json()
            expected = load_fixture("cryptocompare_pricemultifull")
            assert list(body) == ["RAW", "DISPLAY"] and list(body["RAW"]) == ["BTC"]
            assert list(body["RAW"]["BTC"]["USD"]) == list(expected["RAW"]["BTC"]["USD"])
            as_param = await http.get(
                base + "/price", params={"fsym": "BTC", "tsyms": "USD", "api_key": KEY}
            )
            assert "USD" in as_param.json()  # the key may also travel as `api_key`
            refused = (
                await http.get(base + "/price", params={"fsym": "BTC", "tsyms": "USD"})
            ).json()
            assert refused["Response"] == "Error" and refused.keys() == set(
                load_fixture("cryptocompare_error_rate_limit")
            )
            histo = (
                await http.get(
                    base + "/v2/histohour",
                    params={"fsym": "ETH", "tsym": "USD", "limit": "2", "toTs": "1711357200"},
                    headers=keyed,
                )
            ).json()
            fixture = load_fixture("cryptocompare_histohour")
            assert histo.keys() == fixture.keys() and histo["Data"].keys() == fixture["Data"].keys()
            assert [r["time"] for r in histo["Data"]["Data"]] == [
                r["time"] for r in fixture["Data"]["Data"]
            ]
            assert histo["Data"]["Data"][0].keys() == fixture["Data"]["Data"][0].keys()
            too_many = await http.get(
                base + "/v2/histominute",
                params={"fsym": "BTC", "tsym": "USD", "limit": "2001"},
                headers=keyed,
            )
            assert too_many.json()["Response"] == "Error"


# -- candles -----------------------------------------------------------------------------------

NOW = datetime.fromtimestamp(1711357500, UTC)  # inside the last fixture candle


def parse_candles(payload: Any) -> Any:
    return parse_histo(payload, "BTC", 3600, NOW)


def test_parse_histo_fixture() -> None:
    candles = parse_candles(load_fixture("cryptocompare_histohour"))
    assert [int(c.open_time.timestamp()) for c in candles] == [1711350000, 1711353600, 1711357200]
    first = candles[0]
    assert (first.open, first.high, first.low, first.close) == (66910.3, 67102.4, 66871.05, 67052.2)
    assert first.volume == 40471226.83  # volumeto: the USD side
    assert first.provider == "cryptocompare" and first.interval_seconds == 3600
    assert [c.complete for c in candles] == [True, True, False]


ROW = load_fixture("cryptocompare_histohour")["Data"]["Data"][0]


def histo(*rows: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("cryptocompare_histohour"))
    payload["Data"]["Data"] = list(rows)
    return dict(payload)


def test_zero_rows_are_no_data_and_left_out() -> None:
    empty = {**ROW, "time": 1711346400, "open": 0, "high": 0, "low": 0, "close": 0}
    candles = parse_candles(histo({**empty, "volumefrom": 0, "volumeto": 0}, ROW))
    assert [int(c.open_time.timestamp()) for c in candles] == [1711350000]
    assert parse_candles(histo()) == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("cryptocompare_error_rate_limit"), id="error-envelope"),
        pytest.param({"Data": []}, id="data-array"),
        pytest.param({"Response": "Success"}, id="no-data"),
        pytest.param(histo([ROW["time"], ROW["open"]]), id="row-array"),
        pytest.param(histo({**ROW, "time": 1711350030}), id="off-grid"),
        pytest.param(histo({**ROW, "time": "1711350000"}), id="time-string"),
        pytest.param(histo({**ROW, "close": "67052.2"}), id="price-string"),
        pytest.param(histo({**ROW, "low": 70000.0}), id="low-above-high"),
        pytest.param(histo({**ROW, "open": 0}), id="one-price-zero"),
        pytest.param(histo({**ROW, "volumeto": -3}), id="volume-negative"),
        pytest.param(histo({k: v for k, v in ROW.items() if k != "volumeto"}), id="no-volume"),
    ],
)
def test_bad_histo_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse_candles(payload)
    assert info.value.endpoint == "/v2/histohour"


def test_histo_params() -> None:
    start = datetime(2024, 3, 25, 0, 0, tzinfo=UTC)
    assert histo_params("BTC", 3600, start, start + timedelta(hours=5)) == {
        "fsym": "BTC",
        "tsym": "USD",
        "limit": "4",  # limit + 1 rows come back: five hours
        "toTs": str(1711324800 + 4 * 3600),  # the last open time in the window
    }
    # A fraction of an interval still counts; a single interval asks for one spare row.
    assert histo_params("BTC", 60, start, start + timedelta(seconds=61))["limit"] == "1"
    assert histo_params("BTC", 60, start, start + timedelta(seconds=30))["limit"] == "1"


async def test_fetch_candles_pages_through_long_windows() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("cryptocompare"), utc_now()
            start = now - timedelta(minutes=4500)
            candles = await fetch_candles(client, provider, "BTC", 60, start, now, key=KEY)
            assert 4500 <= len(candles) <= 4501
            steps = {b.open_time - a.open_time for a, b in itertools.pairwise(candles)}
            assert steps == {timedelta(minutes=1)}
            assert not candles[-1].complete and candles[-2].complete
            assert all(c.volume is not None and c.volume > 0 for c in candles)
            pages = [r for r in sim.requests if r[1] == "/v2/histominute"]
            assert len(pages) == 3
            assert all(int(p[2]["limit"]) <= HISTO_LIMIT for p in pages)
            assert all(p[3]["authorization"] == f"Apikey {KEY}" for p in pages)
            tos = [int(p[2]["toTs"]) for p in pages]
            assert tos == sorted(tos)  # oldest page first


async def test_fetch_candles_refusals_and_faults() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider, now = sim.provider("cryptocompare"), utc_now()
            fetch = partial(fetch_candles, client, provider, key=KEY)
            day = timedelta(days=1)
            hours = await fetch("ETH", 3600, now - day, now)
            assert len(hours) in (24, 25) and sim.requests[-1][1] == "/v2/histohour"
            days = await fetch("ETH", 86400, now - 10 * day, now)
            assert len(days) in (10, 11) and sim.requests[-1][1] == "/v2/histoday"
            hits = sim.hits["cryptocompare"]
            assert await fetch("NOPE", 3600, now - day, now) == []
            with pytest.raises(ValueError, match="not 300"):
                await fetch("BTC", 300, now - day, now)
            with pytest.raises(ValueError, match="timezone-aware"):
                await fetch("BTC", 60, datetime(2024, 1, 1), now)
            assert sim.hits["cryptocompare"] == hits  # refused before any request
            sim.inject("cryptocompare", Fault.rate_limit(retry_after=90, times=1))
            with pytest.raises(UpstreamRateLimited):
                await fetch("BTC", 3600, now - day, now)
            sim.inject("cryptocompare", Fault.wrong_shape(times=1))
            with pytest.raises(UpstreamPayloadError):
                await fetch("BTC", 3600, now - day, now)
            assert len(await fetch("BTC", 3600, now - day, now)) in (24, 25)
