"""Normalized market-wide and DeFi records, as the market sources parse them.

Like `gateway.models`, every record is a frozen dataclass built only from what an upstream sent:
an optional figure the upstream did not give is None, never a guess. Times are aware UTC
datetimes; money is USD. These records are returned by the on-demand fetch functions in
`gateway.sources.coingecko_market` and `gateway.sources.defillama`; they are not price ticks
and do not flow through the price bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["DefiProtocol", "MarketOverview", "TrendingCoin", "TvlPoint"]


@dataclass(frozen=True, slots=True)
class TrendingCoin:
    """One coin of CoinGecko's search-trending list (`/search/trending`).

    `rank` is the 1-based position in that list (search popularity over the last 24 h).
    `symbol` is the upstream's ticker, upper-cased; `canonical` is the gateway's symbol when the
    coin is in the asset table (tickers are not unique across coins, so only the CoinGecko id
    decides that), else None.
    """

    rank: int
    symbol: str
    name: str
    coingecko_id: str
    market_cap_rank: int | None
    canonical: str | None


@dataclass(frozen=True, slots=True)
class MarketOverview:
    """The whole crypto market at one moment (CoinGecko `/global`)."""

    total_market_cap_usd: float
    total_volume_24h_usd: float
    btc_dominance_pct: float
    market_cap_change_24h_pct: float | None
    active_cryptocurrencies: int | None
    updated_at: datetime
    provider: str


@dataclass(frozen=True, slots=True)
class DefiProtocol:
    """One DeFi protocol as DefiLlama lists it (`/protocols`).

    `tvl_usd` and `change_1d_pct` are None where DefiLlama has no figure (new or delisted
    protocols); `chains` keeps DefiLlama's order and spelling (`Ethereum`, `Arbitrum`, ...).
    """

    name: str
    slug: str
    chains: tuple[str, ...]
    tvl_usd: float | None
    change_1d_pct: float | None
    category: str | None


@dataclass(frozen=True, slots=True)
class TvlPoint:
    """Total value locked in DeFi (all chains, or one) on one UTC day (DefiLlama)."""

    date: datetime
    tvl_usd: float
