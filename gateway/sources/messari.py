"""Messari: USD market data from `GET /metrics/v2/assets/details` (api.messari.io, key required).

Docs: https://docs.messari.io/api-reference/endpoints/metrics/v2/assets/get-v2-assets-details
(and .../get-v2-assets-roi for the units of `returnOnInvestment`). Messari retired the
data.messari.io v1 API the inventory names; providers.toml points at https://api.messari.io.
The key travels in the `x-messari-api-key` header, added by the client from providers.toml;
without MESSARI_API_KEY the provider is UNCONFIGURED and never called. Assets are addressed by
Messari slug (`bitcoin`), at most 20 per request (the cap third-party clients report; the
reference gives none)::

    {"error": null,
     "data": [{"id": "1e31218a-e44e-4285-820c-8282ee222035", "name": "Bitcoin",
               "slug": "bitcoin", "symbol": "BTC", "rank": 1, ...,
               "marketData": {"priceUsd": 67187.34, "priceAt": "2024-03-25T08:45:00Z",
                              "volume24Hour": 31260929299.5,
                              "marketcap": {"circulatingUsd": 1.32e12, ...}, ...},
               "returnOnInvestment": {"priceChange24h": 3.64, ...}, ...}]}

`priceChange24h` is a percentage (the ROI page's example gives 1.537 for Bitcoin, -0.028 for
Tether). `priceAt` becomes `observed_at` when present. An error comes as `{"error": "..."}` with
an HTTP status.

The name of the query parameter is not settled by the documentation: Messari's own SDK
specification and the older reference call it `slugs` (with `ids` for UUIDs), the current
reference describes a single list of "asset identifiers - accepts slugs or UUIDs" under a name
its rendered page does not show, and third-party clients send `assets`. Both `slugs` and
`assets` are therefore sent, with the same value; an API knowing one of them ignores the other.
Which slugs Messari uses is not derived from anything: only the assets whose slug the asset
table records (from Messari's documentation) are collected.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, is_valid_price, number_or_none, optional_number
from gateway.symbols import messari_slug, symbol_for_messari_slug

__all__ = [
    "ENDPOINT",
    "MAX_ASSETS",
    "PROVIDER_ID",
    "MessariCollector",
    "details_params",
    "parse_asset_details",
]

PROVIDER_ID: Final = "messari"
ENDPOINT: Final = "/metrics/v2/assets/details"
MAX_ASSETS: Final = 20  # per request, as clients of the endpoint report


def details_params(slugs: Sequence[str]) -> dict[str, str]:
    """Query parameters for `/metrics/v2/assets/details` (see the module docstring for why the
    list is sent under two names)."""
    joined = ",".join(slugs)
    return {"assets": joined, "slugs": joined}


def parse_asset_details(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from an `/assets/details` response; raises UpstreamPayloadError.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * Not an object, a non-null `error`, or `data` that is not an array of objects: error.
    * Every element needs a string `slug`; a slug not in the asset table is skipped.
    * For a known slug, `marketData` must be an object whose `priceUsd` is a finite number
      above zero; `volume24Hour`, `marketcap.circulatingUsd` and
      `returnOnInvestment.priceChange24h` may be null or absent (-> None), otherwise finite
      numbers (volume and cap not negative).
    * `marketData.priceAt` (ISO 8601) becomes `observed_at` when present.
    * No known asset at all is an error: the collector only asks for known slugs.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    if payload.get("error") is not None:
        raise fail(f"error response: {payload.get('error')}")
    items = payload.get("data")
    if not isinstance(items, list):
        raise fail(f"expected 'data' to be an array of assets, got {type(items).__name__}")
    ticks: list[PriceTick] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("slug"), str):
            raise fail(f"element {index}: expected an object with a string 'slug'")
        slug = item["slug"]
        symbol = symbol_for_messari_slug(slug)
        if symbol is None:
            continue
        market = item.get("marketData")
        if not isinstance(market, dict):
            raise fail(f"{slug}: missing marketData")
        price = number_or_none(market.get("priceUsd"))
        if price is None or not is_valid_price(price):
            raise fail(f"{slug}: invalid priceUsd {market.get('priceUsd')!r}")
        cap = market.get("marketcap")
        if cap is not None and not isinstance(cap, dict):
            raise fail(f"{slug}: marketcap is not an object")
        roi = item.get("returnOnInvestment")
        if roi is not None and not isinstance(roi, dict):
            raise fail(f"{slug}: returnOnInvestment is not an object")
        price_at = market.get("priceAt")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=price,
                provider=provider,
                observed_at=cdl.iso_time(price_at, fail, slug) if price_at else observed_at,
                market_cap_usd=optional_number(cap, "circulatingUsd", slug, fail, signed=False),
                volume_24h_usd=optional_number(market, "volume24Hour", slug, fail, signed=False),
                change_24h_pct=optional_number(roi, "priceChange24h", slug, fail, signed=True),
            )
        )
    if not ticks:
        raise fail("no known asset slug in the response")
    return ticks


class MessariCollector(PollingCollector):
    """Polls `/metrics/v2/assets/details` for the configured symbols that have a Messari slug,
    `MAX_ASSETS` per request."""

    name = "messari"

    def slugs(self) -> list[str]:
        return [slug for slug in map(messari_slug, self.symbols) if slug is not None]

    async def poll(self) -> list[PriceTick]:
        slugs = self.slugs()
        ticks: list[PriceTick] = []
        for first in range(0, len(slugs), MAX_ASSETS):
            ticks += await self.fetch_ticks(
                ENDPOINT,
                parse_asset_details,
                params=details_params(slugs[first : first + MAX_ASSETS]),
            )
        chosen = set(self.symbols)
        return [t for t in ticks if t.symbol in chosen]
