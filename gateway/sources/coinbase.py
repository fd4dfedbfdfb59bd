"""Coinbase Exchange: USD prices from `GET /products/{id}/ticker` and candles from
`GET /products/{id}/candles`.

Docs: https://docs.cdp.coinbase.com/api-reference/exchange-api/rest-api/products/get-product-ticker
and .../get-product-candles. The ticker is one request per product (there is no batch form)::

    {"ask": "67188.01", "bid": "67187.99", "volume": "15327.27", "trade_id": 630281919,
     "price": "67187.99", "size": "0.00029", "time": "2024-03-25T08:44:59.512345Z"}

`price` is the last trade and `time` its time. `volume` is the 24 h volume in the base asset;
the USD value is not reported, so `volume_24h_usd` stays None, as does the 24 h change. An
error is `{"message": "NotFound"}` (with a 4xx status, which the client reports first).

The collector asks for every product concurrently (the provider's rate limiter paces them).
One failing product does not hide the others: if any product answered, its ticks are published
and the failures are logged; only when none answered is the worst error raised (a rate limit
first, so the polling loop honours its Retry-After).

Candles: `?granularity=<seconds>&start=<ISO>&end=<ISO>` answers at most 300 rows, *newest
first*, each `[time, low, high, open, close, volume]` as JSON numbers (note the order: low and
high come before open). `time` is the interval's start in Unix seconds; `volume` is in the base
asset, so the candle volume is None. Rows may precede `start`; they are dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import structlog
import trio

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamPayloadError, UpstreamRateLimited
from gateway.models import Candle, PriceTick, utc_now
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, number_or_none
from gateway.symbols import coinbase_product, normalize_symbol
from gateway.upstream import UpstreamClient
from gateway.upstream.client import NO_RETRY

__all__ = [
    "CANDLES_LIMIT",
    "CANDLE_INTERVALS",
    "PROVIDER_ID",
    "CoinbaseCollector",
    "candles_params",
    "candles_path",
    "fetch_candles",
    "parse_candles",
    "parse_ticker",
    "ticker_path",
]

log = structlog.get_logger(__name__)

PROVIDER_ID: Final = "coinbase"
CANDLES_LIMIT: Final = 300
CANDLE_INTERVALS: Final = frozenset({60, 300, 900, 3600, 21600, 86400})
# Each page asks for `[page_start, page_end - 1 s]` over one interval less than the limit, so
# however Coinbase counts the bounds (inclusive or not, rounded up or not) a page never exceeds
# 300 rows, and consecutive pages neither overlap nor leave a gap.
_PAGE_INTERVALS: Final = CANDLES_LIMIT - 1


def ticker_path(product: str) -> str:
    return f"/products/{product}/ticker"


def candles_path(product: str) -> str:
    return f"/products/{product}/candles"


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def parse_ticker(
    payload: Any, symbol: str, product: str, *, provider: str = PROVIDER_ID
) -> PriceTick:
    """The PriceTick in one product's ticker; raises UpstreamPayloadError on a bad payload.

    `price` must be a numeric string (or number) that is finite and above zero, `time` an ISO
    8601 time with an offset; a `{"message": ...}` error body is rejected.
    """
    fail = _fail_for(provider, ticker_path(product))
    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    if "message" in payload and "price" not in payload:
        raise fail(f"error response: {payload.get('message')}")
    return PriceTick(
        symbol=symbol,
        usd=cdl.price(payload.get("price"), fail, product),
        provider=provider,
        observed_at=cdl.iso_time(payload.get("time"), fail, product),
    )


class CoinbaseCollector(PollingCollector):
    """Polls each configured symbol's Coinbase USD product ticker (see the module docstring)."""

    name = "coinbase"

    def products(self) -> list[tuple[str, str]]:
        """(symbol, product) for every configured symbol listed on Coinbase."""
        pairs = ((s, coinbase_product(s)) for s in self.symbols)
        return [(s, p) for s, p in pairs if p is not None]

    async def poll(self) -> list[PriceTick]:
        products = self.products()
        if not products:
            return []
        ticks: dict[str, PriceTick] = {}
        errors: list[UpstreamError] = []

        async def one(symbol: str, product: str) -> None:
            try:
                ticks[symbol] = await self.ctx.client.request_parsed(
                    self.provider,
                    ticker_path(product),
                    lambda payload: parse_ticker(payload, symbol, product, provider=provider_id),
                    retry=NO_RETRY,
                )
            except UpstreamError as exc:
                errors.append(exc)

        provider_id = self.provider.id
        async with trio.open_nursery() as nursery:
            for symbol, product in products:
                nursery.start_soon(one, symbol, product)
        result = [ticks[s] for s, _ in products if s in ticks]
        if errors and not result:
            raise _worst(errors)
        for error in errors:
            log.warning(
                "collector.product_failed",
                provider=provider_id,
                endpoint=error.endpoint,
                error=str(error),
                error_class=type(error).__name__,
            )
        return result


