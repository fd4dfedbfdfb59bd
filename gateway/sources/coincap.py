"""CoinCap: aggregated USD prices from `GET /v3/assets?ids=...` (rest.coincap.io, key required).

CoinCap 3.0 (https://pro.coincap.io/api-docs) needs an API key on every request: the client
sends it as the `apiKey` query parameter, as the provider's providers.toml `auth` says
(`Authorization: Bearer <key>` is the other accepted form). Without COINCAP_API_KEY the
provider is UNCONFIGURED and never called. The answer keeps the 2.0 shape
(https://docs.coincap.io, "Assets"), numbers written as decimal strings, nulls where unknown::

    {"data": [{"id": "bitcoin", "rank": "1", "symbol": "BTC", "name": "Bitcoin",
               "supply": "19670000.0000000000000000", "maxSupply": "21000000.0000000000000000",
               "marketCapUsd": "1321574516001.2337", "volumeUsd24Hr": "12724040223.1452",
               "priceUsd": "67187.3358936566", "changePercent24Hr": "3.6372789467735",
               "vwap24Hr": "66512.43", "explorer": "https://blockchain.info/", "tokens": {}}],
     "timestamp": 1711356302145}

`timestamp` (Unix milliseconds) is when CoinCap produced the answer and becomes `observed_at`.
Ids CoinCap does not know are left out of `data`; errors come as `{"error": "..."}`. The v3
shape above is taken from recorded 2025 answers (the v3 reference pages are not public), the
field meanings from the 2.0 documentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources import candles as cdl
from gateway.sources.base import (
    PollingCollector,
    epoch_millis,
    is_valid_price,
    number_or_none,
    optional_number,
)
from gateway.symbols import coincap_id, symbol_for_coincap_id

__all__ = [
    "ENDPOINT",
    "MAX_IDS",
    "PROVIDER_ID",
    "CoinCapCollector",
    "assets_params",
    "parse_assets",
]

PROVIDER_ID: Final = "coincap"
ENDPOINT: Final = "/assets"
# `limit` is at most 2000 upstream; one request covers every configured coin below that.
MAX_IDS: Final = 2000


def assets_params(asset_ids: Sequence[str]) -> dict[str, str]:
    """Query parameters for `/assets` restricted to `asset_ids` (and enough `limit` for all)."""
    return {"ids": ",".join(asset_ids), "limit": str(max(1, len(asset_ids)))}


def parse_assets(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from an `/assets` response; raises UpstreamPayloadError on a bad payload.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * `{"error": ...}`, or anything but an object whose `data` is an array of objects: error.
    * Every element needs a string `id`; an id not in the asset table is skipped.
    * For a known id, `priceUsd` must be a number (CoinCap writes decimal strings) above zero;
      `marketCapUsd`, `volumeUsd24Hr` and `changePercent24Hr` may be null or absent (-> None) but
      must otherwise be finite numbers (cap and volume not negative).
    * `timestamp` (Unix ms), when present, becomes `observed_at` for every tick.
    * No known asset at all is an error: the collector only asks for known ids.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object, got {type(payload).__name__}")
    if "error" in payload:
        raise fail(f"error response: {payload.get('error')}")
    items = payload.get("data")
    if not isinstance(items, list):
        raise fail(f"expected 'data' to be an array of assets, got {type(items).__name__}")
    stamp = _timestamp(payload.get("timestamp"), fail) or observed_at
    ticks: list[PriceTick] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise fail(f"element {index}: expected an object with a string 'id'")
        symbol = symbol_for_coincap_id(item["id"])
        if symbol is None:
            continue
        where = item["id"]
        usd = number_or_none(item.get("priceUsd"), strings=True)
        if usd is None or not is_valid_price(usd):
            raise fail(f"{where}: invalid priceUsd {item.get('priceUsd')!r}")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=usd,
                provider=provider,
                observed_at=stamp,
                market_cap_usd=optional_number(
                    item, "marketCapUsd", where, fail, signed=False, strings=True
                ),
                volume_24h_usd=optional_number(
                    item, "volumeUsd24Hr", where, fail, signed=False, strings=True
                ),
                change_24h_pct=optional_number(
                    item, "changePercent24Hr", where, fail, signed=True, strings=True
                ),
            )
        )
    if not ticks:
        raise fail("no known asset id in the response")
    return ticks


def _timestamp(raw: Any, fail: cdl.Fail) -> datetime | None:
    if raw is None:
        return None
    moment = epoch_millis(raw)
    if moment is None:
        raise fail(f"invalid timestamp {raw!r}")
    return moment


class CoinCapCollector(PollingCollector):
    """Polls `/assets?ids=...` for every configured symbol that has a CoinCap id.

    The key comes in the context (`CollectorContext.key`); the client sends it as
    `provider.auth` says.
    """

    name = "coincap"

    def asset_ids(self) -> list[str]:
        return [cid for cid in map(coincap_id, self.symbols) if cid is not None][:MAX_IDS]

    async def poll(self) -> list[PriceTick]:
        ids = self.asset_ids()
        if not ids:
            return []
        return await self.fetch_ticks(ENDPOINT, parse_assets, params=assets_params(ids))
