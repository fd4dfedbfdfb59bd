"""Messari source (tier B, key required): the `/metrics/v2/assets/details` parser against
fixtures, the collector against the simulator (key in `x-messari-api-key`, never called without
one), and its fault cases.

Shapes: https://docs.messari.io/api-reference/endpoints/metrics/v2/assets/get-v2-assets-details
(example answer: `error`, `data[]` with `marketData.priceUsd`, `priceAt`, `volume24Hour`,
`marketcap.circulatingUsd`), .../get-v2-assets-roi (`priceChange24h` in percent) and Messari's
SDK specification (github.com/messari/MessariKit, typegen/openapi/services/asset/openapi.yaml).
See fixtures/SOURCES.md for what could not be settled (the query parameter's name).
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

from gateway import symbols
from gateway.errors import (
    UpstreamError,
    UpstreamPayloadError,
    UpstreamRateLimited,
    UpstreamUnconfigured,
)
from gateway.models import PriceTick
from gateway.providers.upstream_keys import Secrets
from gateway.sources import messari
from gateway.sources.base import CollectorContext
from gateway.sources.messari import (
    MAX_ASSETS,
    MessariCollector,
    details_params,
    parse_asset_details,
)
from gateway.sources.registry import collector_for
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture, shipped_provider
from tests.simulator.rest import API_KEYS, Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
SYMBOLS = ("BTC", "ETH", "USDT", "SOL")  # SOL has no confirmed Messari slug
KEY = API_KEYS["messari"]


SHIPPED = shipped_provider("messari")


def parse(payload: Any) -> list[PriceTick]:
    return parse_asset_details(payload, OBSERVED)


def btc(**market: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("messari_asset_details"))
    payload["data"] = [payload["data"][0]]
    payload["data"][0]["marketData"].update(market)
    return dict(payload)


# -- parser ------------------------------------------------------------------------------------


def test_parse_fixture() -> None:
    ticks = parse(load_fixture("messari_asset_details"))
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]  # `hex` has no slug in the asset table
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.33589365662,
        provider="messari",
        observed_at=datetime(2024, 3, 25, 8, 45, tzinfo=UTC),  # marketData.priceAt
        market_cap_usd=1321514079386.6052,
        volume_24h_usd=31260929299.52481,
        change_24h_pct=3.6372789467735,  # returnOnInvestment.priceChange24h, a percentage
    )


def test_missing_sections_and_fields_are_unknown() -> None:
    payload = btc(marketcap=None, volume24Hour=None)
    del payload["data"][0]["marketData"]["priceAt"]
    del payload["data"][0]["returnOnInvestment"]
    (tick,) = parse(payload)
    assert (tick.market_cap_usd, tick.volume_24h_usd, tick.change_24h_pct) == (None, None, None)
    assert tick.observed_at == OBSERVED


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(load_fixture("messari_error"), id="error"),
        pytest.param({"error": "bad request"}, id="error-without-data"),
        pytest.param(None, id="null"),
        pytest.param(load_fixture("messari_asset_details")["data"], id="bare-array"),
        pytest.param({"error": None, "data": {}}, id="data-object"),
        pytest.param({"error": None, "data": []}, id="empty"),
        pytest.param(
            {"error": None, "data": [load_fixture("messari_asset_details")["data"][2]]},
            id="only-unknown",
        ),
        pytest.param({"data": [{"symbol": "BTC"}]}, id="no-slug"),
        pytest.param({"data": [{"slug": "bitcoin", "symbol": "BTC"}]}, id="no-market-data"),
        pytest.param(btc(priceUsd=None), id="price-null"),
        pytest.param(btc(priceUsd="67187.3"), id="price-string"),
        pytest.param(btc(priceUsd=0), id="price-zero"),
        pytest.param(btc(volume24Hour=-1), id="volume-negative"),
        pytest.param(btc(marketcap=12.5), id="marketcap-not-object"),
        pytest.param(btc(marketcap={"circulatingUsd": "lots"}), id="cap-text"),
        pytest.param(btc(priceAt="2024-03-25 08:45"), id="price-at-no-offset"),
    ],
)
def test_bad_payloads_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse(payload)
    assert info.value.provider == "messari"
    assert info.value.endpoint == "/metrics/v2/assets/details"


def test_bad_change_is_refused() -> None:
    payload = btc()
    payload["data"][0]["returnOnInvestment"] = {"priceChange24h": float("nan")}
    with pytest.raises(UpstreamPayloadError, match="priceChange24h"):
        parse(payload)
    payload["data"][0]["returnOnInvestment"] = [3.6]
    with pytest.raises(UpstreamPayloadError, match="returnOnInvestment"):
        parse(payload)


def test_details_params_send_both_documented_names() -> None:
    assert details_params(["bitcoin", "ethereum"]) == {
        "assets": "bitcoin,ethereum",
        "slugs": "bitcoin,ethereum",
    }


def test_slugs_come_from_the_asset_table_only() -> None:
    assert symbols.messari_slug("btc") == "bitcoin"
    assert symbols.symbol_for_messari_slug("Ethereum") == "ETH"
    assert symbols.messari_slug("SOL") is None  # not confirmed: not collected from Messari
    assert symbols.symbol_for_messari_slug("no-such-thing") is None


def test_the_shipped_entry_runs_this_collector_and_needs_the_key() -> None:
    assert collector_for(SHIPPED) is MessariCollector
    assert SHIPPED.base_url == "https://api.messari.io"
    assert SHIPPED.auth.name == "x-messari-api-key"
    assert not Secrets({}).is_configured(SHIPPED)
    assert Secrets({"MESSARI_API_KEY": "k"}).is_configured(SHIPPED)


# -- collector against the simulator -----------------------------------------------------------


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any,
    client: UpstreamClient,
    symbols: tuple[str, ...] = SYMBOLS,
    key: str | None = KEY,
) -> MessariCollector:
    """A collector given `key` in its context, as the supervisor gives it the configured one."""
    return MessariCollector(CollectorContext(provider, client, symbols, _ignore, key=key))


async def test_one_request_with_the_key_header() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(sim.provider("messari"), client).poll()
            assert [t.symbol for t in ticks] == ["BTC", "ETH", "USDT"]
            assert ticks[0].usd == sim.price("BTC", "messari")
            assert ticks[0].market_cap_usd and ticks[0].volume_24h_usd
            assert ticks[0].change_24h_pct == pytest.approx(3.637)
            _, path, params, headers = sim.requests[-1]
            assert path == "/metrics/v2/assets/details"
            assert params == details_params(["bitcoin", "ethereum", "tether"])
            assert headers["x-messari-api-key"] == KEY
            assert await make_collector(sim.provider("messari"), client, ("SOL",)).poll() == []
            assert sim.hits["messari"] == 1


async def test_more_slugs_than_one_request_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messari, "MAX_ASSETS", 2)
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            ticks = await make_collector(sim.provider("messari"), client).poll()
            assert [t.symbol for t in ticks] == ["BTC", "ETH", "USDT"]
            assert [r[2]["assets"] for r in sim.requests] == ["bitcoin,ethereum", "tether"]
    assert MAX_ASSETS == 20


async def test_without_a_key_nothing_is_sent() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            with pytest.raises(UpstreamUnconfigured, match="MESSARI_API_KEY"):
                await make_collector(sim.provider("messari"), client, key=None).poll()
            assert sim.hits["messari"] == 0


async def test_a_wrong_key_is_refused_upstream() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            sim.api_keys["messari"] = "another-key"
            with pytest.raises(UpstreamError) as info:
                await make_collector(sim.provider("messari"), client).poll()
            assert info.value.status == 401


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.rate_limit(retry_after=61), UpstreamRateLimited),
        (Fault.status(500), UpstreamError),
        (Fault.malformed(), UpstreamPayloadError),
        (Fault.wrong_shape(), UpstreamPayloadError),
        (Fault.wrong_shape(load_fixture("messari_error")), UpstreamPayloadError),
    ],
    ids=["429", "500", "malformed", "wrong-shape", "error-in-200"],
)
async def test_poll_under_faults(fault: Fault, error_type: type[UpstreamError]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("messari"), client)
            sim.inject("messari", replace(fault, times=1))
            with pytest.raises(error_type) as info:
                await collector.poll()
            assert info.value.provider == "messari"
            if isinstance(info.value, UpstreamRateLimited):
                assert info.value.retry_after == 61
            assert len(await collector.poll()) == 3


async def test_simulator_answers_like_the_fixture() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            url = sim.base_url("messari") + "/metrics/v2/assets/details"
            keyed = {"x-messari-api-key": KEY}
            body = (await http.get(url, params={"slugs": "bitcoin,nope"}, headers=keyed)).json()
            expected = load_fixture("messari_asset_details")
            assert body.keys() == expected.keys()
            (row,) = body["data"]
            assert row.keys() == expected["data"][0].keys()
            assert row["marketData"].keys() == expected["data"][0]["marketData"].keys()
            by_assets = (await http.get(url, params={"assets": "tether"}, headers=keyed)).json()
            assert [r["symbol"] for r in by_assets["data"]] == ["USDT"]
            refused = await http.get(url, params={"assets": "bitcoin"})
            assert refused.status_code == 401 and refused.json().keys() == {"data", "error"}
            health = await http.get(
                sim.base_url("messari") + "/metrics/v2/assets", params={"limit": "1"}, headers=keyed
            )
            assert len(health.json()["data"]) == 1
