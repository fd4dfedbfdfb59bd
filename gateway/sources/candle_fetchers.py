"""Registry of the sources that serve candles: provider id -> fetcher and the intervals it has.

Every fetcher follows the rules of `gateway.sources.candles` (same signature, `[start, end)`
window, closed candles marked `complete`). `gateway.history` walks the market-data pool in
order and asks each provider listed here for the intervals it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.config import ProviderConfig
from gateway.models import Candle
from gateway.sources import (
    binance,
    coinbase,
    coingecko_market,
    coinpaprika,
    cryptocompare,
    kraken,
)
from gateway.upstream import UpstreamClient

__all__ = ["CANDLE_SOURCES", "CandleFetcher", "CandleSource", "candle_source_for"]


class CandleFetcher(Protocol):
    """`fetch_candles` of a source module; `key` is the provider's API key (None: keyless)."""

    def __call__(
        self,
        client: UpstreamClient,
        provider: ProviderConfig,
        symbol: str,
        interval_seconds: int,
        start: datetime,
        end: datetime,
        *,
        now: datetime | None = None,
        key: str | None = None,
    ) -> Awaitable[list[Candle]]: ...


@dataclass(frozen=True)
class CandleSource:
    """A provider's candle fetcher and the candle lengths (seconds) it serves."""

    fetch: CandleFetcher
    intervals: frozenset[int]


CANDLE_SOURCES: dict[str, CandleSource] = {
    "binance": CandleSource(binance.fetch_candles, binance.CANDLE_INTERVALS),
    "kraken": CandleSource(kraken.fetch_candles, kraken.CANDLE_INTERVALS),
    "coinbase": CandleSource(coinbase.fetch_candles, coinbase.CANDLE_INTERVALS),
    "coingecko": CandleSource(coingecko_market.fetch_candles, coingecko_market.CANDLE_INTERVALS),
    "coinpaprika": CandleSource(coinpaprika.fetch_candles, coinpaprika.CANDLE_INTERVALS),
    "cryptocompare": CandleSource(cryptocompare.fetch_candles, cryptocompare.CANDLE_INTERVALS),
}


def candle_source_for(provider: ProviderConfig) -> CandleSource | None:
    """The candle source for a provider entry (by its `collector`, else its `id`), if any."""
    return CANDLE_SOURCES.get(provider.collector or provider.id)
