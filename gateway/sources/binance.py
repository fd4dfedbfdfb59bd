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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gateway.assets import binance_pair, symbol_for_binance_pair
from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick, utc_now
from gateway.sources import PollingCollector, is_valid_price, number_or_none
from gateway.upstream.client import NO_RETRY

__all__ = [
    "ENDPOINT",
    "PROVIDER_ID",
    "BinanceCollector",
    "parse_ticker_24hr",
    "ticker_24hr_params",
]

PROVIDER_ID: Final = "binance"
ENDPOINT: Final = "/ticker/24hr"

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
                volume_24h_usd=_optional(item, "quoteVolume", pair, fail, signed=False),
                change_24h_pct=_optional(item, "priceChangePercent", pair, fail, signed=True),
            )
        )
    if not ticks:
        raise fail("no known trading pair in the response")
    return ticks


def _optional(
    item: dict[str, Any], key: str, pair: str, fail: _Fail, *, signed: bool
) -> float | None:
    raw = item.get(key)
    if raw is None:
        return None
    value = number_or_none(raw, strings=True)
    if value is None or not math.isfinite(value) or (not signed and value < 0):
        raise fail(f"{pair}: invalid {key} {raw!r}")
    return value


def _close_time(item: dict[str, Any], pair: str, fail: _Fail) -> datetime | None:
    raw = item.get("closeTime")
    if raw is None:
        return None
    millis = number_or_none(raw)
    if millis is None or not math.isfinite(millis) or millis <= 0:
        raise fail(f"{pair}: invalid closeTime {raw!r}")
    try:
        return datetime.fromtimestamp(millis / 1000.0, UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(f"{pair}: closeTime {raw!r} is out of range") from None


class BinanceCollector(PollingCollector):
    """Polls `/ticker/24hr` for every configured symbol that has a Binance USDT pair."""

    name = "binance"

    def pairs(self) -> list[str]:
        return [pair for pair in map(binance_pair, self.symbols) if pair is not None]

    async def poll(self) -> list[PriceTick]:
        pairs = self.pairs()
        if not pairs:
            return []
        # Parsed inside the request's attempt: a wrong-shape body counts against the breaker.
        provider_id = self.provider.id
        ticks: list[PriceTick] = await self.ctx.client.request_parsed(
            self.provider,
            ENDPOINT,
            lambda payload: parse_ticker_24hr(payload, utc_now(), provider=provider_id),
            params=ticker_24hr_params(pairs),
            retry=NO_RETRY,
        )
        return ticks
