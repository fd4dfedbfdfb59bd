"""GraphQL for market-wide data: trending coins, the global overview, DeFi protocols and TVL.

The resolvers only shape answers: which providers are asked (the MARKET_DATA and DEFI pools,
with failover), caching per category TTL (GATEWAY_TTL_*), the fallback to the last good answer
with an `UPSTREAM_FALLBACK` warning, and the freshness rules (a `STALE_DATA` warning past
GATEWAY_FRESH_*, the error STALE_DATA past GATEWAY_MAX_AGE_*) all live in
`gateway.market.answers`. Every record says how old it is: `observedAt` and `ageSeconds`. When
nothing can be served the error says why (UPSTREAM_UNAVAILABLE, STALE_DATA); nothing is
invented.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.errors import BadUserInput, GatewayError
from gateway.market.answers import MarketAnswers
from gateway.market.cache import MarketCache
from gateway.market.freshness import Warn
from gateway.market.kinds import OVERVIEW, PROTOCOLS, TRENDING, TVL
from gateway.market.stored import stored_answer
from gateway.models import utc_now

__all__ = ["MarketQuery"]

MAX_PROTOCOLS = 500
MAX_TVL_DAYS = 3650


_AGE = "Seconds between observedAt and this response; grows while served from the cache."


def _age(observed_at: datetime) -> float:
    return max(0.0, (utc_now() - observed_at).total_seconds())


@strawberry.type(description="A coin people are searching for (CoinGecko's trending list).")
class TrendingCoin:
    rank: int
    symbol: str
    name: str
    provider: str
    observed_at: datetime = strawberry.field(description="When the gateway fetched the list.")

    @strawberry.field(description=_AGE)
    def age_seconds(self) -> float:
        return _age(self.observed_at)


@strawberry.type(description="The whole crypto market at a glance.")
class MarketOverview:
    total_market_cap_usd: float
    total_volume_24h_usd: float | None
    btc_dominance_pct: float | None
    provider: str
    observed_at: datetime = strawberry.field(description="When the upstream computed it.")

    @strawberry.field(description=_AGE)
    def age_seconds(self) -> float:
        return _age(self.observed_at)


@strawberry.type(description="A DeFi protocol and the value locked in it (DefiLlama).")
class DefiProtocol:
    name: str
    slug: str
    chains: list[str]
    tvl_usd: float
    change_1d_pct: float | None
    provider: str
    observed_at: datetime = strawberry.field(description="When the gateway fetched the list.")

    @strawberry.field(description=_AGE)
    def age_seconds(self) -> float:
        return _age(self.observed_at)


@strawberry.type(description="Total value locked across DeFi on one day (DefiLlama).")
class TvlPoint:
    at: datetime
    tvl_usd: float


def _answers(info: Info) -> MarketAnswers:
    """The market answers over the shared cache (`gateway.market.answers` decides everything)."""
    services = cast(RequestContext, info.context).services
    registry = services.registry
    if registry is None:
        raise GatewayError("the provider registry is not running")
    if services.market_cache is None:
        services.market_cache = MarketCache()
    return MarketAnswers(
        services.settings,
        services.market_cache,
        registry.client,
        registry.pool_for,
        registry.secrets.key_for,
        partial(stored_answer, services.storage),
    )


def _warn(info: Info) -> Warn:
    return cast(RequestContext, info.context).warn


@strawberry.type
class MarketQuery:
    @strawberry.field(
        description="Coins trending on CoinGecko over 24 h (cached: GATEWAY_TTL_TRENDING, 5 min)."
    )
    async def trending(self, info: Info) -> list[TrendingCoin]:
        answer = await _answers(info).answer(TRENDING, _warn(info))
        return [
            TrendingCoin(
                rank=c.rank,
                symbol=c.canonical or c.symbol,
                name=c.name,
                provider=answer.provider,
                observed_at=answer.observed_at,
            )
            for c in answer.value
        ]

    @strawberry.field(
        description="Total market cap, volume, BTC dominance (cached: GATEWAY_TTL_OVERVIEW, 5 min)."
    )
    async def market_overview(self, info: Info) -> MarketOverview | None:
        answer = await _answers(info).answer(OVERVIEW, _warn(info))
        overview = answer.value
        return MarketOverview(
            total_market_cap_usd=overview.total_market_cap_usd,
            total_volume_24h_usd=overview.total_volume_24h_usd,
            btc_dominance_pct=overview.btc_dominance_pct,
            provider=overview.provider,
            observed_at=overview.updated_at,
        )

    @strawberry.field(
        description="The largest DeFi protocols by TVL (cached: GATEWAY_TTL_PROTOCOLS, 1 h)."
    )
    async def defi_protocols(self, info: Info, limit: int = 20) -> list[DefiProtocol]:
        if not 1 <= limit <= MAX_PROTOCOLS:
            raise BadUserInput(f"limit must be between 1 and {MAX_PROTOCOLS}")
        answer = await _answers(info).answer(PROTOCOLS, _warn(info))
        ranked = sorted(
            (p for p in answer.value if p.tvl_usd is not None), key=lambda p: -(p.tvl_usd or 0)
        )
        return [
            DefiProtocol(
                name=p.name,
                slug=p.slug,
                chains=list(p.chains),
                tvl_usd=float(p.tvl_usd or 0.0),
                change_1d_pct=p.change_1d_pct,
                provider=answer.provider,
                observed_at=answer.observed_at,
            )
            for p in ranked[:limit]
        ]

    @strawberry.field(
        description="Total DeFi TVL per day, last `days` days (cached: GATEWAY_TTL_TVL, 1 h)."
    )
    async def tvl_history(self, info: Info, days: int = 30) -> list[TvlPoint]:
        if not 1 <= days <= MAX_TVL_DAYS:
            raise BadUserInput(f"days must be between 1 and {MAX_TVL_DAYS}")
        answer = await _answers(info).answer(TVL, _warn(info))
        since = utc_now() - timedelta(days=days)
        return [TvlPoint(at=p.date, tvl_usd=p.tvl_usd) for p in answer.value if p.date >= since]
