"""The on-demand market answers and which providers can give each one.

Each `Kind` names the pool category that answers it and, per provider family (a providers.toml
entry's `collector`, else its `id`, as in `gateway.sources.registry`), the fetcher that asks that
provider's documented endpoint. Only real equivalents are listed; where no other provider has
one, the kind has one fetcher and an outage is answered from the last good answer instead:

* `overview` (MARKET_DATA): CoinGecko `/global`, CoinPaprika `/global`, CoinMarketCap
  `/v1/global-metrics/quotes/latest`. CoinCap (assets, rates, exchanges, markets, candles)
  and CryptoCompare's min-api have no market-wide endpoint; summing their per-asset market
  caps would be a figure of our own making, not theirs, so they are not asked.
* `trending` (MARKET_DATA): CoinGecko `/search/trending` only. The one true equivalent among
  our providers, CoinMarketCap's `/v1/cryptocurrency/trending/latest` (ranked by its own search
  volume), is not on the Basic plan that providers.toml's key budget is sized for; CoinPaprika,
  CoinCap and CryptoCompare have no trending list, and a top-volume or top-gainers list is not
  one.
* `protocols`, `tvl` (DEFI): DefiLlama `/protocols` and `/v2/historicalChainTvl`, the only TVL
  source configured.

`dated(value)` is the upstream's own time for an answer (None: it gives none, and the fetch
time stands): the overview's `updated_at`, a TVL series' newest day. Must never list a
fetcher that answers a different question under the same name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from gateway.config import ProviderConfig
from gateway.market_models import DefiProtocol, MarketOverview, TrendingCoin, TvlPoint
from gateway.sources import coingecko_market, coinmarketcap, coinpaprika, defillama
from gateway.upstream import RetryPolicy, UpstreamClient

__all__ = ["KINDS", "OVERVIEW", "PROTOCOLS", "TRENDING", "TVL", "Fetcher", "Kind", "family"]

T = TypeVar("T")

# fetcher(client, provider, key=..., retry=...) -> the answer
Fetcher = Callable[..., Awaitable[T]]


@dataclass(frozen=True)
class Kind(Generic[T]):
    """One answer: its cache key (also its settings category), the pool category that serves
    it, a description for messages, its fetchers by provider family, and its upstream date."""

    key: str
    category: str
    what: str
    fetchers: Mapping[str, Fetcher[T]]
    dated: Callable[[T], datetime | None]

    def fetcher(self, provider: ProviderConfig) -> Fetcher[T] | None:
        return self.fetchers.get(family(provider))


def family(provider: ProviderConfig) -> str:
    """A provider entry's source family: its `collector`, else its `id`."""
    return provider.collector or provider.id


def _undated(value: Any) -> datetime | None:
    return None


def _overview_date(overview: MarketOverview) -> datetime | None:
    return overview.updated_at


def _newest_day(points: list[TvlPoint]) -> datetime | None:
    return max((p.date for p in points), default=None)


async def _chain_tvl(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[TvlPoint]:
    return await defillama.fetch_chain_tvl(client, provider, key=key, retry=retry)


TRENDING: Final[Kind[list[TrendingCoin]]] = Kind(
    "trending",
    "MARKET_DATA",
    "the trending list",
    {"coingecko": coingecko_market.fetch_trending},
    _undated,
)
OVERVIEW: Final[Kind[MarketOverview]] = Kind(
    "overview",
    "MARKET_DATA",
    "the market overview",
    {
        "coingecko": coingecko_market.fetch_global,
        "coinpaprika": coinpaprika.fetch_global,
        "coinmarketcap": coinmarketcap.fetch_global_metrics,
    },
    _overview_date,
)
PROTOCOLS: Final[Kind[list[DefiProtocol]]] = Kind(
    "protocols",
    "DEFI",
    "the DeFi protocol list",
    {"defillama": defillama.fetch_protocols},
    _undated,
)
TVL: Final[Kind[list[TvlPoint]]] = Kind(
    "tvl",
    "DEFI",
    "the TVL series",
    {"defillama": _chain_tvl},
    _newest_day,
)
KINDS: Final[Mapping[str, Kind[Any]]] = {k.key: k for k in (TRENDING, OVERVIEW, PROTOCOLS, TVL)}
