"""CoinPaprika: aggregated USD prices from `GET /v1/tickers` and daily candles from
`GET /v1/coins/{id}/ohlcv/historical`.

Docs: https://docs.coinpaprika.com/api-reference/tickers/get-tickers-for-all-active-coins,
https://docs.coinpaprika.com/api-reference/tickers/get-ticker-for-a-specific-coin and
https://docs.coinpaprika.com/api-reference/coins/get-historical-ohlc. A ticker::

    {"id": "btc-bitcoin", "name": "Bitcoin", "symbol": "BTC", "rank": 1,
     "last_updated": "2024-03-25T08:45:02Z",
     "quotes": {"USD": {"price": 67187.82, "volume_24h": 31260929299.52, "market_cap": 1.3e12,
                        "percent_change_24h": 3.64, ...}}}

`/tickers` answers an array of these (every active coin the plan covers), `/tickers/{id}` one
object; the parser accepts both. The free plan allows 20,000 requests a month, so the collector
makes ONE `/tickers` request per poll whatever the number of symbols (per-coin requests would
exhaust the month in days). CoinPaprika reports `market_cap` 0 for a coin whose supply it does
not know; that is kept as None (unknown), not as a market cap of zero. Errors come as
`{"error": "..."}`.

Candles: `?start=&end=&limit=&interval=24h&quote=usd` answers rows with ISO times::

    [{"time_open": "2024-03-24T00:00:00Z", "time_close": "2024-03-24T23:59:59Z",
      "open": 64037.5, "high": 67594.8, "low": 63807.6, "close": 67211.4,
      "volume": 24115032189, "market_cap": 1321345600012}]

The free plan serves daily candles (`interval=24h`) for the last 24 hours only; older windows
are refused by CoinPaprika (an UpstreamError). `limit` defaults to 1 upstream, so it is always
sent (at most 366). `volume` is already in USD and kept.

Market overview, fetched on demand (free plan, updated every 5 minutes; docs:
https://docs.coinpaprika.com/api-reference/global/get-market-overview-data): `GET /global`
answers one object::

    {"market_cap_usd": 2641998120344, "volume_24h_usd": 92181230457,
     "bitcoin_dominance_percentage": 50.02, "cryptocurrencies_number": 10412,
     "market_cap_change_24h": 1.72, "last_updated": 1711356302, ...}

`market_cap_change_24h` is a percentage; `last_updated` (Unix seconds) is when CoinPaprika
computed it and becomes the overview's `updated_at`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.market_models import MarketOverview
from gateway.models import Candle, PriceTick, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, number_or_none, optional_number
from gateway.symbols import coinpaprika_id, normalize_symbol, symbol_for_coinpaprika_id
from gateway.upstream import RetryPolicy, UpstreamClient

__all__ = [
    "CANDLE_INTERVALS",
    "GLOBAL_ENDPOINT",
    "OHLCV_LIMIT",
    "PROVIDER_ID",
    "TICKERS_ENDPOINT",
    "TICKERS_PARAMS",
    "CoinPaprikaCollector",
    "fetch_candles",
    "fetch_global",
    "ohlcv_params",
    "ohlcv_path",
    "parse_global",
    "parse_ohlcv",
    "parse_tickers",
]

PROVIDER_ID: Final = "coinpaprika"
TICKERS_ENDPOINT: Final = "/tickers"
GLOBAL_ENDPOINT: Final = "/global"
TICKERS_PARAMS: Final = {"quotes": "USD"}
OHLCV_LIMIT: Final = 366
CANDLE_INTERVALS: Final = frozenset({86400})


def ohlcv_path(coin_id: str) -> str:
    return f"/coins/{coin_id}/ohlcv/historical"


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def parse_tickers(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/tickers` (array) or `/tickers/{id}` (object) response.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * `{"error": ...}`, or anything but an array of objects / one object: error.
    * Every element needs a string `id`; an id not in the asset table is skipped.
    * For a known id, `quotes.USD.price` must be a finite number above zero; `volume_24h`,
      `market_cap` and `percent_change_24h` may be absent or null (-> None) but must otherwise
      be finite numbers (volume and cap not negative). `market_cap` 0 means unknown (None).
    * `last_updated` (ISO 8601) becomes `observed_at` when present.
    * No known coin at all is an error: the collector only cares about known coins.
    """
    fail = _fail_for(provider, TICKERS_ENDPOINT)
    if isinstance(payload, dict):
        if "error" in payload and "id" not in payload:
            raise fail(f"error response: {payload.get('error')}")
        items: list[Any] = [payload]
    elif isinstance(payload, list):
        items = payload
    else:
        raise fail(f"expected an array of tickers, got {type(payload).__name__}")
    ticks: list[PriceTick] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise fail(f"element {index}: expected an object with a string 'id'")
        coin_id = item["id"]
        symbol = symbol_for_coinpaprika_id(coin_id)
        if symbol is None:
            continue
        quotes = item.get("quotes")
        usd = quotes.get("USD") if isinstance(quotes, dict) else None
        if not isinstance(usd, dict):
            raise fail(f"{coin_id}: missing quotes.USD")
        raw_cap = optional_number(usd, "market_cap", coin_id, fail, signed=False)
        updated = item.get("last_updated")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=cdl.price(usd.get("price"), fail, coin_id, strings=False),
                provider=provider,
                observed_at=(
                    cdl.iso_time(updated, fail, coin_id) if updated is not None else observed_at
                ),
                market_cap_usd=raw_cap or None,
                volume_24h_usd=optional_number(usd, "volume_24h", coin_id, fail, signed=False),
                change_24h_pct=optional_number(
                    usd, "percent_change_24h", coin_id, fail, signed=True
                ),
            )
        )
    if not ticks:
        raise fail("no known coin id in the response")
    return ticks


