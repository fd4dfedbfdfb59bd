"""Kraken spot: USD prices from `GET /0/public/Ticker` and candles from `GET /0/public/OHLC`.

Docs: https://docs.kraken.com/api/docs/rest-api/get-ticker-information and
https://docs.kraken.com/api/docs/rest-api/get-ohlc-data. Every answer is an envelope::

    {"error": [], "result": {...}}

with HTTP 200 even for a refused request: a non-empty `error` list (`"EQuery:Unknown asset
pair"`, `"EAPI:Rate limit exceeded"`, `"EService:Unavailable"`) is the failure, raised as an
`UpstreamError` (rate limits as `UpstreamRateLimited`, so pools fail over). Entries starting
with `W` are warnings and do not fail a response.

Ticker: `?pair=XBTUSD,ETHUSD` is answered under Kraken's own keys, which for the oldest assets
differ from the names asked for (`XBTUSD` -> `XXBTZUSD`, `ETHUSD` -> `XETHZUSD`; newer ones such
as `SOLUSD` are unchanged); the asset table records both. Each ticker holds arrays of strings::

    "XXBTZUSD": {"a": ["67188.10000", "1", "1.000"], "b": [...], "c": ["67187.30000", "0.00120"],
                 "v": ["1180.5", "2862.1"], "p": ["66990.1", "66762.4"], "t": [21003, 52617],
                 "l": [...], "h": [...], "o": "66813.10000"}

`c[0]` is the last trade price. `v[1]` (24 h volume, base asset) times `p[1]` (24 h volume-
weighted average price) is exactly the 24 h traded value in USD. No 24 h change is reported:
`o` is the open at 00:00 UTC today, not 24 hours ago, so it is not used. One unknown pair fails
the whole request, which is why only pairs from the asset table are ever asked for.

OHLC: `?pair=XBTUSD&interval=<minutes>&since=<unix s>` answers `{"XXBTZUSD": [[time, open, high,
low, close, vwap, volume, count], ...], "last": <unix s>}`, oldest first. Only the 720 most
recent intervals exist (older ones cannot be fetched at any `since`); the last row is the
current, still-moving interval. The candle volume kept is `volume * vwap` (USD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import Candle, PriceTick, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, number_or_none
from gateway.symbols import kraken_pair, normalize_symbol, symbol_for_kraken_pair
from gateway.upstream import UpstreamClient

__all__ = [
    "CANDLE_INTERVALS",
    "OHLC_ENDPOINT",
    "OHLC_MAX_ROWS",
    "PROVIDER_ID",
    "TICKER_ENDPOINT",
    "KrakenCollector",
    "fetch_candles",
    "ohlc_params",
    "parse_ohlc",
    "parse_ticker",
    "ticker_params",
]

PROVIDER_ID: Final = "kraken"
TICKER_ENDPOINT: Final = "/Ticker"
OHLC_ENDPOINT: Final = "/OHLC"
OHLC_MAX_ROWS: Final = 720
# Interval lengths Kraken serves, in seconds. Its 1-week and 15-day candles are left out: they
# do not start on the epoch-based grid a Candle's open_time is defined on.
CANDLE_INTERVALS: Final = frozenset({60, 300, 900, 1800, 3600, 14400, 86400})
_RATE_LIMIT_ERRORS: Final = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests")


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def _result(payload: Any, provider: str, endpoint: str) -> dict[str, Any]:
    """The `result` object of a Kraken envelope; raises on an error list or a wrong shape."""
    fail = _fail_for(provider, endpoint)
    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    errors = payload.get("error")
    if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
        raise fail("missing or malformed 'error' list")
    real = [e for e in errors if not e.startswith("W")]
    if real:
        message = "error response: " + "; ".join(real)
        if any(e.startswith(_RATE_LIMIT_ERRORS) for e in real):
            raise UpstreamRateLimited(message, provider=provider, endpoint=endpoint)
        if any(e.startswith("EService:") for e in real):
            raise UpstreamError(message, provider=provider, endpoint=endpoint)
        raise fail(message)
    result = payload.get("result")
    if not isinstance(result, dict):
        raise fail("missing or non-object 'result'")
    return result


def _field(entry: dict[str, Any], key: str, index: int, name: str, fail: cdl.Fail) -> Any:
    values = entry.get(key)
    if not isinstance(values, list) or len(values) <= index:
        raise fail(f"{name}: missing or short '{key}' array")
    return values[index]


def ticker_params(pairs: Sequence[str]) -> dict[str, str]:
    """The `pair` parameter: Kraken's REST names, comma-separated."""
    return {"pair": ",".join(pairs)}