def _worst(errors: list[UpstreamError]) -> UpstreamError:
    """A rate limit (the longest Retry-After) over any other error; else the first one."""
    limited = [e for e in errors if isinstance(e, UpstreamRateLimited)]
    if limited:
        return max(limited, key=lambda e: e.retry_after or 0.0)
    return errors[0]


# -- candles (on demand) -----------------------------------------------------------------------


def candles_params(interval_seconds: int, start: datetime, end: datetime) -> dict[str, str]:
    return {
        "granularity": str(interval_seconds),
        "start": cdl.iso_z(start),
        "end": cdl.iso_z(end),
    }


def parse_candles(
    payload: Any,
    symbol: str,
    product: str,
    interval_seconds: int,
    now: datetime,
    *,
    provider: str = PROVIDER_ID,
) -> list[Candle]:
    """Candles from a `/candles` response, oldest first; raises UpstreamPayloadError.

    Each row must be an array `[time, low, high, open, close, volume]` of JSON numbers; one bad
    row rejects the response. An empty array is valid (no trades in the window).
    """
    fail = _fail_for(provider, candles_path(product))
    if isinstance(payload, dict) and "message" in payload:
        raise fail(f"error response: {payload.get('message')}")
    if not isinstance(payload, list):
        raise fail(f"expected an array of candles, got {type(payload).__name__}")
    result: list[Candle] = []
    for index, row in enumerate(payload):
        where = f"candle {index}"
        if not isinstance(row, list) or len(row) < 6:
            raise fail(f"{where}: expected [time, low, high, open, close, volume]")
        seconds = number_or_none(row[0])
        if seconds is None:
            raise fail(f"{where}: invalid time {row[0]!r}")
        cdl.volume(row[5], fail, where, strings=False)  # checked, but base-asset: not kept
        low, high, open_, close = (cdl.price(v, fail, where, strings=False) for v in row[1:5])
        result.append(
            cdl.make_candle(
                symbol=symbol,
                interval_seconds=interval_seconds,
                open_time=cdl.from_epoch(seconds, fail, where),
                ohlc=(open_, high, low, close),
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
    """Coinbase's candles for `symbol` with open times in `[start, end)`, oldest first.

    One request per 299 intervals, in order; `[]` without a request when the symbol has no
    Coinbase product. Raises ValueError for an unsupported granularity or a bad window, and
    the client's `UpstreamError`s. `key` is ignored: the public endpoint needs none.
    """
    cdl.check_interval(interval_seconds, CANDLE_INTERVALS, provider.id)
    aligned = cdl.check_window(start, end, interval_seconds)
    product = coinbase_product(symbol)
    if product is None:
        return []
    canonical, provider_id = normalize_symbol(symbol), provider.id

    def parse(payload: Any) -> list[Candle]:
        return parse_candles(
            payload, canonical, product, interval_seconds, now or utc_now(), provider=provider_id
        )

    async def page(page_start: datetime, page_end: datetime) -> list[Candle]:
        # The API takes whole seconds: the last one before the page's (exclusive) end.
        last = datetime.fromtimestamp(cdl.epoch_seconds_ceil(page_end) - 1, UTC)
        candles: list[Candle] = await client.request_parsed(
            provider,
            candles_path(product),
            parse,
            params=candles_params(interval_seconds, page_start, max(last, page_start)),
        )
        return candles

    return await cdl.fetch_pages(page, aligned, end, interval_seconds, _PAGE_INTERVALS)
