"""Market-wide queries against the simulator: trending, overview, DeFi protocols, TVL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from gateway.config import ProvidersFile
from gateway.nursery import RunningGateway
from tests.conftest import StartGateway
from tests.simulator.rest import Fault, Simulator, run_simulator


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


async def test_a_cached_answer_says_its_age_and_expires_with_its_ttl(
    start_gateway: StartGateway,
) -> None:
    query = (
        "{ trending { observedAt ageSeconds } defiProtocols(limit: 1) { observedAt ageSeconds } }"
    )
    async with run_simulator() as sim:
        providers = ProvidersFile(
            (
                sim.provider("coingecko", interval_seconds=3600, symbols=("BTC",)),
                sim.provider("defillama", categories=("MARKET_DATA", "DEFI")),
            )
        )
        # GATEWAY_TTL_TRENDING=1 (settings.ttl_trending); protocols keep their hour.
        running = await start_gateway(providers=providers, ttl_trending=1.0)
        first = (await graphql(running, query))["data"]
        hits = (sim.hits["coingecko"], sim.hits["defillama"])
        await trio.sleep(0.4)
        cached = (await graphql(running, query))["data"]
        assert (sim.hits["coingecko"], sim.hits["defillama"]) == hits  # both from the cache
        for field in ("trending", "defiProtocols"):
            assert cached[field][0]["observedAt"] == first[field][0]["observedAt"]
            assert cached[field][0]["ageSeconds"] >= first[field][0]["ageSeconds"] + 0.35
        assert cached["trending"][0]["ageSeconds"] < 1.0  # never older than the TTL
        await trio.sleep(0.7)
        expired = (await graphql(running, query))["data"]
        assert sim.hits["coingecko"] == hits[0] + 1 and sim.hits["defillama"] == hits[1]
        assert expired["trending"][0]["observedAt"] > first["trending"][0]["observedAt"]
        assert expired["trending"][0]["ageSeconds"] < 0.5
        assert expired["defiProtocols"][0]["ageSeconds"] >= 1.0  # still the cached list


async def test_the_overview_says_the_age_of_the_upstream_figure(
    market: tuple[RunningGateway, Simulator],
) -> None:
    running, _sim = market
    body = await graphql(running, "{ marketOverview { observedAt ageSeconds } }")
    overview = body["data"]["marketOverview"]
    observed = datetime.fromisoformat(overview["observedAt"])
    assert overview["ageSeconds"] == pytest.approx(
        (datetime.now(UTC) - observed).total_seconds(), abs=5
    )