class CoinPaprikaCollector(PollingCollector):
    """Polls `/tickers` once per interval and keeps the configured symbols' coins."""

    name = "coinpaprika"

    def coin_ids(self) -> list[str]:
        return [cid for cid in map(coinpaprika_id, self.symbols) if cid is not None]

    async def poll(self) -> list[PriceTick]:
        # One answer covers every coin: the symbols without a CoinPaprika id cost nothing.
        wanted = {s for s in self.symbols if coinpaprika_id(s) is not None}
        if not wanted:
            return []
        ticks = await self.fetch_ticks(TICKERS_ENDPOINT, parse_tickers, params=TICKERS_PARAMS)
        return [t for t in ticks if t.symbol in wanted]


# -- candles (on demand) -----------------------------------------------------------------------


def ohlcv_params(start: datetime, end: datetime) -> dict[str, str]:
    """Daily candles opening in `[start, end)`: Unix-second bounds and an explicit limit."""
    days = math.ceil((end - start).total_seconds() / 86400)
    return {
        "start": str(cdl.epoch_seconds(start)),
        "end": str(cdl.epoch_seconds_ceil(end) - 1),
        "limit": str(max(1, min(OHLCV_LIMIT, days))),
        "interval": "24h",
        "quote": "usd",
    }


def parse_ohlcv(
    payload: Any,
    symbol: str,
    coin_id: str,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Daily candles from an `/ohlcv/historical` response; raises UpstreamPayloadError.

    Each row must be an object with an ISO `time_open` and numeric `open`/`high`/`low`/`close`
    (JSON numbers); `volume` may be null (-> None). One bad row rejects the response.
    """
    fail = _fail_for(provider, ohlcv_path(coin_id))
    if isinstance(payload, dict) and "error" in payload:
        raise fail(f"error response: {payload.get('error')}")
    if not isinstance(payload, list):
        raise fail(f"expected an array of rows, got {type(payload).__name__}")
    result: list[Candle] = []
    for index, row in enumerate(payload):
        where = f"row {index}"
        if not isinstance(row, dict):
            raise fail(f"{where}: expected an object")
        raw_volume = row.get("volume")
        volume = None if raw_volume is None else cdl.volume(raw_volume, fail, where, strings=False)
        result.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=86400,
                open_time=cdl.iso_time(row.get("time_open"), fail, where),
                ohlc=cdl.ohlc(
                    row.get("open"),
                    row.get("high"),
                    row.get("low"),
                    row.get("close"),
                    fail,
                    where,
                    strings=False,
                ),
                volume_usd=volume,
                provider=provider,
                now=now,
                fail=fail,
                where=where,
            )
        )
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
    """CoinPaprika's daily candles for `symbol` opening in `[start, end)`, oldest first.

    Only `interval_seconds == 86400` is served. One request per 366 days; `[]` without a
    request when the symbol has no CoinPaprika id. Raises ValueError for another interval or a
    bad window, and the client's `UpstreamError`s (the free plan refuses old windows). `key` is
    ignored: the free endpoint needs none.
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    coin_id = coinpaprika_id(symbol)
    if coin_id is None:
        return []
    canonical, provider_id = normalize_symbol(symbol), provider.id

    def parse(payload: Any) -> list[Candle]:
        return parse_ohlcv(payload, canonical, coin_id, now or utc_now(), provider=provider_id)

    async def page(page_start: datetime, page_end: datetime) -> list[Candle]:
        candles: list[Candle] = await client.request_parsed(
            provider, ohlcv_path(coin_id), parse, params=ohlcv_params(page_start, page_end)
        )
        return candles

    return await cdl.fetch_pages(page, aligned, end, interval_seconds, OHLCV_LIMIT)


# -- market overview (on demand) ----------------------------------------------------------------


def parse_global(payload: Any, *, provider: str = PROVIDER_ID) -> MarketOverview:
    """The MarketOverview in a `/global` response; raises UpstreamPayloadError.

    `market_cap_usd` and `volume_24h_usd` must be finite numbers above zero,
    `bitcoin_dominance_percentage` a number in 0..100 and `last_updated` Unix seconds; the 24 h
    cap change and the coin count may be absent or null (-> None).
    """
    fail = _fail_for(provider, GLOBAL_ENDPOINT)
    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    if "error" in payload and "market_cap_usd" not in payload:
        raise fail(f"error response: {payload.get('error')}")
    btc = number_or_none(payload.get("bitcoin_dominance_percentage"))
    if btc is None or not 0 <= btc <= 100:
        raise fail(
            f"invalid bitcoin_dominance_percentage {payload.get('bitcoin_dominance_percentage')!r}"
        )
    updated = number_or_none(payload.get("last_updated"))
    if updated is None:
        raise fail(f"invalid last_updated {payload.get('last_updated')!r}")
    count = number_or_none(payload.get("cryptocurrencies_number"))
    return MarketOverview(
        total_market_cap_usd=cdl.price(
            payload.get("market_cap_usd"), fail, "market_cap_usd", strings=False
        ),
        total_volume_24h_usd=cdl.price(
            payload.get("volume_24h_usd"), fail, "volume_24h_usd", strings=False
        ),
        btc_dominance_pct=btc,
        market_cap_change_24h_pct=optional_number(
            payload, "market_cap_change_24h", "global", fail, signed=True
        ),
        active_cryptocurrencies=int(count)
        if count is not None and count.is_integer() and count >= 1
        else None,
        updated_at=cdl.from_epoch(updated, fail, "last_updated"),
        provider=provider,
    )


async def fetch_global(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> MarketOverview:
    """CoinPaprika's market overview (total cap, 24 h volume, BTC dominance). `retry`
    overrides the client's retry policy (a pool that fails over passes `NO_RETRY`)."""
    provider_id = provider.id
    overview: MarketOverview = await client.request_parsed(
        provider,
        GLOBAL_ENDPOINT,
        lambda payload: parse_global(payload, provider=provider_id),
        key=key,
        retry=retry,
    )
    return overview
