"""CryptoCompare (now CoinDesk Data): USD prices from `GET /data/pricemultifull` and candles from
`GET /data/v2/histominute|histohour|histoday` (key required).

Docs: https://min-api.cryptocompare.com/documentation (Price > multipleSymbolsFullPriceEndpoint,
Historical > dataHistominute/dataHistohour/dataHistoday); the site now redirects to CoinDesk's
"legacy" pages. The key travels as `authorization: Apikey <key>`, added by the client from
providers.toml; without CRYPTOCOMPARE_API_KEY the provider is UNCONFIGURED and never called.
Coins are named by symbol, CryptoCompare's own identifier, and `fsyms` has a documented maximum
length (300 characters is the stricter figure given), so a long list is asked for in several
requests. `pricemultifull?fsyms=BTC,ETH&tsyms=USD` answers a `RAW` section of numbers (and a
`DISPLAY` section of formatted strings, not read)::

    {"RAW": {"BTC": {"USD": {"TYPE": "5", "MARKET": "CCCAGG", "FROMSYMBOL": "BTC",
                             "TOSYMBOL": "USD", "PRICE": 67187.34, "LASTUPDATE": 1711356300,
                             "CHANGEPCT24HOUR": 3.64, "CIRCULATINGSUPPLYMKTCAP": 1.32e12,
                             "TOTALVOLUME24HTO": 31260929299.5, "VOLUME24HOURTO": 1.2e9, ...}}},
     "DISPLAY": {"BTC": {"USD": {"PRICE": "$ 67,187.3", ...}}}}

The 24 h volume kept is `TOTALVOLUME24HTO` (every pair of the coin, in USD), the figure other
aggregators report; `VOLUME24HOURTO` covers the coin's USD pairs only. The market cap is
`CIRCULATINGSUPPLYMKTCAP`; 0 there means the supply is unknown (-> None). Errors come in an
envelope, usually with HTTP 200: `{"Response": "Error", "Message": "...", "Type": 99, ...}`.

Candles: `v2/histohour?fsym=BTC&tsym=USD&limit=N&toTs=T` answers the N+1 intervals opening at
or before T (`limit` at most 2000, oldest first), `time` being the open time::

    {"Response": "Success", "Data": {"Aggregated": false, "TimeFrom": 1711350000,
     "TimeTo": 1711357200, "Data": [{"time": 1711350000, "high": 67290.1, "low": 67010.5,
     "open": 67052.2, "volumefrom": 812.4, "volumeto": 54559321.7, "close": 67187.3,
     "conversionType": "direct", "conversionSymbol": ""}, ...]}}

Minutes, hours and days are served natively; nothing is aggregated here. Intervals with no
data (before a coin was listed) come as rows of zeros and are left out. `volumeto` is the USD
(quote) volume and is kept. Minute candles reach back about a week on the free plan; older
windows answer the error envelope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.models import Candle, PriceTick, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, is_valid_price, number_or_none, optional_number
from gateway.symbols import asset, normalize_symbol
from gateway.upstream import UpstreamClient

__all__ = [
    "CANDLE_INTERVALS",
    "ENDPOINT",
    "FSYMS_MAX_CHARS",
    "HISTO_LIMIT",
    "PROVIDER_ID",
    "CryptoCompareCollector",
    "fetch_candles",
    "fsyms_batches",
    "histo_params",
    "histo_path",
    "parse_histo",
    "parse_pricemultifull",
    "pricemultifull_params",
]

PROVIDER_ID: Final = "cryptocompare"
ENDPOINT: Final = "/pricemultifull"
FSYMS_MAX_CHARS: Final = 300  # documented maximum length of `fsyms`
HISTO_LIMIT: Final = 2000  # documented maximum of `limit` on the histo endpoints
_HISTO_PATHS: Final[dict[int, str]] = {
    60: "/v2/histominute",
    3600: "/v2/histohour",
    86400: "/v2/histoday",
}
CANDLE_INTERVALS: Final = frozenset(_HISTO_PATHS)


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def _error_envelope(payload: dict[str, Any]) -> str | None:
    """CryptoCompare's error message if the payload is its error envelope, else None."""
    if payload.get("Response") == "Error":
        return f"{payload.get('Message')} (type {payload.get('Type')})"
    return None


