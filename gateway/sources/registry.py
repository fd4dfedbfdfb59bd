"""The one registry: which collector, stream client and candle fetcher each provider runs.

A providers.toml entry is matched by its `collector` (or, without one, its `id`). The
supervisor asks `collector_for` / `stream_for` what to start; candle history asks
`candle_source_for` who can fill a hole; the news side (gateway.news.service) asks
`news_collector_for` / `fear_greed_collector_for`. An id absent here is monitored (health checks,
pools) but collects nothing. Keys are spelled out, not read from each class's `name`, so the
map reads as a table; a test checks that each price collector's and stream's key equals its
class's `name` (one feed collector, `rss`, serves every feed's key).

This module imports every source module and nothing imports it from `gateway.sources`, so it
is the only place where all the source families meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.config import ProviderConfig
from gateway.sources import (
    binance,
    coinbase,
    coingecko_market,
    coinpaprika,
    cryptocompare,
    kraken,
)
from gateway.sources.alternative_me import FearAndGreedCollector
from gateway.sources.base import Collector
from gateway.sources.binance import BinanceCollector
from gateway.sources.binance_stream import BinanceStream
from gateway.sources.candles import CandleSource
from gateway.sources.coinbase import CoinbaseCollector
from gateway.sources.coinbase_stream import CoinbaseStream
from gateway.sources.coincap import CoinCapCollector
from gateway.sources.coingecko import CoinGeckoCollector
from gateway.sources.coinmarketcap import CoinMarketCapCollector
from gateway.sources.coinpaprika import CoinPaprikaCollector
from gateway.sources.cryptocompare import CryptoCompareCollector
from gateway.sources.cryptopanic import CryptoPanicCollector
from gateway.sources.defillama import DefiLlamaPriceCollector
from gateway.sources.feeds import FeedCollector
from gateway.sources.kraken import KrakenCollector
from gateway.sources.kraken_stream import KrakenStream
from gateway.sources.messari import MessariCollector
from gateway.sources.news_base import FearGreedCollector, NewsCollector
from gateway.sources.newsdata import NewsDataCollector
from gateway.sources.reddit import RedditCollector
from gateway.sources.streams import StreamClient

__all__ = [
    "CANDLE_SOURCES",
    "COLLECTORS",
    "FEAR_GREED_COLLECTORS",
    "NEWS_COLLECTORS",
    "SOURCES",
    "STREAMS",
    "SourceEntry",
    "candle_source_for",
    "collector_for",
    "entry_for",
    "fear_greed_collector_for",
    "news_collector_for",
    "stream_for",
]


@dataclass(frozen=True)
class SourceEntry:
    """What runs for one provider: a REST collector or a live stream, and a candle fetcher;
    or, for news and sentiment providers, a news collector or a Fear & Greed collector (their
    records take their own path, not the price ingest: gateway.news)."""

    collector: type[Collector] | None = None
    stream: type[StreamClient] | None = None
    candles: CandleSource | None = None
    news: type[NewsCollector] | None = None
    fear_greed: type[FearGreedCollector] | None = None


SOURCES: Final[Mapping[str, SourceEntry]] = {
    "coingecko": SourceEntry(
        CoinGeckoCollector,
        candles=CandleSource(coingecko_market.fetch_candles, coingecko_market.CANDLE_INTERVALS),
    ),
    "binance": SourceEntry(
        BinanceCollector, candles=CandleSource(binance.fetch_candles, binance.CANDLE_INTERVALS)
    ),
    "kraken": SourceEntry(
        KrakenCollector, candles=CandleSource(kraken.fetch_candles, kraken.CANDLE_INTERVALS)
    ),
    "coinbase": SourceEntry(
        CoinbaseCollector, candles=CandleSource(coinbase.fetch_candles, coinbase.CANDLE_INTERVALS)
    ),
    "coinpaprika": SourceEntry(
        CoinPaprikaCollector,
        candles=CandleSource(coinpaprika.fetch_candles, coinpaprika.CANDLE_INTERVALS),
    ),
    # DefiLlama prices live on coins.llama.fi, a host of their own: a provider entry of that
    # id (not `defillama`, api.llama.fi, which serves TVL) runs this collector.
    "defillama-coins": SourceEntry(DefiLlamaPriceCollector),
    # Tier B: polled only when their key is set (without it the supervisor never starts them).
    "coincap": SourceEntry(CoinCapCollector),
    "coinmarketcap": SourceEntry(CoinMarketCapCollector),
    "cryptocompare": SourceEntry(
        CryptoCompareCollector,
        candles=CandleSource(cryptocompare.fetch_candles, cryptocompare.CANDLE_INTERVALS),
    ),
    "messari": SourceEntry(MessariCollector),
    # Live exchange streams (WebSocket): run instead of a REST collector for their entry.
    "binance-stream": SourceEntry(stream=BinanceStream),
    "coinbase-stream": SourceEntry(stream=CoinbaseStream),
    "kraken-stream": SourceEntry(stream=KrakenStream),
    # News: the RSS/Atom feeds (any other feed runs with `collector = "rss"`), Reddit's JSON
    # listing, and CryptoPanic and NewsData once their keys are set.
    **{
        feed: SourceEntry(news=FeedCollector)
        for feed in (
            "rss",
            "coindesk",
            "cointelegraph",
            "decrypt",
            "bitcoinmagazine",
            "theblock",
            "cryptoslate",
            "beincrypto",
            "cryptobriefing",
        )
    },
    "reddit-cryptocurrency": SourceEntry(news=RedditCollector),
    "cryptopanic": SourceEntry(news=CryptoPanicCollector),
    "newsdata": SourceEntry(news=NewsDataCollector),
    # Sentiment: the Fear & Greed index (backfilled once, then kept current).
    "alternative-me": SourceEntry(fear_greed=FearAndGreedCollector),
}

COLLECTORS: Final[Mapping[str, type[Collector]]] = {
    key: entry.collector for key, entry in SOURCES.items() if entry.collector is not None
}
STREAMS: Final[Mapping[str, type[StreamClient]]] = {
    key: entry.stream for key, entry in SOURCES.items() if entry.stream is not None
}
CANDLE_SOURCES: Final[Mapping[str, CandleSource]] = {
    key: entry.candles for key, entry in SOURCES.items() if entry.candles is not None
}
NEWS_COLLECTORS: Final[Mapping[str, type[NewsCollector]]] = {
    key: entry.news for key, entry in SOURCES.items() if entry.news is not None
}
FEAR_GREED_COLLECTORS: Final[Mapping[str, type[FearGreedCollector]]] = {
    key: entry.fear_greed for key, entry in SOURCES.items() if entry.fear_greed is not None
}

_NOTHING: Final = SourceEntry()


def entry_for(provider: ProviderConfig) -> SourceEntry:
    """Everything registered for a provider entry (by its `collector`, else its `id`)."""
    return SOURCES.get(provider.collector or provider.id, _NOTHING)


def collector_for(provider: ProviderConfig) -> type[Collector] | None:
    """The REST collector class for a provider entry, if any."""
    return entry_for(provider).collector


def stream_for(provider: ProviderConfig) -> type[StreamClient] | None:
    """The stream client class for a provider entry, if any."""
    return entry_for(provider).stream


def candle_source_for(provider: ProviderConfig) -> CandleSource | None:
    """The candle fetcher (and the candle lengths it serves) for a provider entry, if any."""
    return entry_for(provider).candles


def news_collector_for(provider: ProviderConfig) -> type[NewsCollector] | None:
    """The news collector class for a provider entry, if any."""
    return entry_for(provider).news


def fear_greed_collector_for(provider: ProviderConfig) -> type[FearGreedCollector] | None:
    """The Fear & Greed collector class for a provider entry, if any."""
    return entry_for(provider).fear_greed
