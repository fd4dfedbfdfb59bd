"""CoinGecko market-wide data on demand: trending coins, the global overview, and OHLC candles.

Docs: https://docs.coingecko.com/v3.0.1/reference/trending-search, .../crypto-global and
.../coins-id-ohlc. These are fetched when asked for, not polled; they share the `coingecko`
provider entry (and its rate limit) with the price collector, and send the same optional demo
key: each fetch takes the provider's `key` (from `gateway.providers.upstream_keys`), which the
client puts in the `x-cg-demo-api-key` header as providers.toml's `auth` says.

* `GET /search/trending` answers `{"coins": [{"item": {"id": "pepe", "name": "Pepe",
  "symbol": "PEPE", "market_cap_rank": 32, "score": 0, ...}}, ...], "nfts": [...], ...}`,
  ordered by search popularity over the last 24 h.
* `GET /global` answers `{"data": {"active_cryptocurrencies": 13690, "total_market_cap":
  {"usd": 2.7e12, ...}, "total_volume": {"usd": 9.1e10, ...}, "market_cap_percentage":
  {"btc": 49.1, ...}, "market_cap_change_percentage_24h_usd": 1.72, "updated_at": 1711356000}}`.
* `GET /coins/{id}/ohlc?vs_currency=usd&days=N` answers `[[time_ms, open, high, low, close],
  ...]` where the time is the candle's *close*. The candle length is not chosen but follows
  `days`: 1-2 days give 30-minute candles, 3-30 days 4-hour ones (31+ days: 4-day candles,
  which do not sit on the epoch grid and are not offered). `days` takes the documented values
  1, 7, 14, 30, 90, 180, 365. No volume is given. A row whose close time is off the grid (the
  still-open candle may be stamped "now") is skipped rather than moved onto it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.market_models import MarketOverview, TrendingCoin
from gateway.models import Candle, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import number_or_none
from gateway.symbols import coingecko_id, normalize_symbol, symbol_for_coingecko_id
from gateway.upstream import RetryPolicy, UpstreamClient

__all__ = [
    "CANDLE_INTERVALS",
    "GLOBAL_ENDPOINT",
    "PROVIDER_ID",
    "TRENDING_ENDPOINT",
    "fetch_candles",
    "fetch_global",
    "fetch_trending",
    "ohlc_days",
    "ohlc_path",
    "parse_global",
    "parse_ohlc",
    "parse_trending",
]

PROVIDER_ID: Final = "coingecko"
TRENDING_ENDPOINT: Final = "/search/trending"
GLOBAL_ENDPOINT: Final = "/global"
_DAYS: Final = (1, 7, 14, 30, 90, 180, 365)
CANDLE_INTERVALS: Final = frozenset({1800, 14400})


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def _error_envelope(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    status = payload.get("status")
    if isinstance(status, dict) and ("error_message" in status or "error_code" in status):
        return f"{status.get('error_code')}: {status.get('error_message')}"
    error = payload.get("error")
    return error if isinstance(error, str) else None


def _rank(value: Any) -> int | None:
    number = number_or_none(value)
    if number is None or not number.is_integer() or number < 1:
        return None
    return int(number)


def parse_trending(payload: Any, *, provider: str = PROVIDER_ID) -> list[TrendingCoin]:
    """TrendingCoins from `/search/trending`, ranked 1.. in the order given.

    `coins` must be an array of `{"item": {...}}` with string `id`, `name` and `symbol`;
    `market_cap_rank` may be null or absent. NFTs and categories are not read.
    """
    fail = _fail_for(provider, TRENDING_ENDPOINT)
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")
    coins = payload.get("coins") if isinstance(payload, dict) else None
    if not isinstance(coins, list):
        raise fail("expected an object with a 'coins' array")
    result: list[TrendingCoin] = []
    for index, wrapper in enumerate(coins):
        item = wrapper.get("item") if isinstance(wrapper, dict) else None
        if not isinstance(item, dict):
            raise fail(f"coin {index}: expected {{'item': {{...}}}}")
        coin_id, name, symbol = item.get("id"), item.get("name"), item.get("symbol")
        if not (isinstance(coin_id, str) and coin_id and isinstance(name, str) and name) or not (
            isinstance(symbol, str) and symbol
        ):
            raise fail(f"coin {index}: missing id, name or symbol")
        result.append(
            TrendingCoin(
                rank=index + 1,
                symbol=symbol.upper(),
                name=name,
                coingecko_id=coin_id,
                market_cap_rank=_rank(item.get("market_cap_rank")),
                canonical=symbol_for_coingecko_id(coin_id),
            )
        )
    return result


def parse_global(payload: Any, *, provider: str = PROVIDER_ID) -> MarketOverview:
    """The MarketOverview in a `/global` response; raises UpstreamPayloadError.

    `total_market_cap.usd` and `total_volume.usd` must be finite positive numbers,
    `market_cap_percentage.btc` a number in 0..100 and `updated_at` Unix seconds; the 24 h cap
    change and the coin count are optional (-> None).
    """
    fail = _fail_for(provider, GLOBAL_ENDPOINT)
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise fail("expected an object with a 'data' object")

    def usd(key: str) -> float:
        table = data.get(key)
        return cdl.price(
            table.get("usd") if isinstance(table, dict) else None, fail, key, strings=False
        )

    shares = data.get("market_cap_percentage")
    btc = number_or_none(shares.get("btc")) if isinstance(shares, dict) else None
    if btc is None or not 0 <= btc <= 100:
        raise fail(f"invalid market_cap_percentage.btc {btc!r}")
    change = number_or_none(data.get("market_cap_change_percentage_24h_usd"))
    updated = number_or_none(data.get("updated_at"))
    if updated is None:
        raise fail(f"invalid updated_at {data.get('updated_at')!r}")
    return MarketOverview(
        total_market_cap_usd=usd("total_market_cap"),
        total_volume_24h_usd=usd("total_volume"),
        btc_dominance_pct=btc,
        market_cap_change_24h_pct=change if change is not None and math.isfinite(change) else None,
        active_cryptocurrencies=_rank(data.get("active_cryptocurrencies")),
        updated_at=cdl.from_epoch(updated, fail, "updated_at"),
        provider=provider,
    )


async def fetch_trending(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[TrendingCoin]:
    """CoinGecko's trending coins, most searched first. `retry` overrides the client's retry
    policy (a pool that fails over passes `NO_RETRY`, so a 429 is not waited out)."""
    provider_id = provider.id
    coins: list[TrendingCoin] = await client.request_parsed(
        provider,
        TRENDING_ENDPOINT,
        lambda payload: parse_trending(payload, provider=provider_id),
        key=key,
        retry=retry,
    )
    return coins


async def fetch_global(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> MarketOverview:
    """The global market overview (total cap, 24 h volume, BTC dominance); `retry` as above."""
    provider_id = provider.id
    overview: MarketOverview = await client.request_parsed(
        provider,
        GLOBAL_ENDPOINT,
        lambda payload: parse_global(payload, provider=provider_id),
        key=key,
        retry=retry,
    )
    return overview


# -- candles (on demand) -----------------------------------------------------------------------


def ohlc_path(coin_id: str) -> str:
    return f"/coins/{coin_id}/ohlc"


def _interval_for_days(days: int) -> int:
    """CoinGecko's automatic candle length for a `days` value (see the module docstring)."""
    return 1800 if days <= 2 else 14400 if days <= 30 else 4 * 86400