# -- prices (polled) ---------------------------------------------------------------------------


def fsyms_batches(symbols: Sequence[str]) -> list[list[str]]:
    """`symbols` split into runs whose comma-joined length stays within FSYMS_MAX_CHARS."""
    batches: list[list[str]] = []
    current: list[str] = []
    length = 0
    for symbol in symbols:
        extra = len(symbol) + (1 if current else 0)
        if current and length + extra > FSYMS_MAX_CHARS:
            batches.append(current)
            current, length, extra = [], 0, len(symbol)
        current.append(symbol)
        length += extra
    if current:
        batches.append(current)
    return batches


def pricemultifull_params(symbols: Sequence[str]) -> dict[str, str]:
    """Query parameters for `/pricemultifull` in USD."""
    return {"fsyms": ",".join(symbols), "tsyms": "USD"}


def parse_pricemultifull(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/pricemultifull` response; raises UpstreamPayloadError.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * Not an object, the error envelope, or no `RAW` object: error.
    * A `RAW` key that is not a symbol of the asset table: skipped.
    * For a known symbol, `RAW[sym].USD` must be an object whose `PRICE` is a finite number
      above zero; `CIRCULATINGSUPPLYMKTCAP`, `TOTALVOLUME24HTO` and `CHANGEPCT24HOUR` may be
      null or absent (-> None), otherwise finite numbers (cap and volume not negative); a cap
      of 0 means the supply is unknown (-> None).
    * `LASTUPDATE` (Unix seconds) becomes `observed_at` when present.
    * No known symbol at all is an error: the collector only asks for known symbols.
    """
    fail = _fail_for(provider, ENDPOINT)
    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")
    raw = payload.get("RAW")
    if not isinstance(raw, dict):
        raise fail(f"expected a 'RAW' object keyed by symbol, got {type(raw).__name__}")
    ticks: list[PriceTick] = []
    for key, quotes in raw.items():
        known = asset(key)
        if known is None:
            continue
        usd = quotes.get("USD") if isinstance(quotes, dict) else None
        if not isinstance(usd, dict):
            raise fail(f"{key}: missing RAW.{key}.USD")
        price = number_or_none(usd.get("PRICE"))
        if price is None or not is_valid_price(price):
            raise fail(f"{key}: invalid PRICE {usd.get('PRICE')!r}")
        updated = usd.get("LASTUPDATE")
        cap = optional_number(usd, "CIRCULATINGSUPPLYMKTCAP", key, fail, signed=False)
        ticks.append(
            PriceTick(
                symbol=known.symbol,
                usd=price,
                provider=provider,
                observed_at=_epoch(updated, fail, key) if updated is not None else observed_at,
                market_cap_usd=cap or None,  # 0: supply unknown
                volume_24h_usd=optional_number(usd, "TOTALVOLUME24HTO", key, fail, signed=False),
                change_24h_pct=optional_number(usd, "CHANGEPCT24HOUR", key, fail, signed=True),
            )
        )
    if not ticks:
        raise fail("no known symbol in the response")
    return ticks


def _epoch(raw: Any, fail: cdl.Fail, where: str) -> datetime:
    seconds = number_or_none(raw)
    if seconds is None:
        raise fail(f"{where}: invalid time {raw!r}")
    return cdl.from_epoch(seconds, fail, where)


class CryptoCompareCollector(PollingCollector):
    """Polls `/pricemultifull` for the configured symbols that the asset table knows: one
    request per `fsyms` batch (one request for any ordinary list)."""

    name = "cryptocompare"

    def known_symbols(self) -> list[str]:
        return [s for s in self.symbols if asset(s) is not None]

    async def poll(self) -> list[PriceTick]:
        wanted = self.known_symbols()
        ticks: list[PriceTick] = []
        for batch in fsyms_batches(wanted):
            ticks += await self.fetch_ticks(
                ENDPOINT, parse_pricemultifull, params=pricemultifull_params(batch)
            )
        chosen = {normalize_symbol(s) for s in wanted}
        return [t for t in ticks if t.symbol in chosen]


# -- candles (on demand) -----------------------------------------------------------------------


def histo_path(interval_seconds: int) -> str:
    """The histo endpoint serving candles of this length (KeyError for any other)."""
    return _HISTO_PATHS[interval_seconds]


def histo_params(
    symbol: str, interval_seconds: int, start: datetime, end: datetime
) -> dict[str, str]:
    """Parameters for one page covering `[start, end)`; `start` must be on the grid.

    The endpoint answers `limit + 1` intervals ending with the one that opens at `toTs`, so
    `toTs` is the last open time before `end` and `limit` one less than the count (at least 1:
    a one-interval page gets one more, earlier row, which `select` drops).
    """
    count = math.ceil((end - start).total_seconds() / interval_seconds)
    last_open = cdl.epoch_seconds(start) + (count - 1) * interval_seconds
    return {
        "fsym": symbol,
        "tsym": "USD",
        "limit": str(max(1, min(HISTO_LIMIT, count - 1))),
        "toTs": str(last_open),
    }


def parse_histo(
    payload: Any,
    symbol: str,
    interval_seconds: int,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Candles from a `/v2/histo*` response; raises UpstreamPayloadError on a bad payload.

    The error envelope, or anything but `{"Data": {"Data": [rows]}}`: error. Each row must be
    an object with an integer `time` and numeric `open`/`high`/`low`/`close`/`volumeto`; a row
    whose four prices are all 0 is CryptoCompare's "no data" filler and is left out. One bad
    row rejects the response. Shared rules (grid, price order, `complete`) are in
    `gateway.sources.candles`.
    """
    fail = _fail_for(provider, histo_path(interval_seconds))
    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")
    outer = payload.get("Data")
    rows = outer.get("Data") if isinstance(outer, dict) else None
    if not isinstance(rows, list):
        raise fail("expected 'Data.Data' to be an array of rows")
    result: list[Candle] = []
    for index, row in enumerate(rows):
        where = f"row {index}"
        if not isinstance(row, dict):
            raise fail(f"{where}: expected an object")
        open_, high, low, close = (row.get(k) for k in ("open", "high", "low", "close"))
        if all(number_or_none(p) == 0 for p in (open_, high, low, close)):
            continue
        open_s = number_or_none(row.get("time"))
        if open_s is None:
            raise fail(f"{where}: invalid time {row.get('time')!r}")
        result.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=interval_seconds,
                open_time=cdl.from_epoch(open_s, fail, where),
                ohlc=cdl.ohlc(open_, high, low, close, fail, where, strings=False),
                volume_usd=cdl.volume(row.get("volumeto"), fail, where, strings=False),
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
    """CryptoCompare's candles for `symbol` opening in `[start, end)`, oldest first.

    Intervals of 60, 3600 and 86400 seconds; one request per HISTO_LIMIT intervals, in order;
    `[]` without a request for a symbol the asset table does not know. `key` is the provider's
    API key, sent by the client as `provider.auth` says (without one a required key raises
    UpstreamUnconfigured and nothing is sent). Raises ValueError for another interval or a bad
    window, and the client's `UpstreamError`s (an unknown coin or a window the plan does not
    cover answers the error envelope: UpstreamPayloadError).
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    known = asset(symbol)
    if known is None:
        return []
    canonical, provider_id = known.symbol, provider.id

    def parse(payload: Any) -> list[Candle]:
        return parse_histo(
            payload, canonical, interval_seconds, now or utc_now(), provider=provider_id
        )

    async def page(page_start: datetime, page_end: datetime) -> list[Candle]:
        candles: list[Candle] = await client.request_parsed(
            provider,
            histo_path(interval_seconds),
            parse,
            params=histo_params(canonical, interval_seconds, page_start, page_end),
            key=key,
        )
        return candles

    return await cdl.fetch_pages(page, aligned, end, interval_seconds, HISTO_LIMIT)
