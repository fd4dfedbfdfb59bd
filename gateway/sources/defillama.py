"""DefiLlama: token prices from coins.llama.fi, and DeFi TVL from api.llama.fi.

Docs: https://api-docs.defillama.com/. DefiLlama serves these from two hosts, so they are two
provider entries (each `base_url` is the only place its host appears):

* `defillama-coins` (https://coins.llama.fi), prices, polled by `DefiLlamaPriceCollector`:
  `GET /prices/current/coingecko:bitcoin,coingecko:ethereum` answers::

      {"coins": {"coingecko:bitcoin": {"price": 67187.0, "symbol": "BTC",
                                        "timestamp": 1711356300, "confidence": 0.99}}}

  Coins are addressed by CoinGecko id (DefiLlama's documented `coingecko:` scheme); a coin it
  cannot price is left out of `coins`. No volume or market cap is given. `timestamp` (Unix
  seconds) is when DefiLlama last priced the coin and becomes `observed_at`.

* `defillama` (https://api.llama.fi), TVL, fetched on demand (hourly data, no collector):
  `GET /protocols` answers an array of protocols (`name`, `slug`, `chains`, `tvl`, `change_1d`,
  `category`, and much more that is not read); `GET /v2/historicalChainTvl[/{chain}]` answers
  `[{"date": 1711324800, "tvl": 94511234567.8}, ...]`, one point per UTC day.

`/protocols` lists every protocol DefiLlama tracks (thousands) and is several megabytes: the
client's response-size cap must allow it (see the integration notes).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from gateway.config import ProviderConfig
from gateway.errors import UpstreamPayloadError
from gateway.market_models import DefiProtocol, TvlPoint
from gateway.models import PriceTick
from gateway.sources import candles as cdl
from gateway.sources.base import PollingCollector, number_or_none
from gateway.symbols import defillama_coin, symbol_for_defillama_coin
from gateway.upstream import RetryPolicy, UpstreamClient

__all__ = [
    "CHAIN_TVL_ENDPOINT",
    "PRICES_ENDPOINT",
    "PRICES_PROVIDER_ID",
    "PROTOCOLS_ENDPOINT",
    "TVL_PROVIDER_ID",
    "DefiLlamaPriceCollector",
    "chain_tvl_path",
    "fetch_chain_tvl",
    "fetch_protocols",
    "parse_chain_tvl",
    "parse_prices",
    "parse_protocols",
    "prices_path",
]

PRICES_PROVIDER_ID: Final = "defillama-coins"
TVL_PROVIDER_ID: Final = "defillama"
PRICES_ENDPOINT: Final = "/prices/current"
PROTOCOLS_ENDPOINT: Final = "/protocols"
CHAIN_TVL_ENDPOINT: Final = "/v2/historicalChainTvl"


def _fail_for(provider: str, endpoint: str) -> cdl.Fail:
    def fail(message: str) -> UpstreamPayloadError:
        return UpstreamPayloadError(message, provider=provider, endpoint=endpoint)

    return fail


def _finite(value: Any, *, signed: bool) -> float | None:
    number = number_or_none(value)
    if number is None or not math.isfinite(number) or (not signed and number < 0):
        return None
    return number


def prices_path(coins: list[str]) -> str:
    """The path for current prices of DefiLlama coin keys (`coingecko:bitcoin`, ...)."""
    return f"{PRICES_ENDPOINT}/{','.join(coins)}"


def parse_prices(
    payload: Any, observed_at: datetime, *, provider: str = PRICES_PROVIDER_ID
) -> list[PriceTick]:
    """PriceTicks from a `/prices/current/...` response; raises UpstreamPayloadError.

    `coins` must be an object; a key not in the asset table is skipped; a known one must hold
    an object with a finite `price` above zero and, if present, a sane Unix `timestamp`. A
    response with no known coin is an error: the collector only asks for known coins.
    """
    fail = _fail_for(provider, PRICES_ENDPOINT)
    coins = payload.get("coins") if isinstance(payload, dict) else None
    if not isinstance(coins, dict):
        raise fail("expected an object with a 'coins' object")
    ticks: list[PriceTick] = []
    for key, entry in coins.items():
        symbol = symbol_for_defillama_coin(key)
        if symbol is None:
            continue
        if not isinstance(entry, dict):
            raise fail(f"{key}: expected an object, got {type(entry).__name__}")
        stamp = entry.get("timestamp")
        when = observed_at
        if stamp is not None:
            seconds = number_or_none(stamp)
            if seconds is None:
                raise fail(f"{key}: invalid timestamp {stamp!r}")
            when = cdl.from_epoch(seconds, fail, key)
        ticks.append(
            PriceTick(
                symbol=symbol,
                usd=cdl.price(entry.get("price"), fail, key, strings=False),
                provider=provider,
                observed_at=when,
            )
        )
    if not ticks:
        raise fail("no known coin in the response")
    return ticks


class DefiLlamaPriceCollector(PollingCollector):
    """Polls coins.llama.fi for every configured symbol that has a CoinGecko id."""

    name = "defillama-coins"

    def coins(self) -> list[str]:
        return [key for key in map(defillama_coin, self.symbols) if key is not None]

    async def poll(self) -> list[PriceTick]:
        coins = self.coins()
        if not coins:
            return []
        return await self.fetch_ticks(prices_path(coins), parse_prices)


# -- TVL (on demand) ---------------------------------------------------------------------------


def parse_protocols(payload: Any, *, provider: str = TVL_PROVIDER_ID) -> list[DefiProtocol]:
    """DefiProtocols from a `/protocols` response, in DefiLlama's order (largest TVL first).

    Each element must be an object with non-empty string `name` and `slug`; `chains` an array
    of strings (absent: none); `category` a string or null. `tvl` and `change_1d` are finite
    numbers (TVL not negative) or null/absent (-> None); anything else rejects the response.
    """
    fail = _fail_for(provider, PROTOCOLS_ENDPOINT)
    if not isinstance(payload, list):
        raise fail(f"expected an array of protocols, got {type(payload).__name__}")
    result: list[DefiProtocol] = []
    for index, item in enumerate(payload):
        where = f"protocol {index}"
        if not isinstance(item, dict):
            raise fail(f"{where}: expected an object")
        name, slug = item.get("name"), item.get("slug")
        if not isinstance(name, str) or not name or not isinstance(slug, str) or not slug:
            raise fail(f"{where}: missing 'name' or 'slug'")
        chains = item.get("chains", [])
        if not isinstance(chains, list) or not all(isinstance(c, str) for c in chains):
            raise fail(f"{slug}: 'chains' must be an array of strings")
        category = item.get("category")
        if category is not None and not isinstance(category, str):
            raise fail(f"{slug}: 'category' must be a string")
        result.append(
            DefiProtocol(
                name=name,
                slug=slug,
                chains=tuple(chains),
                tvl_usd=_checked(item, "tvl", slug, fail, signed=False),
                change_1d_pct=_checked(item, "change_1d", slug, fail, signed=True),
                category=category,
            )
        )
    return result


def _checked(
    item: dict[str, Any], key: str, where: str, fail: cdl.Fail, *, signed: bool
) -> float | None:
    raw = item.get(key)
    if raw is None:
        return None
    value = _finite(raw, signed=signed)
    if value is None:
        raise fail(f"{where}: invalid {key} {raw!r}")
    return value


def parse_chain_tvl(
    payload: Any, *, provider: str = TVL_PROVIDER_ID, endpoint: str = CHAIN_TVL_ENDPOINT
) -> list[TvlPoint]:
    """TvlPoints from a `/v2/historicalChainTvl` response, oldest first.

    Each element must be `{"date": <Unix seconds, number or numeric string>, "tvl": <finite
    number, not negative>}`; one bad point rejects the response. An empty array is valid.
    """
    fail = _fail_for(provider, endpoint)
    if not isinstance(payload, list):
        raise fail(f"expected an array of points, got {type(payload).__name__}")
    points: list[TvlPoint] = []
    for index, item in enumerate(payload):
        where = f"point {index}"
        if not isinstance(item, dict):
            raise fail(f"{where}: expected an object")
        seconds = number_or_none(item.get("date"), strings=True)
        if seconds is None:
            raise fail(f"{where}: invalid date {item.get('date')!r}")
        tvl = _finite(item.get("tvl"), signed=False)
        if tvl is None:
            raise fail(f"{where}: invalid tvl {item.get('tvl')!r}")
        points.append(TvlPoint(date=cdl.from_epoch(seconds, fail, where), tvl_usd=tvl))
    points.sort(key=lambda p: p.date)
    return points


def chain_tvl_path(chain: str | None = None) -> str:
    """All chains together, or one chain by DefiLlama's name for it (`Ethereum`)."""
    return CHAIN_TVL_ENDPOINT if chain is None else f"{CHAIN_TVL_ENDPOINT}/{quote(chain, safe='')}"


async def fetch_protocols(
    client: UpstreamClient,
    provider: ProviderConfig,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[DefiProtocol]:
    """Every protocol DefiLlama tracks, with TVL (`provider`: the `defillama` entry). DefiLlama
    needs no key (`key` is passed on for a keyed mirror); `retry` overrides the client's
    retry policy (a pool that fails over passes `NO_RETRY`)."""
    provider_id = provider.id
    protocols: list[DefiProtocol] = await client.request_parsed(
        provider,
        PROTOCOLS_ENDPOINT,
        lambda payload: parse_protocols(payload, provider=provider_id),
        key=key,
        retry=retry,
    )
    return protocols


async def fetch_chain_tvl(
    client: UpstreamClient,
    provider: ProviderConfig,
    chain: str | None = None,
    *,
    key: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[TvlPoint]:
    """Daily DeFi TVL of all chains (or one), oldest first (`provider`: `defillama`); `key`
    and `retry` as for `fetch_protocols`."""
    provider_id, path = provider.id, chain_tvl_path(chain)
    points: list[TvlPoint] = await client.request_parsed(
        provider,
        path,
        lambda payload: parse_chain_tvl(payload, provider=provider_id, endpoint=path),
        key=key,
        retry=retry,
    )
    return points
