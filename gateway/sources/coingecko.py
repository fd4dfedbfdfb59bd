"""CoinGecko: aggregated USD prices from `GET /simple/price`.

Docs: https://docs.coingecko.com/v3.0.1/reference/simple-price. The response is an object keyed
by CoinGecko coin id; with the `include_*` flags each entry carries::

    {"bitcoin": {"usd": 67187.33, "usd_market_cap": 1.3e12, "usd_24h_vol": 3.1e10,
                 "usd_24h_change": 3.63, "last_updated_at": 1711356300}, ...}

Ids the API does not know are simply absent from the response, and CoinGecko sends `null` for
`usd_24h_change` when a price is stale. A demo API key, if `COINGECKO_API_KEY` is set, reaches
the collector as `CollectorContext.key` and the client sends it in the `x-cg-demo-api-key`
header (providers.toml's `auth`); without it the keyless public tier is used. The key is never
logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gateway.errors import UpstreamPayloadError
from gateway.models import PriceTick
from gateway.sources.base import PollingCollector, is_valid_price, number_or_none, optional_number
from gateway.symbols import coingecko_id, symbol_for_coingecko_id

__all__ = [
    "ENDPOINT",
    "PROVIDER_ID",
    "CoinGeckoCollector",
    "parse_simple_price",
    "simple_price_params",
]

PROVIDER_ID: Final = "coingecko"
ENDPOINT: Final = "/simple/price"

_Fail = Callable[[str], UpstreamPayloadError]


def simple_price_params(coin_ids: Sequence[str]) -> dict[str, str]:
    """Query parameters for `/simple/price` in USD with every field the parser reads."""
    return {
        "ids": ",".join(coin_ids),
        "vs_currencies": "usd",
        "include_market_cap": "true",
        "include_24hr_vol": "true",
        "include_24hr_change": "true",
        "include_last_updated_at": "true",
    }


def parse_simple_price(
    payload: Any, observed_at: datetime, *, provider: str = PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/simple/price` response; raises UpstreamPayloadError on a bad payload.

    The rule: the payload as a whole must be the documented shape, or nothing is accepted.

    * Not a JSON object, or CoinGecko's error envelope (`{"status": {"error_message": ...}}` or
      `{"error": ...}`): error.
    * An id not in the asset table: skipped (it is not ours to interpret).
    * A known id whose entry is not an object, lacks a numeric `usd`, or has a price that is not
      a finite number above zero: error; one corrupt entry makes the whole body suspect.
    * Optional fields (`usd_market_cap`, `usd_24h_vol`, `usd_24h_change`) may be absent or null
      (-> None); present, they must be finite numbers (cap and volume not negative).
    * `last_updated_at` (Unix seconds) becomes `observed_at` when present; else the given time.
    * A coin missing from the payload is skipped, but a payload that yields no tick at all
      (`{}` or only unknown ids) is an error: the collector only ever asks for known ids.
    """

    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=ENDPOINT)

    if not isinstance(payload, dict):
        raise fail(f"expected a JSON object keyed by coin id, got {type(payload).__name__}")
    envelope = _error_envelope(payload)
    if envelope is not None:
        raise fail(f"error response: {envelope}")

    ticks: list[PriceTick] = []
    for coin_id, entry in payload.items():
        symbol = symbol_for_coingecko_id(coin_id)
        if symbol is None:
            continue
        if not isinstance(entry, dict):
            raise fail(f"{coin_id}: expected an object, got {type(entry).__name__}")
        usd = number_or_none(entry.get("usd"))
        if usd is None:
            raise fail(f"{coin_id}: missing or non-numeric 'usd' ({entry.get('usd')!r})")
        if not is_valid_price(usd):
            raise fail(f"{coin_id}: price {usd!r} is not a positive finite number")
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=usd,
                provider=provider,
                observed_at=_updated_at(entry, coin_id, fail) or observed_at,
                market_cap_usd=optional_number(
                    entry, "usd_market_cap", coin_id, fail, signed=False
                ),
                volume_24h_usd=optional_number(entry, "usd_24h_vol", coin_id, fail, signed=False),
                change_24h_pct=optional_number(entry, "usd_24h_change", coin_id, fail, signed=True),
            )
        )
    if not ticks:
        raise fail("no known coin id in the response")
    return ticks


def _error_envelope(payload: dict[str, Any]) -> str | None:
    """CoinGecko's error message if the payload is one of its error bodies, else None."""
    status = payload.get("status")
    if isinstance(status, dict) and ("error_message" in status or "error_code" in status):
        return f"{status.get('error_code')}: {status.get('error_message')}"
    error = payload.get("error")
    if isinstance(error, str):
        return error
    return None


def _updated_at(entry: dict[str, Any], coin_id: str, fail: _Fail) -> datetime | None:
    raw = entry.get("last_updated_at")
    if raw is None:
        return None
    seconds = number_or_none(raw)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise fail(f"{coin_id}: invalid last_updated_at {raw!r}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise fail(f"{coin_id}: last_updated_at {raw!r} is out of range") from None


class CoinGeckoCollector(PollingCollector):
    """Polls `/simple/price` for every configured symbol that has a CoinGecko id."""

    name = "coingecko"

    def coin_ids(self) -> list[str]:
        return [cid for cid in map(coingecko_id, self.symbols) if cid is not None]

    async def poll(self) -> list[PriceTick]:
        ids = self.coin_ids()
        if not ids:
            return []
        return await self.fetch_ticks(ENDPOINT, parse_simple_price, params=simple_price_params(ids))
