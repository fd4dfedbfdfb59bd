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


# -- failover through the market-data pool, fallback, freshness (issue 10, items 3 and 5) ------

POOLS = "{ pools { id members { provider { id } uses successes failures } } }"
# CoinGecko's /global `updated_at` in the fixture (2024-03-25): what the issue saw served.
IN_2024 = 1711356013


def member_stats(body: dict[str, Any], pool_id: str) -> dict[str, tuple[int, int, int]]:
    (pool,) = [p for p in body["data"]["pools"] if p["id"] == pool_id]
    return {
        m["provider"]["id"]: (m["uses"], m["successes"], m["failures"]) for m in pool["members"]
    }


@pytest.fixture
async def overview_sources(start_gateway: StartGateway) -> Any:
    """CoinGecko, then CoinPaprika, in the default market-data pool (PRIORITY, file order);
    collectors poll once an hour. Settings overrides are passed through `request.param`."""

    async def start(**settings: Any) -> tuple[RunningGateway, Simulator]:
        providers = ProvidersFile(
            (
                sim.provider("coingecko", interval_seconds=3600, symbols=("BTC",)),
                sim.provider("coinpaprika", interval_seconds=3600, symbols=("BTC",)),
            )
        )
        running = await start_gateway(providers=providers, **settings)
        with trio.fail_after(5):  # the collectors' first polls are done: faults are ours
            await sim.wait_for_hits("coingecko", 1)
            await sim.wait_for_hits("coinpaprika", 1)
        return running, sim

    async with run_simulator() as sim:
        yield start


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503), Fault.rate_limit(retry_after=30)],
    ids=["coingecko-5xx", "coingecko-429-retry-after-30"],
)
async def test_market_overview_fails_over_to_the_next_provider_at_once(
    overview_sources: Any, fault: Fault
) -> None:
    running, sim = await overview_sources()
    sim.inject("coingecko", fault)
    started = trio.current_time()
    with trio.fail_after(5):
        body = await graphql(running, "{ marketOverview { totalMarketCapUsd provider } }")
    assert trio.current_time() - started < 2.0  # not the 30 s Retry-After
    assert "errors" not in body, body
    assert body["data"]["marketOverview"]["provider"] == "coinpaprika"
    assert body["data"]["marketOverview"]["totalMarketCapUsd"] > 0
    stats = member_stats(await graphql(running, POOLS), "market-data")
    assert stats["coingecko"] == (1, 0, 1) and stats["coinpaprika"] == (1, 1, 0)


async def test_every_provider_down_answers_from_the_last_overview_with_a_warning(
    overview_sources: Any,
) -> None:
    running, sim = await overview_sources(ttl_overview=0.2)
    first = await graphql(running, "{ marketOverview { totalMarketCapUsd provider observedAt } }")
    assert first["data"]["marketOverview"]["provider"] == "coingecko"
    for provider in ("coingecko", "coinpaprika"):
        sim.inject(provider, Fault.status(503))
    await trio.sleep(0.3)
    with trio.fail_after(5):
        body = await graphql(
            running, "{ marketOverview { totalMarketCapUsd provider observedAt } }"
        )
    assert "errors" not in body, body
    assert body["data"] == first["data"]
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "UPSTREAM_FALLBACK" and warning["stale"] is True
    assert warning["provider"] == "coingecko"


async def test_every_provider_down_with_no_answer_before_is_upstream_unavailable(
    overview_sources: Any,
) -> None:
    running, sim = await overview_sources()
    for provider in ("coingecko", "coinpaprika"):
        sim.inject(provider, Fault.rate_limit(retry_after=30))
    with trio.fail_after(5):
        body = await graphql(running, "{ marketOverview { totalMarketCapUsd } }")
    assert body["data"] == {"marketOverview": None}
    error = body["errors"][0]["extensions"]
    assert error["code"] == "UPSTREAM_UNAVAILABLE"
    assert [p["provider"] for p in error["providers"]] == ["coingecko", "coinpaprika"]


async def test_an_overview_from_2024_is_refused_with_stale_data(
    market: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = market  # CoinGecko is the only provider with an overview here
    sim.set_market_time("coingecko", IN_2024)
    body = await graphql(running, "{ marketOverview { observedAt ageSeconds } }")
    assert body["data"] == {"marketOverview": None}
    error = body["errors"][0]["extensions"]
    assert error["code"] == "STALE_DATA"
    assert error["ageSeconds"] > 8e7 and error["maxAgeSeconds"] == 86_400
    assert error["provider"] == "coingecko"


async def test_an_overview_older_than_fresh_carries_its_age(
    market: tuple[RunningGateway, Simulator],
) -> None:
    running, sim = market
    sim.set_market_time("coingecko", datetime.now(UTC).timestamp() - 1800)
    body = await graphql(running, "{ marketOverview { ageSeconds } }")
    assert "errors" not in body, body
    (warning,) = body["extensions"]["warnings"]
    assert warning["code"] == "STALE_DATA" and warning["category"] == "overview"
    assert warning["ageSeconds"] == pytest.approx(1800, abs=10)
    assert body["data"]["marketOverview"]["ageSeconds"] == pytest.approx(1800, abs=10)


async def test_a_cached_trending_list_is_never_served_past_its_hard_limit(
    start_gateway: StartGateway,
) -> None:
    async with run_simulator() as sim:
        providers = ProvidersFile(
            (sim.provider("coingecko", interval_seconds=3600, symbols=("BTC",)),)
        )
        running = await start_gateway(
            providers=providers, ttl_trending=3600, fresh_trending=0.2, max_age_trending=0.5
        )
        query = "{ trending { observedAt ageSeconds } }"
        first = await graphql(running, query)
        await trio.sleep(0.3)
        stale = await graphql(running, query)  # cached, past fresh: served with its age
        assert stale["data"] == {"trending": stale["data"]["trending"]}
        assert (
            stale["data"]["trending"][0]["observedAt"] == first["data"]["trending"][0]["observedAt"]
        )
        (warning,) = stale["extensions"]["warnings"]
        assert warning["code"] == "STALE_DATA" and warning["ageSeconds"] >= 0.3
        sim.inject("coingecko", Fault.status(503))
        await trio.sleep(0.3)  # now past the hard limit, and CoinGecko is down
        refused = await graphql(running, query)
        assert refused["data"] is None or refused["data"] == {"trending": None}
        assert refused["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
