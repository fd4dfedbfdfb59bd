"""On-demand market answers through the pools, against the simulator: failover at once (a 5xx,
a 429 with Retry-After: 30, a hang, data past its hard limit), pool usage counted, the last good
answer with a warning when every provider is down, UPSTREAM_UNAVAILABLE when there is none."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import trio

from gateway.config import ProviderConfig, Settings
from gateway.errors import PoolExhausted, StaleData, UpstreamError
from gateway.market.answers import UPSTREAM_FALLBACK, MarketAnswers
from gateway.market.cache import MarketCache
from gateway.market.freshness import STALE_DATA
from gateway.market.kinds import OVERVIEW, TRENDING, TVL
from gateway.models import utc_now
from gateway.upstream import Pool, RotationEvent, UpstreamClient
from tests.simulator.rest import API_KEYS, Fault, Simulator, run_simulator

# CoinGecko's /global `updated_at` in the fixture (2024-03-25), as the issue saw it served.
IN_2024 = 1711356013
OVERVIEW_PROVIDERS = ("coingecko", "coinpaprika", "coinmarketcap")


@dataclass
class Harness:
    sim: Simulator
    pool: Pool
    answers: MarketAnswers
    events: list[RotationEvent]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def warn(self, code: str, message: str, **fields: Any) -> None:
        self.warnings.append({"code": code, "message": message, **fields})

    def uses(self) -> dict[str, int]:
        return {m.id: m.uses for m in self.pool.members}


@asynccontextmanager
async def harness(
    overrides: dict[str, dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[Harness]:
    """A MARKET_DATA pool (CoinGecko, Binance, CoinPaprika, CoinMarketCap, in that order, all
    PRIORITY 1) and a DEFI pool (DefiLlama) on the simulator; no gateway around them."""
    overrides = overrides or {}
    async with run_simulator() as sim:

        def entry(provider_id: str, **extra: Any) -> ProviderConfig:
            return sim.provider(provider_id, **{**extra, **overrides.get(provider_id, {})})

        market = [entry(p) for p in ("coingecko", "binance", "coinpaprika", "coinmarketcap")]
        llama = entry("defillama", categories=("MARKET_DATA", "DEFI"))
        async with UpstreamClient(providers=[*market, llama]) as client:
            events: list[RotationEvent] = []
            pools = {
                "MARKET_DATA": Pool(
                    "market-data", "Market data", "MARKET_DATA", "PRIORITY", market,
                    guards=client, on_rotation=events.append,
                ),
                "DEFI": Pool("defi", "DeFi", "DEFI", "PRIORITY", [llama], guards=client),
            }  # fmt: skip
            answers = MarketAnswers(
                Settings(**settings).validated(),
                MarketCache(),
                client,
                pools.get,
                lambda provider: API_KEYS.get(provider.id),
            )
            yield Harness(sim, pools["MARKET_DATA"], answers, events)


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503), Fault.rate_limit(retry_after=30)],
    ids=["5xx", "429-retry-after-30"],
)
async def test_a_provider_that_is_down_is_a_rotation_not_an_outage(fault: Fault) -> None:
    with trio.fail_after(10):
        async with harness(ttl_overview=0.05) as h:
            h.sim.inject("coingecko", fault)
            started = time.monotonic()
            answer = await h.answers.answer(OVERVIEW, h.warn)
            assert time.monotonic() - started < 1.0  # never the 30 s of Retry-After
            assert answer.provider == "coinpaprika"
            assert answer.value.total_market_cap_usd > 0
            assert h.warnings == []
            # Every call counts on the pool; Binance has no overview and is not asked.
            assert h.uses() == {"coingecko": 1, "binance": 0, "coinpaprika": 1, "coinmarketcap": 0}
            assert h.pool.member("coingecko").failures == 1  # type: ignore[union-attr]
            assert h.sim.hits["coingecko"] == 1  # no retry of the same provider
            assert h.sim.hits["binance"] == 0
            assert h.pool.current == "coinpaprika"


async def test_a_retry_after_is_honoured_by_skipping_the_provider() -> None:
    with trio.fail_after(10):
        async with harness(ttl_overview=0.05) as h:
            h.sim.inject("coingecko", Fault.rate_limit(retry_after=30, times=1))
            assert (await h.answers.answer(OVERVIEW, h.warn)).provider == "coinpaprika"
            await trio.sleep(0.1)  # past the TTL: asked again
            assert (await h.answers.answer(OVERVIEW, h.warn)).provider == "coinpaprika"
            assert h.sim.hits["coingecko"] == 1  # still backing off: not asked
            assert h.uses()["coinpaprika"] == 2


async def test_an_answer_is_reused_for_its_ttl() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            first = await h.answers.answer(OVERVIEW, h.warn)
            again = await h.answers.answer(OVERVIEW, h.warn)
            assert again is first and first.provider == "coingecko"
            assert h.sim.hits["coingecko"] == 1 and h.uses()["coingecko"] == 1


async def test_every_provider_down_serves_the_last_answer_with_a_warning() -> None:
    with trio.fail_after(10):
        async with harness(ttl_overview=0.05) as h:
            first = await h.answers.answer(OVERVIEW, h.warn)
            for provider in OVERVIEW_PROVIDERS:
                h.sim.inject(provider, Fault.status(502))
            await trio.sleep(0.1)  # the TTL has passed: the pool is asked, and fails
            started = time.monotonic()
            served = await h.answers.answer(OVERVIEW, h.warn)
            assert time.monotonic() - started < 1.0
            assert served is first
            (warning,) = h.warnings
            assert warning["code"] == UPSTREAM_FALLBACK and warning["stale"] is True
            assert warning["provider"] == "coingecko" and warning["category"] == "overview"
            assert warning["ageSeconds"] >= 0.0 and "502" in warning["message"]
            hits = sum(h.sim.hits[p] for p in OVERVIEW_PROVIDERS)
            # Right after, clients get the same answer without another round of requests.
            assert await h.answers.answer(OVERVIEW, h.warn) is first
            assert sum(h.sim.hits[p] for p in OVERVIEW_PROVIDERS) == hits
            assert [w["code"] for w in h.warnings] == [UPSTREAM_FALLBACK] * 2


async def test_every_provider_down_with_nothing_before_is_upstream_unavailable() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            for provider in OVERVIEW_PROVIDERS:
                h.sim.inject(provider, Fault.status(503))
            with pytest.raises(PoolExhausted) as caught:
                await h.answers.answer(OVERVIEW, h.warn)
            assert caught.value.code == "UPSTREAM_UNAVAILABLE"
            assert [p for p, _, _ in caught.value.errors] == list(OVERVIEW_PROVIDERS)


async def test_trending_has_no_second_provider_so_an_outage_is_unavailable() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            h.sim.inject("coingecko", Fault.status(503))
            with pytest.raises(PoolExhausted) as caught:
                await h.answers.answer(TRENDING, h.warn)
            assert [p for p, _, _ in caught.value.errors] == ["coingecko"]
            assert h.uses() == {"coingecko": 1, "binance": 0, "coinpaprika": 0, "coinmarketcap": 0}


async def test_a_hanging_provider_is_left_after_its_timeout() -> None:
    with trio.fail_after(10):
        async with harness({"coingecko": {"timeout_seconds": 0.3}}) as h:
            h.sim.inject("coingecko", Fault.hang())
            answer = await h.answers.answer(OVERVIEW, h.warn)
            assert answer.provider == "coinpaprika"


async def test_the_whole_answer_is_bounded_in_time() -> None:
    with trio.fail_after(10):
        async with harness(market_answer_seconds=0.5) as h:
            for provider in OVERVIEW_PROVIDERS:
                h.sim.inject(provider, Fault.hang())
            started = time.monotonic()
            with pytest.raises(UpstreamError, match=r"within 0\.5 s") as caught:
                await h.answers.answer(OVERVIEW, h.warn)
            assert time.monotonic() - started < 1.5
            assert caught.value.code == "UPSTREAM_UNAVAILABLE"


async def test_data_past_its_hard_limit_counts_as_a_failure_and_fails_over() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            h.sim.set_market_time("coingecko", IN_2024)
            answer = await h.answers.answer(OVERVIEW, h.warn)
            assert answer.provider == "coinpaprika"
            assert h.pool.member("coingecko").failures == 1  # type: ignore[union-attr]
            assert h.warnings == []


async def test_data_past_its_hard_limit_everywhere_is_refused_with_stale_data() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            for provider in OVERVIEW_PROVIDERS:
                h.sim.set_market_time(provider, IN_2024 + OVERVIEW_PROVIDERS.index(provider))
            with pytest.raises(StaleData) as caught:
                await h.answers.answer(OVERVIEW, h.warn)
            error = caught.value
            assert error.code == "STALE_DATA"
            assert error.age_seconds > 8e7 and error.max_age_seconds == 86_400
            assert error.provider == "coinmarketcap"  # the least old of them


async def test_old_data_is_served_with_its_age() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            h.sim.set_market_time("coingecko", time.time() - 1200)
            answer = await h.answers.answer(OVERVIEW, h.warn)
            assert answer.provider == "coingecko"
            (warning,) = h.warnings
            assert warning["code"] == STALE_DATA and warning["category"] == "overview"
            assert warning["ageSeconds"] == pytest.approx(1200, abs=5)


async def test_a_cached_answer_past_its_hard_limit_is_fetched_again_not_served() -> None:
    with trio.fail_after(10):
        async with harness(ttl_trending=3600, fresh_trending=0.1, max_age_trending=0.2) as h:
            first = await h.answers.answer(TRENDING, h.warn)
            await trio.sleep(0.25)
            again = await h.answers.answer(TRENDING, h.warn)
            assert again is not first and again.observed_at > first.observed_at
            assert h.sim.hits["coingecko"] == 2
            # Past the freshness limit but within the hard one: served, with a warning.
            await trio.sleep(0.12)
            assert await h.answers.answer(TRENDING, h.warn) is again
            assert [w["code"] for w in h.warnings] == [STALE_DATA]


async def test_a_change_of_provider_is_reported_as_the_pools_rotation() -> None:
    with trio.fail_after(10):
        async with harness(ttl_overview=0.05) as h:
            assert (await h.answers.answer(OVERVIEW, h.warn)).provider == "coingecko"
            h.sim.inject("coingecko", Fault.status(500))
            await trio.sleep(0.1)
            assert (await h.answers.answer(OVERVIEW, h.warn)).provider == "coinpaprika"
            assert [(e.pool, e.from_provider, e.to_provider, e.reason) for e in h.events] == [
                ("market-data", "coingecko", "coinpaprika", "failure")
            ]


async def test_the_tvl_series_is_dated_by_its_newest_day() -> None:
    with trio.fail_after(10):
        async with harness() as h:
            h.sim.set_market_time("defillama", (utc_now() - timedelta(days=3)).timestamp())
            current = await h.answers.answer(TVL, h.warn)
            assert current.provider == "defillama"
            assert [w["code"] for w in h.warnings] == [STALE_DATA]  # fresh for 2 days
            assert h.warnings[0]["ageSeconds"] >= 3 * 86400
        async with harness() as h:
            h.sim.set_market_time("defillama", (utc_now() - timedelta(days=10)).timestamp())
            with pytest.raises(StaleData, match=r"the TVL series is 1[01] days old"):
                await h.answers.answer(TVL, h.warn)