def parse_ticker(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/Ticker` response; raises an UpstreamError on a bad or error payload.

    * The envelope rules are in the module docstring.
    * A result key not in the asset table is skipped; for a known one the ticker must be an
      object whose `c[0]` is a positive finite price; `v[1]`/`p[1]`, if present, must be
      numeric (volume not negative) or the response is rejected.
    * Kraken sends no time with a ticker: every tick is stamped `observed_at`.
    * A result without any known pair is an error: the collector only asks for known pairs.
    """
    fail = _fail_for(provider, TICKER_ENDPOINT)
    ticks: list[PriceTick] = []
    for key, entry in _result(payload, provider, TICKER_ENDPOINT).items():
        symbol = symbol_for_kraken_pair(key)
        if symbol is None:
            continue
        if not isinstance(entry, dict):
            raise fail(f"{key}: expected an object, got {type(entry).__name__}")
        last = cdl.price(_field(entry, "c", 0, key, fail), fail, key)
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=last,
                provider=provider,
                observed_at=observed_at,
                volume_24h_usd=_volume_usd(entry, key, fail),
            )
        )
    if not ticks:
        raise fail("no known trading pair in the response")
    return ticks


def _volume_usd(entry: dict[str, Any], key: str, fail: cdl.Fail) -> float | None:
    if "v" not in entry or "p" not in entry:
        return None
    base = cdl.volume(_field(entry, "v", 1, key, fail), fail, key)
    vwap = number_or_none(_field(entry, "p", 1, key, fail), strings=True)
    if vwap is None or not math.isfinite(vwap) or vwap < 0:
        raise fail(f"{key}: invalid 24 h average price {entry['p']!r}")
    return base * vwap


class KrakenCollector(PollingCollector):
    """Polls `/Ticker` for every configured symbol that has a Kraken USD pair."""

    name = "kraken"

    def pairs(self) -> list[str]:
        return [pair for pair in map(kraken_pair, self.symbols) if pair is not None]

    async def poll(self) -> list[PriceTick]:
        pairs = self.pairs()
        if not pairs:
            return []
        return await self.fetch_ticks(TICKER_ENDPOINT, parse_ticker, params=ticker_params(pairs))


# -- candles (on demand) -----------------------------------------------------------------------


def ohlc_params(pair: str, interval_seconds: int, start: datetime) -> dict[str, str]:
    """Parameters asking for `pair`'s candles from `start` on (`since` is exclusive)."""
    return {
        "pair": pair,
        "interval": str(interval_seconds // 60),
        "since": str(cdl.epoch_seconds(start) - 1),
    }


def parse_ohlc(
    payload: Any,
    symbol: str,
    interval_seconds: int,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Candles from an `/OHLC` response for one pair; raises an UpstreamError as `parse_ticker`.

    The result must hold exactly one array of rows besides `last`, under a key of `symbol`'s
    pair (either Kraken spelling). Each row is `[time, open, high, low, close, vwap, volume,
    count]` with string prices; one bad row rejects the response.
    """
    fail = _fail_for(provider, OHLC_ENDPOINT)
    result = _result(payload, provider, OHLC_ENDPOINT)
    series = {k: v for k, v in result.items() if k != "last"}
    if len(series) != 1:
        raise fail(f"expected one pair in the result, got {sorted(series)}")
    ((key, rows),) = series.items()
    if symbol_for_kraken_pair(key) != symbol:
        raise fail(f"result is for {key!r}, not for {symbol}")
    if not isinstance(rows, list):
        raise fail(f"{key}: expected an array of rows")
    candles: list[Candle] = []
    for index, row in enumerate(rows):
        where = f"{key} row {index}"
        if not isinstance(row, list) or len(row) < 7:
            raise fail(f"{where}: expected an array of at least 7 fields")
        seconds = number_or_none(row[0])
        if seconds is None:
            raise fail(f"{where}: invalid time {row[0]!r}")
        vwap = number_or_none(row[5], strings=True)
        if vwap is None or not math.isfinite(vwap) or vwap < 0:
            raise fail(f"{where}: invalid vwap {row[5]!r}")
        candles.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=interval_seconds,
                open_time=cdl.from_epoch(seconds, fail, where),
                ohlc=cdl.ohlc(row[1], row[2], row[3], row[4], fail, where),
                volume_usd=cdl.volume(row[6], fail, where) * vwap,
                provider=provider,
                now=now,
                fail=fail,
                where=where,
            )
        )
    return candles


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
    """Kraken's candles for `symbol` with open times in `[start, end)`, oldest first.

    One request: Kraken serves only its 720 most recent intervals, so nothing older can be
    paged to; a window reaching further back gets what exists. `[]` without a request when
    the symbol has no Kraken pair, or when the whole window is older than those 720 intervals.
    Raises ValueError for an unsupported interval or a bad window, and `UpstreamError`s.
    `key` is ignored: the public endpoint needs none.
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    pair = kraken_pair(symbol)
    if pair is None:
        return []
    moment = now or utc_now()
    oldest = cdl.align_down(moment, interval_seconds) - timedelta(
        seconds=interval_seconds * (OHLC_MAX_ROWS - 1)
    )
    if end <= oldest:
        return []
    canonical, provider_id = normalize_symbol(symbol), provider.id
    candles: list[Candle] = await client.request_parsed(
        provider,
        OHLC_ENDPOINT,
        lambda payload: parse_ohlc(
            payload, canonical, interval_seconds, now or utc_now(), provider=provider_id
        ),
        params=ohlc_params(pair, interval_seconds, max(aligned, oldest)),
    )
    return cdl.select(candles, aligned, end)
