"""GraphQL for market-wide data: trending coins, the global overview, DeFi protocols and TVL.

These answers change slowly and come from one upstream call each, so they are fetched on
demand and cached per category TTL (`MarketCache`; the TTLs are settings, `ttl_trending`,
`ttl_overview`, `ttl_protocols`, `ttl_tvl`, from GATEWAY_TTL_*); identical concurrent requests
are coalesced by the upstream client. A cached answer is never served once its TTL has passed,
and every record says how old it is: `observedAt` and `ageSeconds` (which grows while the
answer is served from the cache). When the upstream fails and no fresh answer is cached, the
error says so (UPSTREAM_UNAVAILABLE); nothing is invented.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import strawberry
from strawberry.types import Info

from gateway.api.context import RequestContext
from gateway.config import ProviderConfig, Settings
from gateway.errors import BadUserInput, GatewayError, UpstreamUnconfigured
from gateway.market.cache import MarketCache
from gateway.models import utc_now
from gateway.sources.coingecko_market import fetch_global, fetch_trending
from gateway.sources.defillama import fetch_chain_tvl, fetch_protocols

__all__ = ["MarketQuery"]

T = TypeVar("T")

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


def _provider(info: Info, provider_id: str) -> tuple[Any, Any]:
    services = cast(RequestContext, info.context).services
    registry = services.registry
    if registry is None:
        raise GatewayError("the provider registry is not running")
    provider = registry.provider(provider_id)
    if provider is None or not provider.enabled:
        raise UpstreamUnconfigured(
            f"{provider_id} is not enabled in providers.toml", provider=provider_id
        )
    return registry.client, provider


def _key(info: Info, provider: ProviderConfig) -> str | None:
    """The provider's API key from the registry's secrets (None: keyless or not set)."""
    registry = cast(RequestContext, info.context).services.registry
    return registry.secrets.key_for(provider) if registry is not None else None


def _settings(info: Info) -> Settings:
    """The settings, which hold each category's cache TTL (`ttl_trending`, ...)."""
    return cast(RequestContext, info.context).services.settings


def _cache(info: Info) -> MarketCache:
    services = cast(RequestContext, info.context).services
    if services.market_cache is None:
        services.market_cache = MarketCache()
    return services.market_cache


@strawberry.type
class MarketQuery:
    @strawberry.field(
        description="Coins trending on CoinGecko over 24 h (cached: GATEWAY_TTL_TRENDING, 5 min)."
    )
    async def trending(self, info: Info) -> list[TrendingCoin]:
        client, provider = _provider(info, "coingecko")
        key = _key(info, provider)
        coins, at = await _cache(info).get(
            "trending",
            _settings(info).ttl_trending,
            lambda: fetch_trending(client, provider, key=key),
        )
        return [
            TrendingCoin(
                rank=c.rank,
                symbol=c.canonical or c.symbol,
                name=c.name,
                provider=provider.id,
                observed_at=at,
            )
            for c in coins
        ]

    @strawberry.field(
        description="Total market cap, volume, BTC dominance (cached: GATEWAY_TTL_OVERVIEW, 5 min)."
    )
    async def market_overview(self, info: Info) -> MarketOverview | None:
        client, provider = _provider(info, "coingecko")
        key = _key(info, provider)
        overview, _at = await _cache(info).get(
            "overview",
            _settings(info).ttl_overview,
            lambda: fetch_global(client, provider, key=key),
        )
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
        client, provider = _provider(info, "defillama")
        protocols, at = await _cache(info).get(
            "protocols", _settings(info).ttl_protocols, lambda: fetch_protocols(client, provider)
        )
        ranked = sorted(
            (p for p in protocols if p.tvl_usd is not None), key=lambda p: -(p.tvl_usd or 0)
        )
        return [
            DefiProtocol(
                name=p.name,
                slug=p.slug,
                chains=list(p.chains),
                tvl_usd=float(p.tvl_usd or 0.0),
                change_1d_pct=p.change_1d_pct,
                provider=provider.id,
                observed_at=at,
            )
            for p in ranked[:limit]
        ]

    @strawberry.field(
        description="Total DeFi TVL per day, last `days` days (cached: GATEWAY_TTL_TVL, 1 h)."
    )
    async def tvl_history(self, info: Info, days: int = 30) -> list[TvlPoint]:
        if not 1 <= days <= MAX_TVL_DAYS:
            raise BadUserInput(f"days must be between 1 and {MAX_TVL_DAYS}")
        client, provider = _provider(info, "defillama")
        points, _at = await _cache(info).get(
            "tvl", _settings(info).ttl_tvl, lambda: fetch_chain_tvl(client, provider)
        )
        since = utc_now() - timedelta(days=days)
        return [TvlPoint(at=p.date, tvl_usd=p.tvl_usd) for p in points if p.date >= since]
