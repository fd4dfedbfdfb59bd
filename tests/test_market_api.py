"""Market-wide queries against the simulator: trending, overview, DeFi protocols, TVL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.config import ProvidersFile
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway
from tests.upstream.simulator import Fault, Simulator, run_simulator


async def graphql(running: RunningGateway, query: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=running.urls[0], timeout=10) as client:
        return (await client.post("/graphql", json={"query": query})).json()  # type: ignore[no-any-return]


@pytest.fixture
async def market(start_gateway: StartGateway) -> Any:
    async with run_simulator() as sim:
        providers = ProvidersFile(
            (
                sim.provider("coingecko", interval_seconds=3600, symbols=("BTC",)),
                sim.provider("defillama", categories=("MARKET_DATA", "DEFI")),
            )
        )
        running = await start_gateway(providers=providers)
        yield running, sim


async def test_trending_and_overview_are_cached(market: tuple[RunningGateway, Simulator]) -> None:
    running, sim = market
    body = await graphql(
        running,
        "{ trending { rank symbol name provider } marketOverview { totalMarketCapUsd btcDominancePct provider } }",
    )
    assert "errors" not in body, body
    trending = body["data"]["trending"]
    assert trending and trending[0]["rank"] == 1 and trending[0]["provider"] == "coingecko"
    assert body["data"]["marketOverview"]["totalMarketCapUsd"] > 0
    hits = sim.hits["coingecko"]
    await graphql(running, "{ trending { rank } marketOverview { provider } }")
    assert sim.hits["coingecko"] == hits  # served from the cache


async def test_defi_protocols_and_tvl_history(market: tuple[RunningGateway, Simulator]) -> None:
    running, _sim = market
    body = await graphql(
        running,
        "{ defiProtocols(limit: 3) { name slug chains tvlUsd provider } tvlHistory(days: 3650) { at tvlUsd } }",
    )
    assert "errors" not in body, body
    protocols = body["data"]["defiProtocols"]
    assert 1 <= len(protocols) <= 3
    tvls = [p["tvlUsd"] for p in protocols]
    assert tvls == sorted(tvls, reverse=True)
    assert body["data"]["tvlHistory"] and all(p["tvlUsd"] > 0 for p in body["data"]["tvlHistory"])
    bad = await graphql(running, "{ defiProtocols(limit: 0) { name } }")
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_upstream_failure_is_reported_not_invented(
    market: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = market
    sim.inject("coingecko", Fault.status(503))
    body = await graphql(running, "{ marketOverview { totalMarketCapUsd } }")
    assert body["data"] == {"marketOverview": None}
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
