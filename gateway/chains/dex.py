"""DEX analytics and DeFi TVL: which provider gives what, and the rounds that store it.

* DEX volumes: DefiLlama `/overview/dexs` (free) -> `DexStore.replace_volumes`.
* DEX pools: DefiLlama's yields `/pools` (free; the pools with a 24 h volume), The Graph's
  Uniswap v3 subgraph and Covalent's xy=k pools (keyed) -> `DexStore.replace_pools`, each
  provider's latest snapshot; `dexPools` serves them largest TVL first.
* TVL, daily: DefiLlama `/v2/historicalChainTvl` (the total, scope "all") and `/protocols`
  (each protocol's TVL today) -> `TvlStore`, so `tvlHistory` has a history of its own that
  outlives an upstream outage and a restart (`gateway.market.answers` falls back to it).

Must never mix providers' figures into one record or store a figure nobody gave.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from gateway.config import ProviderConfig
from gateway.models import utc_now
from gateway.onchain_models import DexPool
from gateway.sources import covalent, defillama, defillama_dexs, thegraph
from gateway.storage import DexStore, TvlStore
from gateway.upstream import UpstreamClient

__all__ = [
    "POOL_READERS",
    "TVL_SCOPE_ALL",
    "VOLUME_READERS",
    "collect_pools",
    "collect_tvl",
    "collect_volumes",
]

PoolReader = Callable[[UpstreamClient, ProviderConfig, str | None], Awaitable[list[DexPool]]]

POOL_READERS: Final[Mapping[str, PoolReader]] = {
    "defillama-yields": defillama_dexs.fetch_pools,
    "thegraph": thegraph.fetch_pools,
    "covalent": covalent.fetch_pools,
}
VOLUME_READERS: Final = frozenset({"defillama-dexs"})
TVL_SCOPE_ALL: Final = "all"


async def collect_pools(
    client: UpstreamClient,
    provider: ProviderConfig,
    key: str | None,
    store: DexStore,
    reader: PoolReader,
) -> int:
    """One round: the provider's pools replace its previous snapshot; returns how many."""
    pools = await reader(client, provider, key)
    await store.replace_pools(provider.id, pools)
    return len(pools)


async def collect_volumes(
    client: UpstreamClient, provider: ProviderConfig, key: str | None, store: DexStore
) -> int:
    volumes = await defillama_dexs.fetch_volumes(client, provider, key)
    await store.replace_volumes(provider.id, volumes)
    return len(volumes)


async def collect_tvl(
    client: UpstreamClient, provider: ProviderConfig, key: str | None, store: TvlStore
) -> int:
    """One round: the daily total TVL series and today's protocol TVLs; returns the days."""
    points = await defillama.fetch_chain_tvl(client, provider, key=key)
    fetched = utc_now()
    await store.add_series(TVL_SCOPE_ALL, points, provider.id, fetched)
    protocols = await defillama.fetch_protocols(client, provider, key=key)
    await store.add_protocols(fetched, protocols, provider.id)
    return len(points)
