"""CoinMarketCap: USD quotes from `GET /v1/cryptocurrency/quotes/latest` (key required).

Docs: https://coinmarketcap.com/api/documentation/v1/#operation/getV1CryptocurrencyQuotesLatest
(and #section/Authentication, #section/Errors-and-Rate-Limits). The key travels in the
`X-CMC_PRO_API_KEY` header, added by the client from providers.toml; without
COINMARKETCAP_API_KEY the provider is UNCONFIGURED and never called. Asked by `symbol`, v1
answers `data` keyed by that symbol, one coin per symbol::

    {"status": {"timestamp": "2024-03-25T08:45:21.406Z", "error_code": 0,
                "error_message": null, "elapsed": 38, "credit_count": 1, "notice": null},
     "data": {"BTC": {"id": 1, "name": "Bitcoin", "symbol": "BTC", "slug": "bitcoin", ...,
                      "last_updated": "2024-03-25T08:44:00.000Z",
                      "quote": {"USD": {"price": 67187.33, "volume_24h": 31260929299.52,
                                        "percent_change_24h": 3.64, "market_cap": 1.32e12,
                                        "last_updated": "2024-03-25T08:44:00.000Z", ...}}}}}

The v2 endpoint answers an *array* per symbol (every coin sharing it); this module speaks v1,
as providers.toml's base_url says, and rejects that shape rather than guess which coin is
meant. Canonical symbols of the asset table are sent as they are: on this endpoint the symbol
is CoinMarketCap's identifier. Where several coins share a ticker, v1 answers one of them (the
documentation does not say which); a wrong one would stand out in the cross-provider outlier
check, and CoinMarketCap ids in the asset table would remove the doubt.

`skip_invalid=true` keeps one unknown symbol from failing the whole request (by default that
answers HTTP 400). CoinMarketCap reports a market cap of 0 for a coin whose circulating supply
it has not verified: that is kept as None (unknown). Errors come as `{"status": {"error_code":
1002, "error_message": "API key missing."}}` with an HTTP status (401, 429, ...).

The Basic plan allows 10,000 credits a month; this endpoint costs one credit per 100 coins
returned, so the 300 s interval in providers.toml stays within it for up to 100 symbols.

Market overview, fetched on demand (one credit; docs:
https://coinmarketcap.com/api/documentation/v1/#operation/getV1GlobalmetricsQuotesLatest):
`GET /v1/global-metrics/quotes/latest?convert=USD` answers::

    {"status": {...},
     "data": {"btc_dominance": 50.02, "eth_dominance": 15.69, "active_cryptocurrencies": 9316,
              "last_updated": "2024-03-25T08:45:00.000Z", ...,
              "quote": {"USD": {"total_market_cap": 2.64e12, "total_volume_24h": 9.2e10,
                                "total_market_cap_yesterday_percentage_change": 1.72,
                                "last_updated": "2024-03-25T08:45:00.000Z", ...}}}}

(`total_market_cap_yesterday_percentage_change` is in newer answers only: absent -> None.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.market_models import MarketOverview
from gateway.models import PriceTick
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, is_valid_price, number_or_none, optional_number
from gateway.symbols import asset, normalize_symbol
from gateway.upstream import RetryPolicy, UpstreamClient

__all__ = [
    "ENDPOINT",
    "GLOBAL_METRICS_ENDPOINT",
    "PROVIDER_ID",
    "CoinMarketCapCollector",
    "fetch_global_metrics",
    "parse_global_metrics",
    "parse_quotes_latest",
    "quotes_params",
]

PROVIDER_ID: Final = "coinmarketcap"
ENDPOINT: Final = "/cryptocurrency/quotes/latest"
GLOBAL_METRICS_ENDPOINT: Final = "/global-metrics/quotes/latest"


def quotes_params(symbols: Sequence[str]) -> dict[str, str]:
    """Query parameters for `/cryptocurrency/quotes/latest` in USD."""
    return {"symbol": ",".join(symbols), "convert": "USD", "skip_invalid": "true"}


def parse_quotes_latest(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a v1 `/quotes/latest` response; raises UpstreamPayloadError.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * Not an object, a non-zero `status.error_code`, or `data` that is not an object: error.
    * A key of `data` that is not a symbol of the asset table: skipped.
    * For a known symbol the entry must be an object (an array is the v2 shape: error) with
      `quote.USD.price` a finite number above zero; `market_cap`, `volume_24h` and
      `percent_change_24h` may be null or absent (-> None), otherwise finite numbers (cap and
      volume not negative); a market cap of 0 means "not verified" (-> None).
    * `quote.USD.last_updated` (ISO 8601), else the entry's `last_updated`, becomes
      `observed_at`.
    * No known symbol at all is an error: the collector only asks for known symbols.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    status = payload.get("status")
    if isinstance(status, dict) and status.get("error_code") not in (0, "0", None):
        raise fail(f"error response {status.get('error_code')}: {status.get('error_message')}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise fail(f"expected 'data' to be an object keyed by symbol, got {type(data).__name__}")
    ticks: list[PriceTick] = []
    for key, entry in data.items():
        known = asset(key)
        if known is None:
            continue
        if not isinstance(entry, dict):
            raise fail(f"{key}: expected an object (the v1 shape), got {type(entry).__name__}")
        quote = entry.get("quote")
        usd_quote = quote.get("USD") if isinstance(quote, dict) else None
        if not isinstance(usd_quote, dict):
            raise fail(f"{key}: missing quote.USD")
        price = number_or_none(usd_quote.get("price"))
        if price is None or not is_valid_price(price):
            raise fail(f"{key}: invalid price {usd_quote.get('price')!r}")
        updated = usd_quote.get("last_updated", entry.get("last_updated"))
        cap = optional_number(usd_quote, "market_cap", key, fail, signed=False)
        ticks.append(
            PriceTick(
                symbol=known.symbol,
                usd=price,
                provider=provider,
                observed_at=cdl.iso_time(updated, fail, key) if updated else observed_at,
                market_cap_usd=cap or None,  # 0: circulating supply not verified
                volume_24h_usd=optional_number(usd_quote, "volume_24h", key, fail, signed=False),
                change_24h_pct=optional_number(
                    usd_quote, "percent_change_24h", key, fail, signed=True
                ),
            )
        )
    if not ticks:
        raise fail("no known symbol in the response")
    return ticks


class CoinMarketCapCollector(PollingCollector):
    """Polls `/cryptocurrency/quotes/latest` once per interval for the configured symbols that
    the asset table knows (one request: the endpoint takes a list)."""

    name = "coinmarketcap"

    def known_symbols(self) -> list[str]:
        return [s for s in self.symbols if asset(s) is not None]

    async def poll(self) -> list[PriceTick]:
        wanted = self.known_symbols()
        if not wanted:
            return []
        ticks = await self.fetch_ticks(ENDPOINT, parse_quotes_latest, params=quotes_params(wanted))
        chosen = {normalize_symbol(s) for s in wanted}
        return [t for t in ticks if t.symbol in chosen]


# -- market overview (on demand) ----------------------------------------------------------------


def parse_global_metrics(payload: Any, *, provider: str = PROVIDER_ID) -> MarketOverview:
    """The MarketOverview in a `/global-metrics/quotes/latest` response (USD).

    A non-zero `status.error_code` or a `data` that is not an object is an error.
    `quote.USD.total_market_cap` and `total_volume_24h` must be finite numbers above zero,
    `btc_dominance` a number in 0..100, and `quote.USD.last_updated` (else `data.last_updated`)
    an ISO 8601 time; `active_cryptocurrencies` and the 24 h cap change may be absent (None).
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=GLOBAL_METRICS_ENDPOINT)

    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    status = payload.get("status")
    if isinstance(status, dict) and status.get("error_code") not in (0, "0", None):
        raise fail(f"error response {status.get('error_code')}: {status.get('error_message')}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise fail(f"expected 'data' to be an object, got {type(data).__name__}")
    quote = data.get("quote")
    usd = quote.get("USD") if isinstance(quote, dict) else None
    if not isinstance(usd, dict):
        raise fail("missing data.quote.USD")
    btc = number_or_none(data.get("btc_dominance"))
    if btc is None or not 0 <= btc <= 100:
        raise fail(f"invalid btc_dominance {data.get('btc_dominance')!r}")
    updated = usd.get("last_updated") or data.get("last_updated")
    count = number_or_none(data.get("active_cryptocurrencies"))
    return MarketOverview(
        total_market_cap_usd=cdl.price(
            usd.get("total_market_cap"), fail, "total_market_cap", strings=False
        ),
        total_volume_24h_usd=cdl.price(
            usd.get("total_volume_24h"), fail, "total_volume_24h", strings=False
        ),
        btc_dominance_pct=btc,
        market_cap_change_24h_pct=optional_number(
            usd, "total_market_cap_yesterday_percentage_change", "quote.USD", fail, signed=True
        ),
        active_cryptocurrencies=(
            int(count) if count is not None and count.is_integer() and count >= 1 else None
        ),
        updated_at=cdl.iso_time(updated, fail, "last_updated"),
        provider=provider,
    )


async def fetch_global_metrics(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> MarketOverview:
    """CoinMarketCap's global metrics as a MarketOverview (needs the provider's key). `retry`
    overrides the client's retry policy (a pool that fails over passes `NO_RETRY`)."""
    provider_id = provider.id
    overview: MarketOverview = await client.request_parsed(
        provider,
        GLOBAL_METRICS_ENDPOINT,
        lambda payload: parse_global_metrics(payload, provider=provider_id),
        params={"convert": "USD"},
        key=key,
        retry=retry,
    )
    return overview
