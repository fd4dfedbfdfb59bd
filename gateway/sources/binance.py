"""Binance spot: exchange prices from `GET /api/v3/ticker/24hr`.

Docs: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints
(24hr ticker price change statistics). With `symbols` the response is an array, with `symbol` a
single object, of the "FULL" ticker, numbers as strings and times in milliseconds::

    [{"symbol": "BTCUSDT", "lastPrice": "67187.33000000", "priceChangePercent": "3.637",
      "quoteVolume": "2110163425.54", "closeTime": 1711356299999, ...}, ...]

`symbols` must be a JSON array in compact form (`["BTCUSDT","ETHUSDT"]`, no spaces): Binance
rejects any other spelling with error -1100. One unknown or delisted symbol makes Binance reject
the whole request (HTTP 400, `{"code": -1121, "msg": "Invalid symbol."}`), which is why only
pairs from the asset table are ever requested.

Every pair we use is quoted in USDT, and a USDT price is taken as a USD price: USDT trades
within a fraction of a percent of one dollar, far less than the spread between providers.
`volume_24h_usd` is `quoteVolume`, the 24-hour traded volume in USDT.

Candles (on demand, not polled): `GET /api/v3/klines?symbol=&interval=&startTime=&endTime=&limit=`
answers an array of rows, oldest first, numbers as strings and times in milliseconds::

    [[1711356000000, "67100.01", "67210.00", "67080.00", "67187.33", "12.345",
      1711356059999, "829412.55", 1520, "6.1", "409811.20", "0"], ...]

(open time, open, high, low, close, base volume, close time, quote volume, trades, taker buy
base, taker buy quote, unused). At most `KLINES_LIMIT` (1000) rows per request, so
`fetch_candles` pages through longer windows; the volume kept is the quote (USDT) volume.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.models import Candle, PriceTick, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import (
    PollingCollector,
    epoch_millis,
    is_valid_price,
    number_or_none,
    optional_number,
)
from gateway.symbols import binance_pair, normalize_symbol, symbol_for_binance_pair
from gateway.upstream import UpstreamClient

__all__ = [
    "CANDLE_INTERVALS",
    "ENDPOINT",
    "KLINES_ENDPOINT",
    "KLINES_LIMIT",
    "PROVIDER_ID",
    "BinanceCollector",
    "fetch_candles",
    "klines_params",
    "parse_klines",
    "parse_ticker_24hr",
    "ticker_24hr_params",
]

PROVIDER_ID: Final = "binance"
ENDPOINT: Final = "/ticker/24hr"
KLINES_ENDPOINT: Final = "/klines"
KLINES_LIMIT: Final = 1000
# Binance's interval names. Weekly (and 3-day, monthly) klines are left out: they do not start
# on the epoch-based grid a Candle's open_time is defined on.
_INTERVAL_NAMES: Final[dict[int, str]] = {
    60: "1m",
    180: "3m",
    300: "5m",
    900: "15m",
    1800: "30m",
    3600: "1h",
    7200: "2h",
    14400: "4h",
    21600: "6h",
    28800: "8h",
    43200: "12h",
    86400: "1d",
}
CANDLE_INTERVALS: Final = frozenset(_INTERVAL_NAMES)

_Fail = Callable[[str], UpstreamPayloadError]


def ticker_24hr_params(pairs: Sequence[str]) -> dict[str, str]:
    """The `symbols` parameter as Binance requires it: a compact JSON array of pairs."""
    return {"symbols": json.dumps(list(pairs), separators=(",", ":"))}


def parse_ticker_24hr(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/ticker/24hr` response; raises UpstreamPayloadError on a bad payload.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * An array of ticker objects (the `symbols` form) or one ticker object (the `symbol` form);
      anything else, including Binance's error object `{"code": ..., "msg": ...}`: error.
    * Every element must be an object with a string `symbol`; a pair not in the asset table is
      skipped.
    * For a known pair, `lastPrice` must be a numeric string (or number) that is finite and
      above zero; `priceChangePercent` and `quoteVolume` may be absent or null (-> None), but if
      present must be finite numbers (volume not negative). Otherwise: error.
    * `closeTime` (ms since the epoch) becomes `observed_at` when present; else the given time.
    * A pair missing from the array is skipped, but a payload that yields no tick at all is an
      error: the collector only ever asks for known pairs.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    items: list[Any]
    if isinstance(payload, list):
        items = payload
    elif isinstance(payload, dict):
        if "code" in payload and "msg" in payload and "symbol" not in payload:
            raise fail(f"error response {payload.get('code')}: {payload.get('msg')}")
        items = [payload]
    else:
        raise fail(f"expected an array of tickers, got {type(payload).__name__}")

    ticks: list[PriceTick] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"element {index}: expected an object, got {type(item).__name__}")
        pair = item.get("symbol")
        if not isinstance(pair, str):
            raise fail(f"element {index}: missing or non-string 'symbol'")
        symbol = symbol_for_binance_pair(pair)
        if symbol is None:
            continue
        raw_price = item.get("lastPrice")
        price = number_or_none(raw_price, strings=True)
        if price is None:
            raise fail(f"{pair}: missing or non-numeric 'lastPrice' ({raw_price!r})")
        if not is_valid_price(price):
            raise fail(f"{pair}: price {raw_price!r} is not a positive finite number")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=price,
                provider=provider,
                observed_at=_close_time(item, pair, fail) or observed_at,
                volume_24h_usd=optional_number(
                    item, "quoteVolume", pair, fail, signed=False, strings=True
                ),
                change_24h_pct=optional_number(
                    item, "priceChangePercent", pair, fail, signed=True, strings=True
                ),
            )
        )
    if not ticks:
        raise fail("no known trading pair in the response")
    return ticks


def _close_time(item: dict[str, Any], pair: str, fail: _Fail) -> datetime | None:
    raw = item.get("closeTime")
    if raw is None:
        return None
    moment = epoch_millis(raw)
    if moment is None:
        raise fail(f"{pair}: invalid closeTime {raw!r}")
    return moment


class BinanceCollector(PollingCollector):
    """Polls `/ticker/24hr` for every configured symbol that has a Binance USDT pair."""

    name = "binance"

    def pairs(self) -> list[str]:
        return [pair for pair in map(binance_pair, self.symbols) if pair is not None]

    async def poll(self) -> list[PriceTick]:
        pairs = self.pairs()
        if not pairs:
            return []
        return await self.fetch_ticks(ENDPOINT, parse_ticker_24hr, params=ticker_24hr_params(pairs))


# -- candles (on demand) -----------------------------------------------------------------------


def klines_params(
    pair: str, interval_seconds: int, start: datetime, end: datetime
) -> dict[str, str]:
    """Parameters for one `/klines` page covering `[start, end)` (at most KLINES_LIMIT rows)."""
    count = math.ceil((end - start).total_seconds() / interval_seconds)
    return {
        "symbol": pair,
        "interval": _INTERVAL_NAMES[interval_seconds],
        "startTime": str(cdl.epoch_seconds(start) * 1000),
        # Binance's endTime is inclusive (ms): the last millisecond before `end`.
        "endTime": str(math.ceil(end.timestamp() * 1000) - 1),
        "limit": str(max(1, min(KLINES_LIMIT, count))),
    }


def parse_klines(
    payload: Any,
    symbol: str,
    interval_seconds: int,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Candles from a `/klines` response; raises UpstreamPayloadError on a bad payload.

    An empty array is a valid answer (no trades in the window, or before the listing). Each row
    must be an array of at least 8 fields whose prices and volumes are numeric strings (or
    numbers); one bad row rejects the response. Rules shared with the other providers (grid,
    price order, `complete`) are in `gateway.sources.candles`.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=KLINES_ENDPOINT)

    if isinstance(payload, dict) and "code" in payload and "msg" in payload:
        raise fail(f"error response {payload.get('code')}: {payload.get('msg')}")
    if not isinstance(payload, list):
        raise fail(f"expected an array of klines, got {type(payload).__name__}")
    result: list[Candle] = []
    for index, row in enumerate(payload):
        where = f"kline {index}"
        if not isinstance(row, list) or len(row) < 8:
            raise fail(f"{where}: expected an array of at least 8 fields")
        millis = number_or_none(row[0])
        if millis is None:
            raise fail(f"{where}: invalid open time {row[0]!r}")
        result.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=interval_seconds,
                open_time=cdl.from_epoch(millis / 1000.0, fail, where),
                ohlc=cdl.ohlc(row[1], row[2], row[3], row[4], fail, where),
                volume_usd=cdl.volume(row[7], fail, where),
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
    """Binance's candles for `symbol` with open times in `[start, end)`, oldest first.

    One request per `KLINES_LIMIT` intervals, made in order; `[]` without a request when the
    symbol has no Binance pair. Raises ValueError for an unsupported interval or a bad window
    (see `gateway.sources.candles`) and the client's `UpstreamError`s. `key` is ignored: the
    market-data endpoints need none.
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    pair = binance_pair(symbol)
    if pair is None:
        return []
    canonical, provider_id = normalize_symbol(symbol), provider.id

    def parse(payload: Any) -> list[Candle]:
        return parse_klines(
            payload, canonical, interval_seconds, now or utc_now(), provider=provider_id
        )

    async def page(page_start: datetime, page_end: datetime) -> list[Candle]:
        candles: list[Candle] = await client.request_parsed(
            provider,
            KLINES_ENDPOINT,
            parse,
            params=klines_params(pair, interval_seconds, page_start, page_end),
        )
        return candles

    return await cdl.fetch_pages(page, aligned, end, interval_seconds, KLINES_LIMIT)
