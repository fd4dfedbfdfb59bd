"""CoinMarketCap source (tier B, key required): the v1 `/cryptocurrency/quotes/latest` parser
against fixtures, the collector against the simulator (key in `X-CMC_PRO_API_KEY`, never
called without one), and its fault cases.

Shapes: https://coinmarketcap.com/api/documentation/v1/#operation/getV1CryptocurrencyQuotesLatest
(response keyed by symbol when asked by symbol; v2 answers arrays instead) and
#section/Errors-and-Rate-Limits (1002 "API key missing." with HTTP 401, 1008 with HTTP 429).
See fixtures/SOURCES.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
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
from gateway.models import PriceTick
from gateway.providers.upstream_keys import Secrets
from gateway.sources.base import CollectorContext
from gateway.sources.coinmarketcap import (
    CoinMarketCapCollector,
    fetch_global_metrics,
    parse_global_metrics,
    parse_quotes_latest,
    quotes_params,
)
from gateway.sources.registry import collector_for
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture, shipped_provider
from tests.simulator.rest import API_KEYS, Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")
KEY = API_KEYS["coinmarketcap"]


SHIPPED = shipped_provider("coinmarketcap")


def parse(payload: Any) -> list[PriceTick]:
    return parse_quotes_latest(payload, OBSERVED)


def btc(**quote: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coinmarketcap_quotes_latest"))
    payload["data"] = {"BTC": payload["data"]["BTC"]}
    payload["data"]["BTC"]["quote"]["USD"].update(quote)
    return dict(payload)


# -- parser ------------------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("coinmarketcap_quotes_latest"))
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]  # HEX is not in the asset table
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.33589365662,
        provider="coinmarketcap",
        observed_at=datetime(2024, 3, 25, 8, 44, tzinfo=UTC),  # quote.USD.last_updated
        market_cap_usd=1321514079386.6052,
        volume_24h_usd=31260929299.52481,
        change_24h_pct=3.63727894,
    )


def test_unverified_cap_and_missing_fields_are_unknown() -> None:
    (tick,) = parse(btc(market_cap=0, volume_24h=None, percent_change_24h=None))
    assert (tick.market_cap_usd, tick.volume_24h_usd, tick.change_24h_pct) == (None, None, None)
    payload = btc()
    del payload["data"]["BTC"]["quote"]["USD"]["last_updated"]
    payload["data"]["BTC"]["last_updated"] = "2024-03-25T08:40:00.000Z"
    assert parse(payload)[0].observed_at == datetime(2024, 3, 25, 8, 40, tzinfo=UTC)
    del payload["data"]["BTC"]["last_updated"]
    assert parse(payload)[0].observed_at == OBSERVED
    lower = btc()
    lower["data"] = {"btc": lower["data"]["BTC"]}  # keys are matched in any case
    assert parse(lower)[0].symbol == "BTC"


def test_symbols_are_matched_to_the_table() -> None:
    payload = load_fixture("coinmarketcap_quotes_latest")
    ticks = parse_quotes_latest(payload, OBSERVED, provider="cmc")
    assert {t.provider for t in ticks} == {"cmc"}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("coinmarketcap_error_key_missing"), id="error-status"),
        pytest.param(load_fixture("coinmarketcap_key_info"), id="key-info-answer"),
        pytest.param(None, id="null"),
        pytest.param({"data": []}, id="data-array"),
        pytest.param({"data": {}}, id="empty"),
        pytest.param(
            {"data": {"BTC": [load_fixture("coinmarketcap_quotes_latest")["data"]["BTC"]]}},
            id="v2-array-per-symbol",
        ),
        pytest.param({"data": {"BTC": {"quote": {}}}}, id="no-usd-quote"),
        pytest.param({"data": {"BTC": {"quote": {"USD": 67187.3}}}}, id="usd-not-object"),
        pytest.param(btc(price=None), id="price-null"),
        pytest.param(btc(price="67187.3"), id="price-string"),
        pytest.param(btc(price=-1), id="price-negative"),
        pytest.param(btc(volume_24h=-5), id="volume-negative"),
        pytest.param(btc(percent_change_24h=float("nan")), id="change-nan"),
        pytest.param(btc(market_cap="big"), id="cap-text"),
        pytest.param(btc(last_updated="soon"), id="updated-text"),
        pytest.param(btc(last_updated="2024-03-25T08:44:00"), id="updated-no-offset"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "coinmarketcap"
    assert info.value.endpoint == "/cryptocurrency/quotes/latest"


def test_error_status_message_is_kept() -> None:
    with pytest.raises(UpstreamPayloadError, match="1002: API key missing"):
        parse(load_fixture("coinmarketcap_error_key_missing"))


def test_quotes_params() -> None:
    assert quotes_params(["BTC", "ETH"]) == {
        "symbol": "BTC,ETH",
        "convert": "USD",
        "skip_invalid": "true",  # one unknown symbol must not fail the whole request
    }


def test_the_shipped_entry_runs_this_collector_and_needs_the_key() -> None:
    assert collector_for(SHIPPED) is CoinMarketCapCollector
    assert SHIPPED.auth.kind == "header" and SHIPPED.auth.name == "X-CMC_PRO_API_KEY"
    assert not Secrets({}).is_configured(SHIPPED)
    assert Secrets({"COINMARKETCAP_API_KEY": "k"}).is_configured(SHIPPED)


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any,
    client: UpstreamClient,
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
    key: str | None = KEY,
) -> CoinMarketCapCollector:
    """A collector given `key` in its context, as the supervisor gives it the configured one."""
    return CoinMarketCapCollector(CollectorContext(provider, client, symbols, _ignore, key=key))


async def test_one_request_with_the_key_header() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(sim.provider("coinmarketcap"), client).poll()
            assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
            assert ticks[0].usd == sim.price("BTC", "coinmarketcap")
            assert ticks[0].market_cap_usd and ticks[0].volume_24h_usd
            _, path, params, headers = sim.requests[-1]
            assert path == "/cryptocurrency/quotes/latest"
            assert params == {
                "symbol": "BTC,ETH,SOL,BNB,XRP,ADA,DOGE",
                "convert": "USD",
                "skip_invalid": "true",
            }
            assert headers["x-cmc_pro_api_key"] == KEY

            sim.set_price("eth", 3500.25, provider="coinmarketcap")
            # NOPE is not in the asset table: not asked for.
            collector = make_collector(sim.provider("coinmarketcap"), client, ("eth", "NOPE"))
            assert [(t.symbol, t.usd) for t in await collector.poll()] == [("ETH", 3500.25)]
            assert sim.requests[-1][2]["symbol"] == "ETH"
            assert (
                await make_collector(sim.provider("coinmarketcap"), client, ("NOPE",)).poll() == []
            )
            assert sim.hits["coinmarketcap"] == 2


async def test_without_a_key_nothing_is_sent() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            with pytest.raises(UpstreamUnconfigured, match="COINMARKETCAP_API_KEY"):
                await make_collector(sim.provider("coinmarketcap"), client, key=None).poll()
            assert sim.hits["coinmarketcap"] == 0


async def test_a_wrong_key_is_refused_upstream() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.api_keys["coinmarketcap"] = "another-key"
            with pytest.raises(UpstreamError) as info:
                await make_collector(sim.provider("coinmarketcap"), client).poll()
            assert info.value.status == 401


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.rate_limit(retry_after=60), UpstreamRateLimited),
        (Fault.status(500), UpstreamError),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),
        (Fault.wrong_shape(load_fixture("coinmarketcap_error_key_missing")), UpstreamPayloadError),
    ],
    ids=["429", "500", "malformed", "wrong-shape", "error-status-in-200"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("coinmarketcap"), client)
            sim.inject("coinmarketcap", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "coinmarketcap"
            if isinstance(info.value, UpstreamRateLimited):
                assert info.value.retry_after == 60
            assert len(await collector.poll()) == len(DEFAULT_SYMBOLS)


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            url = sim.base_url("coinmarketcap") + "/cryptocurrency/quotes/latest"
            keyed = {"X-CMC_PRO_API_KEY": KEY}
            body = (await http.get(url, params={"symbol": "BTC"}, headers=keyed)).json()
            expected = load_fixture("coinmarketcap_quotes_latest")
            assert body.keys() == expected.keys()
            assert body["status"].keys() == expected["status"].keys()
            assert body["data"]["BTC"].keys() == expected["data"]["BTC"].keys()
            usd, fixture_usd = body["data"]["BTC"]["quote"]["USD"], expected["data"]["BTC"]["quote"]
            assert usd.keys() == fixture_usd["USD"].keys()
            invalid = await http.get(url, params={"symbol": "BTC,NOPE"}, headers=keyed)
            assert invalid.status_code == 400  # skip_invalid defaults to false upstream
            skipped = await http.get(
                url, params={"symbol": "BTC,NOPE", "skip_invalid": "true"}, headers=keyed
            )
            assert list(skipped.json()["data"]) == ["BTC"]
            missing = await http.get(url, params={"symbol": "BTC"})
            assert missing.status_code == 401
            assert missing.json()["status"]["error_code"] == 1002
            wrong = await http.get(
                url, params={"symbol": "BTC"}, headers={"X-CMC_PRO_API_KEY": "x"}
            )
            assert wrong.json()["status"]["error_code"] == 1001
            info = await http.get(sim.base_url("coinmarketcap") + "/key/info", headers=keyed)
            assert "data" in info.json()


# -- market overview: GET /v1/global-metrics/quotes/latest (on demand) --------------------------


def metrics(**usd: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("coinmarketcap_global_metrics"))
    payload["data"]["quote"]["USD"].update(usd)
    return dict(payload)


def test_parse_global_metrics_fixture() -> None:
    overview = parse_global_metrics(load_fixture("coinmarketcap_global_metrics"))
    assert overview.provider == "coinmarketcap"
    assert overview.total_market_cap_usd == 2641208554731.12
    assert overview.total_volume_24h_usd == 92011873001.43
    assert overview.btc_dominance_pct == 50.037218611527
    assert overview.market_cap_change_24h_pct == 1.723897115213
    assert overview.active_cryptocurrencies == 9316
    assert overview.updated_at == datetime(2024, 3, 25, 8, 44, 59, 999000, tzinfo=UTC)


def test_the_documented_2019_example_parses() -> None:
    """The documentation's own example (fewer fields: no 24 h change)."""
    payload = {
        "data": {
            "btc_dominance": 67.0057,
            "eth_dominance": 9.02205,
            "active_cryptocurrencies": 2941,
            "total_cryptocurrencies": 4637,
            "active_market_pairs": 21209,
            "active_exchanges": 445,
            "total_exchanges": 677,
            "last_updated": "2019-05-16T18:47:00.000Z",
            "quote": {
                "USD": {
                    "total_market_cap": 250385096532.124,
                    "total_volume_24h": 119270642406.968,
                    "total_volume_24h_reported": 1514905418.39087,
                    "altcoin_volume_24h": 119270642406.968,
                    "altcoin_volume_24h_reported": 1514905418.39087,
                    "altcoin_market_cap": 250385096532.124,
                    "last_updated": "2019-05-16T18:47:00.000Z",
                }
            },
        },
        "status": {"timestamp": "2024-03-25T08:45:21.406Z", "error_code": 0, "error_message": ""},
    }
    overview = parse_global_metrics(payload)
    assert overview.btc_dominance_pct == 67.0057 and overview.market_cap_change_24h_pct is None
    assert overview.updated_at == datetime(2019, 5, 16, 18, 47, tzinfo=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        load_fixture("coinmarketcap_error_key_missing"),
        load_fixture("coinmarketcap_key_info"),
        load_fixture("coinmarketcap_quotes_latest"),
        metrics(total_market_cap=0),
        metrics(total_volume_24h="92011873001.43"),
        metrics(last_updated=1711356299),
        metrics(total_market_cap_yesterday_percentage_change="1.7"),
        {**load_fixture("coinmarketcap_global_metrics"), "data": []},
    ],
)
def test_bad_global_metrics_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_global_metrics(payload)


async def test_fetch_global_metrics_with_the_key() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("coinmarketcap")
            overview = await fetch_global_metrics(client, provider, key=KEY)
            assert overview.total_market_cap_usd > 0
            assert abs((datetime.now(UTC) - overview.updated_at).total_seconds()) < 5
            _, path, params, headers = sim.requests[-1]
            assert (path, params) == ("/global-metrics/quotes/latest", {"convert": "USD"})
            assert headers["x-cmc_pro_api_key"] == KEY
            with pytest.raises(UpstreamUnconfigured):
                await fetch_global_metrics(client, provider)  # no key: nothing sent
            assert sim.hits["coinmarketcap"] == 1
            sim.api_keys["coinmarketcap"] = "another"
            with pytest.raises(UpstreamError) as caught:
                await fetch_global_metrics(client, provider, key=KEY)
            assert caught.value.status == 401