def ohlc_days(interval_seconds: int, start: datetime, now: datetime) -> int:
    """The smallest documented `days` that gives `interval_seconds` candles reaching back to
    `start` (or, if none reaches that far, the largest that gives that candle length)."""
    candidates = [d for d in _DAYS if _interval_for_days(d) == interval_seconds]
    needed = (now - start).total_seconds() / 86400
    return next((d for d in candidates if d >= needed), candidates[-1])


def parse_ohlc(
    payload: Any,
    symbol: str,
    coin_id: str,
    interval_seconds: int,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Candles from a `/coins/{id}/ohlc` response (close-time stamped), oldest first.

    Each row must be `[time_ms, open, high, low, close]` of JSON numbers; one bad row rejects
    the response; a row whose close time is off the interval grid is skipped.
    """
    fail = _fail_for(provider, ohlc_path(coin_id))
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")
    if not isinstance(payload, list):
        raise fail(f"expected an array of candles, got {type(payload).__name__}")
    result: list[Candle] = []
    for index, row in enumerate(payload):
        where = f"candle {index}"
        if not isinstance(row, list) or len(row) < 5:
            raise fail(f"{where}: expected [time, open, high, low, close]")
        millis = number_or_none(row[0])
        if millis is None:
            raise fail(f"{where}: invalid time {row[0]!r}")
        close_time = cdl.from_epoch(millis / 1000.0, fail, where)
        prices = cdl.ohlc(row[1], row[2], row[3], row[4], fail, where, strings=False)
        if millis % (interval_seconds * 1000):
            continue
        result.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=interval_seconds,
                open_time=close_time - timedelta(seconds=interval_seconds),
                ohlc=prices,
                volume_usd=None,
                provider=provider,
                now=now,
                fail=fail,
                where=where,
            )
        )
    result.sort(key=lambda c: c.open_time)
    return result


async def fetch_candles(
    client: UpstreamClient,
    provider: ProviderConfig,
    symbol: str,
    interval_seconds: int,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    key: str | None = None,
) -> list[Candle]:
    """CoinGecko's candles for `symbol` opening in `[start, end)`, oldest first.

    Only 1800 (30 min, up to 1 day back) and 14400 (4 h, up to 30 days back) are served; one
    request, its `days` chosen by `ohlc_days`. `[]` without a request when the symbol has no
    CoinGecko id. Raises ValueError for another interval or a bad window, and `UpstreamError`s.
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    coin_id = coingecko_id(symbol)
    if coin_id is None:
        return []
    canonical, provider_id = normalize_symbol(symbol), provider.id
    days = ohlc_days(interval_seconds, aligned, now or utc_now())
    candles: list[Candle] = await client.request_parsed(
        provider,
        ohlc_path(coin_id),
        lambda payload: parse_ohlc(
            payload, canonical, coin_id, interval_seconds, now or utc_now(), provider=provider_id
        ),
        params={"vs_currency": "usd", "days": str(days)},
        key=key,
    )
    return cdl.select(candles, aligned, end)
