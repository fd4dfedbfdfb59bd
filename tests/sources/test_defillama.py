"""DefiLlama source: price, protocol and TVL parsers against fixtures; the coins.llama.fi price
collector and the api.llama.fi fetchers against the simulator."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from gateway.errors import UpstreamError, UpstreamPayloadError
from gateway.market_models import DefiProtocol, TvlPoint
from gateway.models import PriceTick
from gateway.sources.base import CollectorContext
from gateway.sources.defillama import (
    DefiLlamaPriceCollector,
    chain_tvl_path,
    fetch_chain_tvl,
    fetch_protocols,
    parse_chain_tvl,
    parse_prices,
    parse_protocols,
    prices_path,
)
from gateway.upstream import UpstreamClient
from tests.simulator import load_fixture
from tests.simulator.rest import Fault, run_simulator

OBSERVED = datetime(2024, 3, 25, 9, 0, 0, tzinfo=UTC)
DEFAULT_SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE")


def prices(**btc: Any) -> dict[str, Any]:
    payload = copy.deepcopy(load_fixture("defillama_prices_current"))
    payload["coins"]["coingecko:bitcoin"].update(btc)
    return payload


# -- prices ------------------------------------------------------------------------------------


def test_parse_prices_fixture() -> None:
    ticks = parse_prices(load_fixture("defillama_prices_current"), OBSERVED)
    assert [t.symbol for t in ticks] == ["BTC", "ETH"]  # the WETH contract key is skipped
    assert ticks[0] == PriceTick(
        symbol="BTC",
        usd=67187.0,
        provider="defillama-coins",
        observed_at=datetime(2024, 3, 25, 8, 45, tzinfo=UTC),  # DefiLlama's timestamp
    )
    payload = prices()
    del payload["coins"]["coingecko:bitcoin"]["timestamp"]
    assert parse_prices(payload, OBSERVED)[0].observed_at == OBSERVED


def test_prices_path() -> None:
    assert prices_path(["coingecko:bitcoin", "coingecko:ethereum"]) == (
        "/prices/current/coingecko:bitcoin,coingecko:ethereum"
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(None, id="null"),
        pytest.param({}, id="no-coins"),
        pytest.param({"coins": []}, id="coins-array"),
        pytest.param({"coins": {}}, id="empty"),
        pytest.param({"coins": {"ethereum:0xabc": {"price": 1.0}}}, id="only-unknown"),
        pytest.param({"coins": {"coingecko:bitcoin": 67187.0}}, id="entry-not-object"),
        pytest.param(prices(price="67187"), id="price-string"),
        pytest.param(prices(price=0), id="price-zero"),
        pytest.param(prices(price=math.nan), id="price-nan"),
        pytest.param(prices(timestamp="1711356300"), id="timestamp-string"),
        pytest.param(prices(timestamp=-1), id="timestamp-negative"),
    ],
)
def test_bad_prices_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse_prices(payload, OBSERVED)
    assert info.value.provider == "defillama-coins"


async def _ignore(ticks: Sequence[PriceTick]) -> None:
    pass


def make_collector(
    provider: Any, client: UpstreamClient, symbols: tuple[str, ...] = DEFAULT_SYMBOLS
) -> DefiLlamaPriceCollector:
    return DefiLlamaPriceCollector(CollectorContext(provider, client, symbols, _ignore))


async def test_price_collector_against_simulator() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("defillama-coins"), client)
            ticks = await collector.poll()
            assert [t.symbol for t in ticks] == list(DEFAULT_SYMBOLS)
            path = sim.requests[-1][1]
            assert path == "/prices/current/" + ",".join(
                f"coingecko:{cid}"
                for cid in (
                    "bitcoin",
                    "ethereum",
                    "solana",
                    "binancecoin",
                    "ripple",
                    "cardano",
                    "dogecoin",
                )
            )
            sim.set_price("ETH", 3999.0, provider="defillama-coins")
            assert (await collector.poll())[1].usd == 3999.0


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [(Fault.status(502), UpstreamError), (Fault.wrong_shape(), UpstreamPayloadError)],
    ids=["502", "wrong-shape"],
)
async def test_price_collector_under_faults(fault: Fault, error_type: type[Exception]) -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            collector = make_collector(sim.provider("defillama-coins"), client, ("BTC",))
            sim.inject("defillama-coins", replace(fault, times=1))
            with pytest.raises(error_type):
                await collector.poll()
            assert len(await collector.poll()) == 1


# -- protocols and TVL -------------------------------------------------------------------------


def test_parse_protocols_fixture() -> None:
    lido, aave, fresh = parse_protocols(load_fixture("defillama_protocols"))
    assert lido == DefiProtocol(
        name="Lido",
        slug="lido",
        chains=("Ethereum", "Solana", "Moonbeam", "Moonriver", "Terra"),
        tvl_usd=33419283134.12,
        change_1d_pct=1.8412,
        category="Liquid Staking",
    )
    assert aave.slug == "aave-v3" and aave.category == "Lending"
    assert fresh.change_1d_pct is None and fresh.tvl_usd == 120311.5
    bare = parse_protocols([{"name": "X", "slug": "x"}])
    assert bare == [DefiProtocol("X", "x", (), None, None, None)]


LIDO = load_fixture("defillama_protocols")[0]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"protocols": []}, id="object"),
        pytest.param(["lido"], id="element-not-object"),
        pytest.param([{**LIDO, "slug": None}], id="no-slug"),
        pytest.param([{**LIDO, "name": ""}], id="empty-name"),
        pytest.param([{**LIDO, "chains": "Ethereum"}], id="chains-string"),
        pytest.param([{**LIDO, "chains": ["Ethereum", 1]}], id="chain-not-string"),
        pytest.param([{**LIDO, "category": 5}], id="category-number"),
        pytest.param([{**LIDO, "tvl": "33e9"}], id="tvl-string"),
        pytest.param([{**LIDO, "tvl": -1.0}], id="tvl-negative"),
        pytest.param([{**LIDO, "change_1d": math.inf}], id="change-inf"),
    ],
)
def test_bad_protocols_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError) as info:
        parse_protocols(payload)
    assert info.value.endpoint == "/protocols"


def test_parse_chain_tvl_fixture() -> None:
    points = parse_chain_tvl(load_fixture("defillama_historical_chain_tvl"))
    assert points[0] == TvlPoint(datetime(2024, 3, 22, tzinfo=UTC), 92017233120.41)
    assert points[-1].tvl_usd == 94511234567.8 and len(points) == 4
    # Dates sent as numeric strings (older answers) and out of order are accepted.
    shuffled = parse_chain_tvl([{"date": "1711152000", "tvl": 2}, {"date": 1711065600, "tvl": 1}])
    assert [p.tvl_usd for p in shuffled] == [1, 2]
    assert parse_chain_tvl([]) == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"tvl": []}, id="object"),
        pytest.param([[1711065600, 1.0]], id="point-array"),
        pytest.param([{"tvl": 1.0}], id="no-date"),
        pytest.param([{"date": "monday", "tvl": 1.0}], id="date-text"),
        pytest.param([{"date": 1711065600}], id="no-tvl"),
        pytest.param([{"date": 1711065600, "tvl": -5.0}], id="tvl-negative"),
        pytest.param([{"date": 1711065600, "tvl": "1"}], id="tvl-string"),
    ],
)
def test_bad_chain_tvl_raise(payload: Any) -> None:
    with pytest.raises(UpstreamPayloadError):
        parse_chain_tvl(payload)


def test_chain_tvl_paths() -> None:
    assert chain_tvl_path() == "/v2/historicalChainTvl"
    assert chain_tvl_path("Ethereum") == "/v2/historicalChainTvl/Ethereum"
    assert chain_tvl_path("BSC/x") == "/v2/historicalChainTvl/BSC%2Fx"


async def test_tvl_fetchers_against_simulator() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, UpstreamClient() as client:
            provider = sim.provider("defillama", categories=("MARKET_DATA", "DEFI"))
            protocols = await fetch_protocols(client, provider)
            assert [p.slug for p in protocols] == ["lido", "aave-v3", "fresh-vault"]
            everything = await fetch_chain_tvl(client, provider)
            ethereum = await fetch_chain_tvl(client, provider, "Ethereum")
            assert len(everything) == len(ethereum) == 4
            assert ethereum[0].tvl_usd < everything[0].tvl_usd
            assert [r[1] for r in sim.requests] == [
                "/protocols",
                "/v2/historicalChainTvl",
                "/v2/historicalChainTvl/Ethereum",
            ]
            with pytest.raises(UpstreamError) as info:
                await fetch_chain_tvl(client, provider, "Atlantis")
            assert info.value.status == 400
            sim.inject("defillama", Fault.wrong_shape(times=1))
            with pytest.raises(UpstreamPayloadError):
                await fetch_protocols(client, provider)


async def test_simulator_answers_like_the_fixtures() -> None:
    with trio.fail_after(10):
        async with run_simulator() as sim, httpx.AsyncClient(timeout=5) as http:
            coins = sim.base_url("defillama-coins")
            body = (
                await http.get(coins + "/prices/current/coingecko:bitcoin,coingecko:nope,x:0x1")
            ).json()
            expected = load_fixture("defillama_prices_current")["coins"]["coingecko:bitcoin"]
            assert list(body["coins"]) == ["coingecko:bitcoin"]  # unknown coins are left out
            assert body["coins"]["coingecko:bitcoin"].keys() == expected.keys()
            llama = sim.base_url("defillama")
            assert (await http.get(llama + "/v2/chains")).json()[0]["name"] == "Ethereum"
