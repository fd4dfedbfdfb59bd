"""DefiLlama DEX analytics (free, no key): 24 h volume per DEX, and DEX liquidity pools.

* `defillama-dexs` (https://api.llama.fi/overview/dexs, https://api-docs.defillama.com/ "Volumes"):
  `GET ?excludeTotalDataChart=true&excludeTotalDataChartBreakdown=true` answers
  `{"protocols": [{"name": "Uniswap V3", "displayName": "Uniswap V3", "slug": "uniswap-v3",
  "chains": ["Ethereum", "Arbitrum"], "total24h": 1234567890.5, "change_1d": -3.2, ...}],
  "total24h": …, "allChains": […]}` -> one `DexVolume` per protocol.
* `defillama-yields` (https://yields.llama.fi, the documented "Yields" API): `GET /pools`
  answers `{"status": "success", "data": [{"pool": "<uuid>", "chain": "Ethereum",
  "project": "uniswap-v3", "symbol": "USDC-WETH", "tvlUsd": 123456789, "volumeUsd1d": 98765432,
  "volumeUsd7d": …, "apy": …, ...}]}` for every yield pool DefiLlama tracks (lending markets
  and vaults too). A pool with a `volumeUsd1d` is a DEX liquidity pool (lending markets have
  none): those are `DexPool`s, the `keep` largest by TVL. The answer is big (~10 MB): its
  provider entry allows it (`max_response_bytes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import DexPool, DexVolume, chain_name
from gateway.sources.chain_stats import fetch_parsed, payload_fail, stat_value
from gateway.upstream.client import UpstreamClient

__all__ = [
    "POOLS_ENDPOINT",
    "VOLUME_PARAMS",
    "fetch_pools",
    "fetch_volumes",
    "parse_pools",
    "parse_volumes",
]

VOLUME_PARAMS: Final = {
    "excludeTotalDataChart": "true",
    "excludeTotalDataChartBreakdown": "true",
}
POOLS_ENDPOINT: Final = "/pools"
KEEP_POOLS: Final = 500


def parse_volumes(
    payload: Any, observed_at: datetime, *, provider: str = "defillama-dexs"
) -> list[DexVolume]:
    fail = payload_fail(provider, "/overview/dexs")
    protocols = payload.get("protocols") if isinstance(payload, dict) else None
    if not isinstance(protocols, list):
        raise fail("expected an object with a 'protocols' array")
    volumes: list[DexVolume] = []
    for index, item in enumerate(protocols):
        if not isinstance(item, dict):
            raise fail(f"protocol {index}: expected an object")
        name = item.get("displayName") or item.get("name")
        if not isinstance(name, str) or not name:
            raise fail(f"protocol {index}: no name")
        slug = item.get("slug")
        dex = slug if isinstance(slug, str) and slug else name.lower().replace(" ", "-")
        chains = item.get("chains") or []
        if not isinstance(chains, list) or not all(isinstance(c, str) for c in chains):
            raise fail(f"{dex}: chains must be an array of strings")
        volumes.append(
            DexVolume(
                dex=dex,
                name=name,
                chains=tuple(chain_name(c) for c in chains),
                volume_24h_usd=stat_value(item.get("total24h"), f"{dex} total24h", fail),
                change_1d_pct=stat_value(item.get("change_1d"), f"{dex} change_1d", fail),
                provider=provider,
                observed_at=observed_at,
            )
        )
    return volumes


def parse_pools(
    payload: Any,
    observed_at: datetime,
    *,
    provider: str = "defillama-yields",
    keep: int = KEEP_POOLS,
) -> list[DexPool]:
    fail = payload_fail(provider, POOLS_ENDPOINT)
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise fail("expected an object with a 'data' array")
    pools: list[DexPool] = []
    for index, item in enumerate(rows):
        if not isinstance(item, dict):
            raise fail(f"pool {index}: expected an object")
        volume = stat_value(item.get("volumeUsd1d"), f"pool {index} volumeUsd1d", fail)
        if volume is None:
            continue  # not a DEX pool (a lending market, a vault)
        pool_id, chain = item.get("pool"), item.get("chain")
        project, symbol = item.get("project"), item.get("symbol")
        if not all(isinstance(v, str) and v for v in (pool_id, chain, project, symbol)):
            raise fail(f"pool {index}: pool, chain, project and symbol must be strings")
        pools.append(
            DexPool(
                chain=chain_name(str(chain)),
                dex=str(project),
                pair=str(symbol),
                pool_id=str(pool_id),
                tvl_usd=stat_value(item.get("tvlUsd"), f"pool {pool_id} tvlUsd", fail),
                volume_24h_usd=volume,
                provider=provider,
                observed_at=observed_at,
            )
        )
    pools.sort(key=lambda p: -(p.tvl_usd or 0.0))
    return pools[:keep]


async def fetch_volumes(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[DexVolume]:
    provider_id = provider.id
    volumes: list[DexVolume] = await fetch_parsed(
        client,
        provider,
        "",
        lambda p: parse_volumes(p, utc_now(), provider=provider_id),
        key=key,
        params=VOLUME_PARAMS,
    )
    return volumes


async def fetch_pools(
    client: UpstreamClient, provider: ProviderConfig, key: str | None
) -> list[DexPool]:
    provider_id = provider.id
    pools: list[DexPool] = await fetch_parsed(
        client,
        provider,
        POOLS_ENDPOINT,
        lambda p: parse_pools(p, utc_now(), provider=provider_id),
        key=key,
    )
    return pools
